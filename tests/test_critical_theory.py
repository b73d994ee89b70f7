"""The loss-catapult onset c_loss against the exact one-step theory of the pure
quadratic model on one data point (docs/theory.md §6, docs/phases.md).

On toy data (x, y) = (1, 0) the output is z = (zeta/2) theta^T psi theta and one
gradient step theta' = theta - eta z zeta psi theta gives exactly

    z_1 / z_0 = 1 - c + c^2 delta,   delta = z_0 zeta^3 (theta^T psi^3 theta) / (2 H_0^2)

with c = eta H_0 (H_0 = zeta^2 theta^T psi^2 theta is the 1x1 NTK, eq. 4).  The lazy
update z_1 = (1 - c) z_0 is the delta -> 0 limit, whose loss rises iff c > 2.  The
loss rises at step 1 iff |z_1| > |z_0|, i.e. above the root c_1 = (1 - sqrt(1 - 8
delta)) / (2 delta) = 2 + 4 delta + O(delta^2) of c - 1 - c^2 delta = 1; so c_loss
measured on step 1 alone (``early_window = 1``) is the first grid point above c_1,
and c_loss -> 2 as delta -> 0.  Over a longer window the loss can first rise at a
later step, so the usual c_loss lies at or below that grid point.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from phasekit.analysis.boundary import find_boundary
from phasekit.analysis.phases import critical_rates
from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine
from phasekit.runner.execute import execute

GRID = [round(1.9 + 0.001 * i, 6) for i in range(201)]          # 1.900 .. 2.100


def one_point(width, low, high, seed, **sweep):
    return {"model": {"name": "quadratic", "width": width, "eigen_low": low,
                      "eigen_high": high},
            "dataset": {"name": "toy"},
            "sweep": {"seeds": [seed], **sweep}}


def step_one_threshold(config, data, manager, seed) -> tuple[float, float]:
    """``(delta, c_1)`` of the module docstring, from the model's own initialisation
    (trained in psi's eigenbasis: psi = diag(lam), theta = u)."""
    engine = Engine(config, data, manager)
    feats, u = engine.model.setup(seed, engine.device, engine.dtype)
    assert feats.diagonal, "one training point: the eigenbasis path"
    lam, zeta = feats.psi["train"][0], feats.zeta
    z0 = zeta / 2 * (lam * u * u).sum()
    H0 = zeta ** 2 * (lam ** 2 * u * u).sum()
    delta = float(z0 * zeta ** 3 * (lam ** 3 * u * u).sum() / (2 * H0 * H0))
    # (1 - sqrt(1 - 8 delta)) / (2 delta), written without its cancellation for small delta
    c1 = 4.0 / (1.0 + math.sqrt(1 - 8 * delta))
    return delta, c1


@given(width=st.integers(50, 500).map(lambda k: 2 * k), low=st.floats(0.5, 1.5),
       spread=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
@example(width=388, low=0.5, spread=1.0, seed=6473)   # rises first at step 2, below c_1
def test_c_loss_is_two_up_to_the_exact_one_step_correction(manager, width, low, spread, seed):
    raw = one_point(width, low, low + spread, seed, eta_lambda0=GRID, max_steps=10, tol=0.0,
                    observables=[])
    config, data = resolve_config(raw, manager)
    delta, c1 = step_one_threshold(config, data, manager, seed)
    ds = execute(config, data, manager)
    # The theory is of step 1: the onset measured on step 1 alone is its grid image.
    step1 = critical_rates(ds, early_window=1)
    c_loss, below = float(step1.c_loss.values[0]), float(step1.c_loss_below.values[0])
    if c1 <= GRID[-1]:
        assert below < c1 <= c_loss, (delta, c1, below, c_loss)  # the first grid point above
        assert c_loss - below <= 0.001 + 1e-12
    else:              # a narrow net with a large |z_0| (delta ~ z_0^2 / 2n): beyond the grid
        assert math.isnan(c_loss), (delta, c1, below, c_loss)    # no rate of it rises
    # Over the usual window of 10 steps the loss may first rise at a later step, and so
    # below c_1 (the example: at c = 1.999 < c_1 = 1.99907 the loss falls at step 1 and
    # rises above L_0 at step 2), never at a larger c than on step 1 alone.
    window = float(critical_rates(ds).c_loss.values[0])
    assert window <= c_loss or math.isnan(c_loss), (delta, c1, window, c_loss)
    assert abs(c1 - 2 - 4 * delta) <= 20 * delta ** 2 + 1e-12    # c_1 = 2 + 4 delta + O(delta^2)


@pytest.mark.slow
def test_bisection_finds_the_same_onset_to_its_tolerance(manager):
    """``phasekit boundary`` bisects c_loss with runs of early_window steps; over a
    width axis every cell's bracket holds c_1, and c_loss -> 2 as the width grows."""
    widths = [100, 1600]
    # Whole runs of 60 steps keep the c_max search cheap; c_loss needs only 10 steps.
    raw = one_point(1000, 1.0, 2.0, 0, eta_lambda0=[1.5, 2.5], max_steps=60)
    raw["sweep"]["seeds"] = [0, 1]
    raw["sweep"]["axes"] = {"model.width": widths}
    ds = find_boundary(raw, manager, tol=1e-3)
    config, _ = resolve_config(raw, manager)
    for p in config.points:
        w = p.values["model.width"]
        for si, seed in enumerate(config.sweep["seeds"]):
            _, c1 = step_one_threshold(p.config, p.data, manager, seed)
            c_loss = float(ds.c_loss.sel(width=w).values[si])
            below = float(ds.c_loss_below.sel(width=w).values[si])
            assert below < c1 <= c_loss and c_loss - below <= 1e-3
    spread = np.abs(ds.c_loss - 2).max("seed").values
    assert spread[-1] < spread[0]                          # closer to 2 at larger width
