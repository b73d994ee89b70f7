"""Seeds batched together: the same numbers, to the bit, as one seed at a time."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from phasekit.analysis.phases import add_critical
from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine
from phasekit.engine.points import PointEngines
from phasekit.io.parts import PartStore, chunk_key
from phasekit.runner.execute import execute

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
    one = execute(*config(manager, model, dataset, 1), manager, derive=add_critical)
    seen = batches_run(monkeypatch)
    together = execute(*config(manager, model, dataset, 0), manager, derive=add_critical)
    assert [len(b) for b in seen] == [3]              # every seed in one batch
    steps = together["steps"].values
    assert len(np.unique(steps)) >= 3, steps          # runs leave the batch at different steps
    assert_bitwise(one, together)


def test_seed_batch_caps_the_batch_and_chunk_size_splits_rates(manager, monkeypatch):
    model, dataset = CASES["linear_bias"]
    seen = batches_run(monkeypatch)
    ds = execute(*config(manager, model, dataset, 2, chunk_size=4), manager, derive=add_critical)
    # seeds {0, 1} then {2}; rates in chunks of 4, 4 and 1; a seed's chunks consecutive
    assert [len(b) for b in seen] == [2, 2, 2, 1, 1, 1]
    assert [b[0][-6:] for b in seen] == ["c00000", "c00004", "c00008"] * 2
    seen.clear()
    monkeypatch.undo()
    assert_bitwise(ds, execute(*config(manager, model, dataset, 1), manager, derive=add_critical))


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
    reference = execute(cfg, data, manager, derive=add_critical)
    out = tmp_path / "r.nc"
    store = PartStore(out)
    store.open(cfg.to_toml())
    engines = PointEngines(cfg, data, manager)
    first = engines.chunks()[1]                         # seed 1's chunk
    store.save(engines[0].run_chunk(first))
    seen = batches_run(monkeypatch)
    resumed = execute(cfg, data, manager, out, derive=add_critical)
    assert seen == [[chunk_key(c) for c in engines.chunks() if c.seed_index != 1]]
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
