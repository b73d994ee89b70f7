"""The kb_depth_width preset (docs/phases.md, `kb_depth_width`) resolves, and its grid and
axes are those the docs describe: Kalra & Barkeshli's set-up over d/w = 1/256 to 1/8."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from phasekit.api import build_config
from phasekit.config.resolve import resolve_config


@pytest.fixture(scope="module")
def kb(manager):
    resolved, _ = resolve_config(build_config(preset="kb_depth_width", manager=manager),
                                 manager)
    return resolved


def test_kb_preset_is_he_standard_hessian_on_fmnist(kb):
    assert kb.model["name"] == "deep_relu"
    assert kb.model["weight_variance"] == 2.0
    assert kb.model["parameterization"] == "standard"
    assert kb.dataset["name"] == "fmnist"
    assert kb.sweep["normalize"] == "hessian"
    assert kb.sweep["batch_size"] == 0


def test_kb_preset_spans_d_over_w_from_1_256_to_1_8(kb):
    ratios = [(p.config.model["hidden_layers"] + 2) / p.config.model["width"]
              for p in kb.points]
    assert len(ratios) == len(kb.points) == 10
    assert min(ratios) <= 1 / 256 and max(ratios) >= 1 / 8


def test_kb_preset_grid_early_window_and_seeds(kb):
    sweep = kb.sweep
    assert len(sweep["seeds"]) >= 4
    assert sweep["early_window"] == 10 <= sweep["record_dense"]
    assert sweep["tol"] == 0.0 and sweep["max_steps"] > sweep["early_window"]
    grid = np.asarray(sweep["eta_lambda0"])
    fine = grid[grid <= 8.0]
    assert fine[0] <= 0.25 and fine[-1] == 8.0
    assert np.diff(fine).max() <= 0.25 + 1e-12
    # the two-layer nets first diverge at c = 96-192 (docs/phases.md): a geometric tail
    # of ratio <= 1.5 up to 512 brackets their seed-averaged c_max
    tail = grid[grid >= 20.0]
    assert tail[-1] >= 512 and (tail[1:] / tail[:-1]).max() <= 1.5


def test_kb_ingredients_change_one_option_at_a_time(manager):
    """docs/examples/kb_ingredients.py: every set-up but the last differs from eq. 193's
    in one option, the last in all four; and its rates come out of a real (tiny) sweep."""
    example = runpy.run_path(str(Path(__file__).parents[1] / "docs" / "examples"
                                 / "kb_ingredients.py"))
    setups = example["SETUPS"]
    assert setups[0][1] == {}
    singles = [options for _, options in setups[1:-1]]
    assert all(len(options) == 1 for options in singles)
    assert setups[-1][1] == {k: v for options in singles for k, v in options.items()}
    dataset = {"name": "random", "num_train": 32, "input_dim": 4}
    base = example["config"]({}, [(1, 8)], dataset, [1.0, 3.0])
    for options in singles:
        (key, value), = options.items()
        table, name = key.split(".")
        changed = example["config"](options, [(1, 8)], dataset, [1.0, 3.0])
        assert changed[table][name] == value and changed[table][name] != base[table].get(name)
        resolve_config(changed, manager)
    rates = example["averaged_rates"](setups[-1][1], [(1, 8)], dataset, [0.5, 1.5, 2.5, 6.0],
                                      seeds=2, max_steps=11)
    c_loss, c_sharp = rates[(1, 8)]
    assert c_loss in (1.5, 2.5, 6.0)          # the loss rises (or diverges) at c = 6 at the latest
    assert c_sharp in (0.5, 1.5, 2.5, 6.0) or np.isnan(c_sharp)
