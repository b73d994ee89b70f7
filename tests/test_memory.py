"""Chunking to sweep.memory_budget (phasekit.engine.memory)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

from phasekit.analysis.phases import add_critical
from phasekit.config.resolve import merge, resolve_config
from phasekit.engine.engine import Engine
from phasekit.engine.memory import GIB, memory_estimate, tensor_bytes
from phasekit.engine.points import PointEngines
from phasekit.errors import ConfigError
from phasekit.runner.execute import execute

RAW = {"model": {"name": "relu", "width": 64},
       "dataset": {"name": "random", "num_train": 16, "num_test": 8, "input_dim": 3},
       "sweep": {"eta_lambda0": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 20.0], "seeds": [0, 1],
                 "max_steps": 400, "tol": 1e-6}}


def chunk_sizes(config, manager) -> list[int]:
    engines = PointEngines(config, None, manager)
    return [engines.chunk_size(i) for i in range(len(engines))]


def estimate(raw, manager):
    config, data = resolve_config(raw, manager)
    engine = Engine(config, data, manager)
    return memory_estimate(engine, engine.prepare(config.sweep["seeds"][0]))


@pytest.mark.parametrize("model", [{"name": "relu", "width": 64},
                                   {"name": "quadratic", "width": 40}])
def test_budget_sets_the_chunk_size_and_changes_no_result(manager, model):
    raw = merge(RAW, {"model": model}) if model["name"] == "relu" else {**RAW, "model": model}
    fixed, per_point = estimate(raw, manager)
    assert fixed > 0 and per_point > 0
    budget = (fixed + 3.5 * per_point) / GIB
    config, data = resolve_config(merge(raw, {"sweep": {"memory_budget": budget}}), manager)
    assert chunk_sizes(config, manager) == [3]
    # the stored config resolves to itself, and cuts the same chunks (resume, Dask)
    again, _ = resolve_config(tomllib.loads(config.to_toml()), manager)
    assert again == config
    assert PointEngines(again, None, manager).chunks() == PointEngines(config, None,
                                                                       manager).chunks()
    chunked = execute(config, data, manager, derive=add_critical)
    whole = execute(*resolve_config(raw, manager), manager, derive=add_critical)
    np.testing.assert_array_equal(chunked.status.values, whole.status.values)
    assert {"converged", "diverged"} <= set(whole.status.values.ravel())
    for var in whole.data_vars:
        if whole[var].dtype.kind == "f":
            np.testing.assert_allclose(chunked[var].values, whole[var].values, rtol=1e-9,
                                       atol=1e-12, err_msg=var)


def test_budget_errors_name_the_keys(manager):
    fixed, per_point = estimate(RAW, manager)
    too_small, _ = resolve_config(merge(RAW, {"sweep": {"memory_budget": fixed / 2 / GIB}}),
                                  manager)       # resolution is pure data; sizing refuses
    with pytest.raises(ConfigError, match=r"sweep.memory_budget = .* too small .* per run"):
        chunk_sizes(too_small, manager)
    budget = (fixed + 3.5 * per_point) / GIB
    with pytest.raises(ConfigError, match=r"sweep.chunk_size = 8 does not fit .* at most 3"):
        chunk_sizes(resolve_config(merge(RAW, {"sweep": {"memory_budget": budget,
                                                         "chunk_size": 8}}), manager)[0],
                    manager)
    config, _ = resolve_config(merge(RAW, {"sweep": {"memory_budget": budget,
                                                     "chunk_size": 2}}), manager)
    assert chunk_sizes(config, manager) == [2]                 # an explicit size that fits
    config, _ = resolve_config(merge(RAW, {"sweep": {"memory_budget": 1.0}}), manager)
    assert chunk_sizes(config, manager) == [8]                 # everything fits


def test_budget_is_per_axis_point(manager):
    """A wide axis point gets smaller chunks than a narrow one under the same budget,
    and the error names the axis point that does not fit."""
    fixed, per_point = estimate(merge(RAW, {"model": {"width": 256}}), manager)
    budget = (fixed + 3.5 * per_point) / GIB
    raw = merge(RAW, {"sweep": {"memory_budget": budget,
                                "axes": {"model.width": [16, 256]}}})
    config, _ = resolve_config(raw, manager)
    small, wide = chunk_sizes(config, manager)
    assert wide == 3 and small > wide
    chunks = PointEngines(config, None, manager).chunks()
    assert sorted({len(c.c_values) for c in chunks if c.point == 1}) == [2, 3]
    raw["sweep"]["axes"]["model.width"] = [16, 4096]
    config, _ = resolve_config(raw, manager)
    with pytest.raises(ConfigError, match=r"too small .* at width = 4096"):
        chunk_sizes(config, manager)


@pytest.mark.parametrize("model", [{"name": "relu", "width": 48},
                                   {"name": "deep_relu", "width": 32, "hidden_layers": 2},
                                   {"name": "homogeneous", "width": 40, "input_span": True}])
def test_network_estimate_covers_the_tensors_of_a_step(manager, model):
    """The stated per-point peak is at least what one step keeps alive (training cache
    with backprop, NTK, a forward over the test split, theta) and not wildly more."""
    config, data = resolve_config({"model": model, "dataset": {
        "name": "random", "num_train": 12, "num_test": 30, "input_dim": 20}, "sweep": {}},
        manager)
    m = Engine(config, data, manager).model
    feats, theta0 = m.setup(0, torch.device("cpu"), torch.float64)
    theta = theta0[None].clone()
    _, cache = m.forward(feats, theta)
    ntk = m.ntk(feats, theta, cache)                          # adds the backprop g's to cache
    test = m.propagate(feats, theta, "test")
    measured = tensor_bytes(cache) + tensor_bytes(ntk) + tensor_bytes(test) \
        + tensor_bytes(theta)
    stated = m.memory_per_point(feats, theta0)
    assert measured <= stated <= 4 * measured
