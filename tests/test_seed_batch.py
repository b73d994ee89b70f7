"""Seeds batched together: the same numbers, to the bit, as one seed at a time."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from phasekit.config import resolve_config
from phasekit.runner import PartStore, chunk_key, execute
from phasekit.sweep import Engine, PointEngines

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


@pytest.mark.parametrize("case", list(CASES))
def test_batched_seeds_equal_one_seed_at_a_time_bitwise(manager, monkeypatch, case):
    model, dataset = CASES[case]
    one = execute(*config(manager, model, dataset, 1), manager)
    seen = batches_run(monkeypatch)
    together = execute(*config(manager, model, dataset, 0), manager)
    assert [len(b) for b in seen] == [3]              # every seed in one batch
    steps = together["steps"].values
    assert len(np.unique(steps)) >= 3, steps          # runs leave the batch at different steps
    assert_bitwise(one, together)


def test_seed_batch_caps_the_batch_and_chunk_size_splits_rates(manager, monkeypatch):
    model, dataset = CASES["linear_bias"]
    seen = batches_run(monkeypatch)
    ds = execute(*config(manager, model, dataset, 2, chunk_size=4), manager)
    # seeds {0, 1} then {2}; rates in chunks of 4, 4 and 1; a seed's chunks consecutive
    assert [len(b) for b in seen] == [2, 2, 2, 1, 1, 1]
    assert [b[0][-6:] for b in seen] == ["c00000", "c00004", "c00008"] * 2
    seen.clear()
    monkeypatch.undo()
    assert_bitwise(ds, execute(*config(manager, model, dataset, 1), manager))


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


def test_resume_of_a_batched_sweep(manager, tmp_path, monkeypatch):
    """A crash after one seed's chunk: the rest is batched and the result is the same."""
    model, dataset = CASES["linear_bias"]
    cfg, data = config(manager, model, dataset, 0)
    reference = execute(cfg, data, manager)
    out = tmp_path / "r.nc"
    store = PartStore(out)
    store.open(cfg.to_toml())
    engines = PointEngines(cfg, data, manager)
    first = engines.chunks()[1]                         # seed 1's chunk
    store.save(engines[0].run_chunk(first))
    seen = batches_run(monkeypatch)
    resumed = execute(cfg, data, manager, out)
    assert seen == [[chunk_key(c) for c in engines.chunks() if c.seed_index != 1]]
    assert_bitwise(resumed, reference)


def test_memory_bounds_the_seeds_of_a_batch(manager):
    model, dataset = CASES["linear_bias"]
    cfg, data = config(manager, model, dataset, 0, memory_budget=1e-9)
    with pytest.raises(Exception, match="too small for even one run"):
        PointEngines(cfg, data, manager).seeds_per_batch(0)
    from phasekit.memory import memory_estimate

    engines = PointEngines(*config(manager, model, dataset, 0), manager)
    fixed, per_point = memory_estimate(engines[0], engines.prepared(0, 0))
    per_seed = 9 * (per_point + fixed) + fixed
    cfg, data = config(manager, model, dataset, 0, memory_budget=2.5 * per_seed / 2 ** 30)
    assert PointEngines(cfg, data, manager).seeds_per_batch(0) == 2
