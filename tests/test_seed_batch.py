"""Runs sharing a batch against the same runs trained alone.

A batch holds several seeds' chunks (``sweep.seed_batch``) and a chunk's learning
rates, and shrinks as runs stop; no BLAS promises that a row comes out the same in a
batch as alone.  The contract (``phasekit.engine.batched``, docs/scale.md): trajectories
agree within the bound measured for a whole run, and statuses, phases and critical
rates agree exactly except where the value that decides them lies within that bound of
its threshold -- such cells are printed and recorded (``record_property``), never
hidden.  Bitwise equality holds where the batches are the same by construction: a
resumed sweep against an uninterrupted one.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import xarray as xr

from phasekit.analysis.phases import DEFAULT_CATAPULT_FACTOR, classify, critical_rates
from phasekit.config.resolve import resolve_config
from phasekit.engine.batched import BATCH_GROWTH, BATCH_RTOL, run_rtol
from phasekit.engine.engine import Engine
from phasekit.engine.points import PointEngines
from phasekit.io.parts import chunk_key
from phasekit.runner.execute import execute

from .helpers import killed_run

# run under each ATEN_CPU_CAPABILITY by tox's kernels-* envs (pytest -m kernels)
pytestmark = pytest.mark.kernels

GRID = {"start": 0.5, "stop": 4.5, "num": 9}

#: one stacking configuration per model family (small, fast)
CASES = {
    "linear_bias": ({"name": "linear_bias", "width": 32},
                    {"name": "random", "num_train": 6, "input_dim": 3}),
    "quadratic": ({"name": "quadratic", "width": 200, "eigen_low": 1.0, "eigen_high": 2.0},
                  {"name": "toy", "x": [1.0], "y": 0.0}),
    "uv_toy": ({"name": "homogeneous", "width": 64, "a_plus": 1.0, "a_minus": 1.0},
               {"name": "toy", "x": [1.0], "y": 0.0}),
    # D < d: input-span coordinates, with a per-seed U_0perp x on the test split
    "relu_span": ({"name": "relu", "width": 48},
                  {"name": "random", "num_train": 5, "num_test": 7, "input_dim": 9}),
    "deep_relu": ({"name": "deep_relu", "width": 24, "hidden_layers": 2},
                  {"name": "random", "num_train": 6, "num_test": 4, "input_dim": 3}),
}
#: families whose seeds keep batches of their own: only the learning rates share one
ALONE_SEEDS = {
    "quadratic_bias": ({"name": "quadratic_bias", "width": 40, "feature_width": 4},
                       {"name": "toy", "x": [1.0], "y": 0.0}),
    "quadratic_points": ({"name": "quadratic", "width": 30},
                         {"name": "random", "num_train": 4, "num_test": 3, "input_dim": 2}),
}


def config(manager, model, dataset, seed_batch, **sweep):
    raw = {"model": model, "dataset": dataset,
           "sweep": {"seeds": 3, "max_steps": 300, "eta_lambda0": GRID,
                     "seed_batch": seed_batch, **sweep}}
    return resolve_config(raw, manager)


def assert_bitwise(a: xr.Dataset, b: xr.Dataset) -> None:
    assert list(a.data_vars) == list(b.data_vars)
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


def batches_run(monkeypatch) -> list[list[str]]:
    """The chunk keys of every batch trained, in order."""
    seen = []
    original = Engine.run_batch

    def counting(self, batch, progress=None, **kw):
        seen.append([chunk_key(c) for c in batch])
        return original(self, batch, progress, **kw)

    monkeypatch.setattr(Engine, "run_batch", counting)
    return seen


# -- which decisions lie within the bound of their threshold ------------------------------

def trajectories(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """``loss``, ``sharpness``, ``weight_norm`` as (seed, c, step) arrays of a sweep
    recorded at every step, and ``rtol``: how far each may move at each step
    (:func:`phasekit.engine.batched.run_rtol`)."""
    step = ds["step"].values
    assert np.array_equal(step, np.arange(step.size)), "record every step"
    out = {name: ds[name].transpose("seed", "eta_lambda0", "step").values
           for name in ("loss", "sharpness", "weight_norm")}
    out["rtol"] = run_rtol(out["loss"], out["sharpness"])
    return out


def loss_bound(loss: np.ndarray, rtol: np.ndarray) -> np.ndarray:
    """How far a loss trajectory (..., step) may move, step by step: ``rtol sqrt(L_t
    max_(s<=t) L_s)`` (docs/scale.md: the residual z - y moves by rtol of its largest
    size so far, and L is its square)."""
    peak = np.fmax.accumulate(np.where(np.isfinite(loss), loss, np.nan), axis=-1)
    return rtol * np.sqrt(np.abs(loss) * peak)


def near_thresholds(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Per run ``(seed, eta_lambda0)`` of a sweep recorded at every step: whether the
    value deciding each outcome lies within the run's bound (:func:`trajectories`) of
    its threshold at some step the run made (sweep.py, phases.py):

    * ``status``: the loss within its bound of ``divergence_loss``, or the change
      ``|L_t - L_(t-1)|`` within the bounds of both losses of ``tol``; either can move
      the step a run stops at, and so its status;
    * ``phase``: the catapult criterion's peak ``max_(t>=1) L_t`` within the bounds of
      ``catapult_factor * L_0``;
    * ``loss_rose``: ``L_t`` within the bounds of ``(1 + loss_rise) L_0`` at a step of
      the early window (``c_loss``);
    * ``sharpness_fell``: the sharpness within its bound of ``(1 - sharpness_drop)``
      times its step-0 value in the early window (``c_sharp``).

    A run at the edge of divergence, whose bound has grown past its values (the
    sharpness pinned near 4, ``run_rtol``), is near every threshold it meets.
    ``trivial`` (a dead network) cannot be judged from the stored values: a test that
    meets it must say so.
    """
    sweep = tomllib.loads(ds.attrs["config"])["sweep"]
    tr = trajectories(ds)
    loss, sharp, rtol = tr["loss"], tr["sharpness"], tr["rtol"]
    step = ds["step"].values
    ran = step[None, None, :] <= ds["steps"].values[..., None]
    bound = loss_bound(loss, rtol)
    finite = np.isfinite(loss)
    diverge = finite & (np.abs(loss - sweep["divergence_loss"]) <= bound)
    change = np.abs(np.diff(loss, axis=-1))
    converge = finite[..., 1:] & finite[..., :-1] & \
        (np.abs(change - sweep["tol"]) <= bound[..., 1:] + bound[..., :-1])
    status = (diverge & ran).any(-1) | (converge & ran[..., 1:]).any(-1)

    L0, b0 = loss[..., :1], bound[..., :1]
    later = np.where(ran & finite, loss, -np.inf)[..., 1:]
    top = later.argmax(-1)[..., None] + 1
    peak = np.take_along_axis(loss, top, -1)
    factor = DEFAULT_CATAPULT_FACTOR
    phase = (np.abs(peak - factor * L0)
             <= np.take_along_axis(bound, top, -1) + factor * b0)[..., 0]

    window = ran & (step >= 1) & (step <= sweep["early_window"])
    rise = 1 + sweep["loss_rise"]
    loss_rose = (window & (np.abs(loss - rise * L0) <= bound + rise * b0)).any(-1)
    drop = 1 - sweep["sharpness_drop"]
    S0 = sharp[..., :1]
    sharp_fell = (window & (np.abs(sharp - drop * S0)
                            <= rtol * np.abs(sharp) + drop * rtol[..., :1] * np.abs(S0))
                  ).any(-1)
    return {"status": status, "phase": phase, "loss_rose": loss_rose,
            "sharpness_fell": sharp_fell}


#: the decisions behind each critical rate (phasekit.analysis.phases.critical_rates)
DECIDED_BY = {"c_loss": ("status", "loss_rose"), "c_loss_below": ("status", "loss_rose"),
              "c_sharp": ("status", "sharpness_fell"),
              "c_sharp_below": ("status", "sharpness_fell"),
              "c_max": ("status",), "c_fail": ("status",), "c_trivial": ("status",),
              "c_trivial_below": ("status",)}


def assert_agree(alone: xr.Dataset, batched: xr.Dataset) -> list[str]:
    """``batched`` agrees with ``alone`` (module docstring); returns the decisions that
    lie within the bound of their threshold in either sweep, as text."""
    near = {k: a | b for (k, a), b in zip(near_thresholds(alone).items(),
                                          near_thresholds(batched).values(), strict=True)}
    seeds, cs = alone["seed"].values, alone["eta_lambda0"].values
    marginal = [f"seed {seeds[i]}, c = {cs[j]:g}: {k} ({alone.status.values[i, j]} after "
                f"{alone.steps.values[i, j]} steps alone, {batched.status.values[i, j]} after "
                f"{batched.steps.values[i, j]} in the batch)"
                for k, m in near.items() for i, j in zip(*np.nonzero(m), strict=True)]
    sure = ~near["status"]
    for name in ("status", "steps"):
        a, b = alone[name].values, batched[name].values
        assert np.array_equal(a[sure], b[sure]), (name, np.argwhere((a != b) & sure))
    assert not ("trivial" in alone.status.values) ^ ("trivial" in batched.status.values), \
        "a run ends trivial in one sweep only: is_trivial's margin cannot be judged here"
    pa, pb = classify(alone).values, classify(batched).values
    sure_phase = sure & ~near["phase"]
    assert np.array_equal(pa[sure_phase], pb[sure_phase]), np.argwhere((pa != pb) & sure_phase)
    ca, cb = critical_rates(alone), critical_rates(batched)
    for name, deciding in DECIDED_BY.items():
        seed_sure = ~np.any([near[k] for k in deciding], axis=(0, 2))
        a, b = ca[name].values, cb[name].values
        assert np.array_equal(a[seed_sure], b[seed_sure], equal_nan=True), (name, a, b)
    # the trajectories of the runs whose stop is sure, within the run bound, while the
    # loss is below the divergence threshold
    limit = tomllib.loads(alone.attrs["config"])["sweep"]["divergence_loss"]
    one, two = xr.align(alone, batched, join="inner")
    ta, tb = trajectories(one), trajectories(two)
    rtol = np.fmax(ta["rtol"], tb["rtol"])
    live = sure[..., None] & (one["step"].values <= one["steps"].values[..., None]) \
        & np.isfinite(ta["loss"]) & (ta["loss"] <= limit)
    for name in ("loss", "sharpness", "weight_norm"):
        a, b = ta[name], tb[name]
        allowed = loss_bound(a, rtol) if name == "loss" else rtol * np.abs(a)
        bad = live & ~(np.abs(a - b) <= allowed)
        assert not bad.any(), (name, np.argwhere(bad)[:5])
    # lambda_0 and the bounds: each seed prepared alone in both, the same bits
    for name in [v for v in alone.data_vars if v == "lambda0" or v.startswith("bound_")]:
        assert np.array_equal(alone[name].values, batched[name].values), name
    return marginal


def report(record_property, label: str, marginal: list[str]) -> None:
    """Print and record the cells whose decisions lie within the bound of a threshold."""
    record_property("near_threshold", "; ".join(marginal) or "none")
    print(f"{label}: {len(marginal)} decision(s) within the bound of a threshold"
          + "".join(f"\n  {m}" for m in marginal))


@pytest.mark.kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", list(CASES) + list(ALONE_SEEDS))
def test_runs_in_a_batch_agree_with_runs_alone(manager, monkeypatch, record_property, case,
                                               threads):
    """Every run alone (one seed, one rate per batch) against the default batching (all
    seeds, where the model stacks them, and all rates in one batch that shrinks)."""
    model, dataset = {**CASES, **ALONE_SEEDS}[case]
    kw = {"threads": threads, "seeds": 2, "max_steps": 200, "record_dense": 201,
          "observables": []}
    alone = execute(*config(manager, model, dataset, 1, chunk_size=1, **kw), manager)
    seen = batches_run(monkeypatch)
    batched = execute(*config(manager, model, dataset, 0, **kw), manager)
    assert [len(b) for b in seen] == ([2] if case in CASES else [1, 1])
    steps = batched["steps"].values
    assert len(np.unique(steps)) >= 3, steps          # runs leave the batch at different steps
    report(record_property, f"{case}, {threads} thread(s)", assert_agree(alone, batched))


def test_near_thresholds_finds_the_marginal_decisions(manager):
    """The margins of ``near_thresholds`` on a real sweep, moved onto their thresholds."""
    model, dataset = CASES["quadratic"]
    ds = execute(*config(manager, model, dataset, 0, record_dense=301), manager)
    assert not any(m.any() for m in near_thresholds(ds).values())
    sweep = tomllib.loads(ds.attrs["config"])["sweep"]
    i, j = np.argwhere(ds["status"].values == "converged")[0]
    t = int(ds["steps"].values[i, j])
    tr = trajectories(ds)
    bound = loss_bound(tr["loss"], tr["rtol"])[i, j]

    def near(name="loss", at=(), value=0.0):
        values = ds[name].values.copy()
        values[(i, j, *at)] = value
        return near_thresholds(ds.assign({name: (ds[name].dims, values)}))

    loss = ds["loss"].values[i, j]
    moved = near(at=(t,), value=loss[t - 1] - sweep["tol"] + 0.5 * bound[t])
    assert moved["status"][i, j] and moved["status"].sum() == 1       # |dL| within of tol
    assert not near(at=(t,), value=loss[t - 1] - 0.5 * sweep["tol"])["status"].any()
    moved = near(at=(1,), value=DEFAULT_CATAPULT_FACTOR * loss[0] + 0.1 * bound[0])
    assert moved["phase"][i, j] and not moved["loss_rose"][i, j]      # a peak at 2 L_0
    moved = near(at=(1,), value=loss[0] * (1 + 1e-12))
    assert moved["loss_rose"][i, j] and not moved["phase"][i, j]      # L_1 at L_0
    moved = near(at=(2,), value=sweep["divergence_loss"] * (1 - 1e-12))
    assert moved["status"][i, j]                                       # at divergence_loss
    S = ds["sharpness"].values[i, j]
    moved = near("sharpness", (3,), (1 - sweep["sharpness_drop"]) * S[0] * (1 + 1e-12))
    assert moved["sharpness_fell"][i, j] and moved["sharpness_fell"].sum() == 1


def test_run_bound_grows_only_where_the_run_stretches_differences_alone():
    """run_rtol: flat where eta lambda < 2; a divergence whose loss grows with the
    stretch keeps it flat; a sharpness pinned at 4 with a bounded loss (the edge of
    divergence, where the uv net wanders for tens of steps) grows it 3x a step."""
    floor = BATCH_GROWTH * BATCH_RTOL
    lazy = run_rtol(np.geomspace(1.0, 1e-8, 20), np.full(20, 1.5))
    np.testing.assert_allclose(lazy, floor)
    S = np.full(20, 3.0)                                  # |1 - S| = 2: the loss x4 a step
    np.testing.assert_allclose(run_rtol(4.0 ** np.arange(20), S), floor, rtol=1e-9)
    edge = run_rtol(np.tile([1.0, 3.0], 10), np.full(20, 4.0))
    np.testing.assert_allclose(edge[-1], floor * 3.0 ** 19 / np.sqrt(3.0), rtol=1e-9)


def test_seed_batch_caps_the_batch_and_chunk_size_splits_rates(manager, monkeypatch,
                                                               record_property):
    model, dataset = CASES["linear_bias"]
    seen = batches_run(monkeypatch)
    ds = execute(*config(manager, model, dataset, 2, chunk_size=4, record_dense=301), manager)
    # seeds {0, 1} then {2}; rates in chunks of 4, 4 and 1; a seed's chunks consecutive
    assert [len(b) for b in seen] == [2, 2, 2, 1, 1, 1]
    assert [b[0][-6:] for b in seen] == ["c00000", "c00004", "c00008"] * 2
    alone = execute(*config(manager, model, dataset, 1, chunk_size=1, record_dense=301),
                    manager)
    report(record_property, "seed_batch = 2, chunk_size = 4", assert_agree(alone, ds))


def test_a_model_that_cannot_stack_keeps_one_seed_per_batch(manager, monkeypatch):
    # the quadratic model on several training points holds a (D, n, n) psi per seed
    cfg, data = resolve_config({"model": {"name": "quadratic", "width": 20},
                                "dataset": {"name": "random", "num_train": 3},
                                "sweep": {"seeds": 3, "max_steps": 50,
                                          "eta_lambda0": [1.0, 2.0]}}, manager)
    engines = PointEngines(cfg, data, manager)
    assert not engines[0].model.can_stack_seeds()
    assert engines.seeds_per_batch(0) == 1
    with pytest.raises(ValueError, match="cannot stack seeds"):
        engines[0].run_batch(engines.chunks()[:2])


def test_batches_are_the_configs_whatever_is_left(manager):
    """Seed blocks come from the config (seed_batch = 2: seeds {0, 1} and {2}), not from
    the chunks given: with seed 0 done, seeds 1 and 2 still train apart."""
    model, dataset = CASES["linear_bias"]
    engines = PointEngines(*config(manager, model, dataset, 2), manager)
    chunks = engines.chunks()
    assert [[c.seed_index for c in b] for b in engines.batches(chunks)] == [[0, 1], [2]]
    left = [c for c in chunks if c.seed_index != 0]
    assert [[c.seed_index for c in b] for b in engines.batches(left)] == [[1], [2]]


@pytest.mark.kernels
@pytest.mark.parametrize("threads", [1, 2])
def test_resume_of_a_batched_sweep(manager, tmp_path, monkeypatch, threads):
    """A kill after seed 2's batch and seed 1's chunk of the batch {0, 1}: the resumed run
    trains {0, 1} whole again (seed 1's stored result is kept), never seed 0 alone, so
    every row is computed with the companions it had and the numbers agree to the bit."""
    model, dataset = CASES["linear_bias"]
    cfg, data = config(manager, model, dataset, 2, threads=threads)
    reference = execute(cfg, data, manager)
    out = tmp_path / "r.nc"
    store = killed_run(cfg, data, manager, out, lambda c: c.seed_index in (1, 2))
    assert len(store.chunk_files()) == 2
    seen = batches_run(monkeypatch)
    resumed = execute(cfg, data, manager, out)
    chunks = PointEngines(cfg, data, manager).chunks()
    assert seen == [[chunk_key(c) for c in chunks if c.seed_index in (0, 1)]]
    assert_bitwise(resumed, reference)


def test_memory_bounds_the_seeds_of_a_batch(manager):
    model, dataset = CASES["linear_bias"]
    cfg, data = config(manager, model, dataset, 0, memory_budget=1e-9)
    with pytest.raises(Exception, match="too small for even one run"):
        PointEngines(cfg, data, manager).seeds_per_batch(0)
    from phasekit.engine.memory import memory_estimate

    engines = PointEngines(*config(manager, model, dataset, 0), manager)
    fixed, per_point = memory_estimate(engines[0], engines.prepared(0, 0))
    per_seed = 9 * (per_point + fixed) + fixed
    cfg, data = config(manager, model, dataset, 0, memory_budget=2.5 * per_seed / 2 ** 30)
    assert PointEngines(cfg, data, manager).seeds_per_batch(0) == 2


def _probe_plugin():
    """Observables that read each row's theta_0 and lambda_0 and check their shapes."""
    import torch

    from phasekit import hookimpl
    from phasekit.observables import Observable

    def rows_lambda0(snap):
        G = snap.theta.shape[0]
        assert snap.theta0.shape == snap.theta.shape and snap.lambda0.shape == (G,)
        return snap.lambda0

    def rows_theta0_norm(snap):
        return torch.linalg.vector_norm(snap.theta0, dim=-1).square()

    class Probe:
        @hookimpl
        def phasekit_register_observables(self, register):
            register(Observable("probe_lambda0", "lambda_0 per row", rows_lambda0))
            register(Observable("probe_theta0_norm", "theta_0^2 per row", rows_theta0_norm))

    return Probe()


@pytest.mark.parametrize("seed_batch", [1, 0])
def test_observables_see_per_row_theta0_and_lambda0_however_seeds_are_batched(seed_batch):
    """Snapshot.theta0 is (G, P) and lambda0 (G,) whether a batch holds one seed or
    several, and each row sees its own seed's."""
    from phasekit.config.registry import PluginManager

    manager = PluginManager()
    manager.register(_probe_plugin(), name="probe")
    model, dataset = CASES["quadratic"]
    ds = execute(*config(manager, model, dataset, seed_batch, max_steps=20), manager)
    ran = ds["steps"].values >= 0
    assert ran.all()
    seen = ds["probe_lambda0"].values                      # (seed, c, step)
    expected = np.broadcast_to(ds["lambda0"].values[:, None, None], seen.shape)
    recorded = ~np.isnan(seen)
    assert recorded[:, :, 0].all()
    assert np.array_equal(seen[recorded], expected[recorded])
    norm = ds["probe_theta0_norm"].values
    np.testing.assert_allclose(norm[:, :, 0], ds["weight_norm"].values[:, :, 0], rtol=1e-14)
    assert np.array_equal(norm[recorded], np.broadcast_to(norm[:, :, :1], norm.shape)[recorded])
    assert len(set(ds["lambda0"].values.tolist())) == 3     # three seeds, three lambda_0
