"""Sweep axes: phase diagrams over model and dataset options (``[sweep.axes]``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
import xarray as xr

from phasekit.analysis.phases import add_critical
from phasekit.cli.main import main
from phasekit.config.resolve import build_config, merge, parse_set, resolve_config
from phasekit.errors import ConfigError
from phasekit.io.parts import PartStore
from phasekit.runner.execute import execute

from .helpers import killed_run, stored, toy_quadratic, unfinished_batches

EXE = os.path.join(os.path.dirname(sys.executable), "phasekit")

RATES = [0.5, 1.9, 2.1, 3.0, 4.5]


def quad(**sweep_kw):
    return merge(toy_quadratic(100, 1.0, 2.0),
                 {"sweep": {"eta_lambda0": RATES, "seeds": 2, "max_steps": 2000, **sweep_kw}})


def relu(**sweep_kw):
    return {"model": {"name": "deep_relu", "width": 24, "hidden_layers": 1},
            "dataset": {"name": "random", "num_train": 6, "num_test": 4, "input_dim": 3},
            "sweep": {"eta_lambda0": [0.5, 2.5, 6.0, 40.0], "seeds": [0, 3], "max_steps": 300,
                      "tol": 1e-6, **sweep_kw}}


def run(raw, manager, **kw):
    config, data = resolve_config(raw, manager)
    return execute(config, data, manager, **kw, derive=add_critical)


def assert_same_run(point: xr.Dataset, alone: xr.Dataset) -> None:
    """Every variable of a separately run sweep equals, to the bit, its slice of the axis
    sweep (whose step axis and extra dims may be longer: padded with NaN)."""
    point = point.sel(step=alone.step)
    for dim in alone.dims:
        if dim not in ("seed", "eta_lambda0", "step"):
            assert point[dim].size >= alone[dim].size
            point = point.sel({dim: alone[dim]})
    for name, var in alone.data_vars.items():
        mine = point[name].transpose(*var.dims).values
        if var.dtype.kind == "f":
            assert np.array_equal(mine, var.values, equal_nan=True), name
        else:
            assert (mine == var.values).all(), name


AXIS_CASES = [(quad, "model.width", [50, 100, 300]), (relu, "model.hidden_layers", [0, 1, 2]),
              (relu, "dataset.num_train", [4, 6])]


@pytest.mark.slow
@pytest.mark.parametrize("make, key, values, threads", [
    # under every kernel family (marked kernels) at 1 and 2 threads: a quadratic and a
    # network axis; the slowest case at 1 thread only
    *(pytest.param(*AXIS_CASES[k], threads, marks=pytest.mark.kernels)
      for k in (0, 2) for threads in (1, 2)),
    (*AXIS_CASES[1], 1),
])
def test_axis_sweep_equals_separate_sweeps_bitwise(manager, make, key, values, threads):
    """An axis point batches its runs as a separate sweep does (the same kernels on the
    same shapes), so the numbers are the same to the bit at equal threads, whatever the
    BLAS."""
    kind, option = key.split(".")
    ds = run(merge(make(threads=threads), {"sweep": {"axes": {key: values}}}), manager)
    assert ds.attrs["axes"] == option and ds[option].attrs["axis_key"] == key
    assert list(ds[option].values) == values
    assert ds.status.dims == (option, "seed", "eta_lambda0")
    assert ds.lambda0.dims == (option, "seed")
    for v in values:
        alone = run(merge(make(threads=threads), {kind: {option: v}}), manager)
        assert_same_run(ds.sel({option: v}).drop_vars(option), alone)


def test_depth_axis_pads_per_layer_observables_with_nan(manager):
    ds = run(merge(relu(), {"sweep": {"axes": {"model.hidden_layers": [0, 2]}}}), manager)
    sparsity = ds.final_sparsity
    assert "layer" in sparsity.dims and ds.layer.size == 3
    shallow = sparsity.sel(hidden_layers=0)
    assert shallow.isel(layer=slice(1, None)).isnull().all()
    assert shallow.isel(layer=0).notnull().any()
    assert sparsity.sel(hidden_layers=2).notnull().any("layer").all()


def test_two_axes_form_their_product_with_derived_options(manager):
    raw = merge(quad(), {"sweep": {"axes": {"model.width": [40, 80],
                                            "model.eigen_high": [1.5, 2]}}})
    config, _ = resolve_config(raw, manager)
    assert [p.values for p in config.points] == [
        {"model.width": w, "model.eigen_high": h} for w in (40, 80) for h in (1.5, 2.0)]
    ds = execute(config, None, manager, derive=add_critical)
    assert ds.status.dims == ("width", "eigen_high", "seed", "eta_lambda0")
    # zeta = sqrt(2 / width) is derived at every axis point, and stored per point
    np.testing.assert_allclose(ds.model_zeta.values, np.sqrt(2 / np.array([40, 80])))
    assert ds.model_zeta.dims == ("width",)
    alone = run(merge(quad(), {"model": {"width": 80, "eigen_high": 1.5}}), manager)
    assert_same_run(ds.sel(width=80, eigen_high=1.5).drop_vars(["width", "eigen_high"]),
                    alone)


def test_stored_config_re_resolves_to_itself(manager):
    raw = merge(quad(), {"sweep": {"axes": {"model.width": [40, 80.0]}}})
    config, _ = resolve_config(raw, manager)
    assert config.axes == {"model.width": [40, 80]}               # as the option reads them
    stored = config.to_toml()
    again, _ = resolve_config(tomllib.loads(stored), manager)
    assert again.to_toml() == stored
    assert [p.config for p in again.points] == [p.config for p in config.points]


def test_one_value_axis_equals_todays_dataset(manager):
    ds = run(merge(quad(), {"sweep": {"axes": {"model.width": [100]}}}), manager)
    today = run(quad(), manager)
    assert_same_run(ds.isel(width=0).drop_vars("width"), today)


def test_axis_from_the_command_line():
    short = build_config(None, preset="fig1", axes=["model.width=[64, 128]"])
    long = build_config(None, preset="fig1", overrides=['sweep.axes."model.width"=[64, 128]'])
    assert short == long
    assert short["sweep"]["axes"] == {"model.width": [64, 128]}
    assert parse_set("sweep.max_steps=5") == {"sweep": {"max_steps": 5}}


@pytest.mark.parametrize("axes, match", [
    ({"model.widht": [8]}, r"unknown key 'model.widht'.*Did you mean 'width'"),
    ({"model.width": []}, r'sweep.axes."model.width" must be a non-empty list'),
    ({"model.width": 64}, r'sweep.axes."model.width" must be a non-empty list'),
    ({"model.width": ["wide"]}, r'sweep.axes."model.width" value "wide": model.width must be '
                                r'an integer'),
    ({"model.width": [64, -2]}, r'sweep.axes."model.width" value -2: model.width must be'),
    ({"model.width": [3]}, r'value 3: model.width must be .*even'),
    ({"model.width": [64, 64]}, r"repeats a value"),
    ({"model.width": [[64]]}, r"must be a single value"),
    ({"model.name": ["relu"]}, r"plugin itself cannot be an axis"),
    ({"optimizer.lr": [1]}, r'"model.KEY" or "dataset.KEY"'),
    ({"dataset.x": [1, 2], "dataset.y": [0.5]}, None),
])
def test_bad_axes_are_one_clear_line_and_write_nothing(manager, capsys, tmp_path, axes,
                                                       match):
    raw = merge(quad(), {"sweep": {"axes": axes}})
    if match is None:     # a dataset axis that is fine on toy data, as a random dataset's
        raw = merge(relu(), {"sweep": {"axes": {"dataset.seed": [1, 2]}}})   # seed is not
        match = r"would become the dimension 'seed'"
    with pytest.raises(ConfigError, match=match):
        resolve_config(raw, manager)
    # The same through the command line: one line on stderr, exit 2, no file.
    path = tmp_path / "bad.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    out = tmp_path / "never.nc"
    assert main(["run", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phasekit: error: ") and err.count("\n") == 1, err
    assert not out.exists() and not PartStore(out).folder.exists()


def test_clash_of_two_axes_on_one_dimension(manager):
    raw = {"model": {"name": "quadratic", "width": 8}, "dataset": {"name": "random"},
           "sweep": {"axes": {"model.width": [8], "dataset.input_dim": [2]}}}
    resolve_config(raw, manager)                                   # distinct: fine
    clash = {"model": {"name": "quadratic_bias", "width": 8, "feature_width": 4},
             "dataset": {"name": "teacher_student"}}
    options = manager.get("dataset", "teacher_student").options
    shared = sorted(set(options) & set(manager.get("model", "quadratic_bias").options))
    assert shared, "teacher_student and quadratic_bias share an option name"
    key = shared[0]
    raw = merge(clash, {"sweep": {"axes": {f"model.{key}": [8],
                                           f"dataset.{key}": [8]}}})
    with pytest.raises(ConfigError, match=rf"would both become the dimension '{key}'"):
        resolve_config(raw, manager)


def test_resume_across_axes(manager, tmp_path):
    """Chunks of every axis point are saved as they finish; a rerun after a crash
    trains only the batches that miss a chunk (whole) and equals an uninterrupted run."""
    from phasekit.engine.engine import Engine
    from phasekit.engine.points import PointEngines
    from phasekit.io.parts import chunk_key

    raw = merge(quad(chunk_size=2), {"sweep": {"axes": {"model.width": [40, 80]}}})
    config, _ = resolve_config(raw, manager)
    reference = execute(config, None, manager, derive=add_critical)
    out = tmp_path / "axes.nc"
    chunks = PointEngines(config, None, manager).chunks()
    assert {c.point for c in chunks} == {0, 1}
    # two whole batches (seeds 0 and 1 of the first rates at each point) and seed 0's
    # chunk of an unfinished one, which the rerun trains again with seed 1's
    saved = {chunk_key(c) for c in chunks[::3] + chunks[1:2]}
    killed_run(config, None, manager, out, lambda c: chunk_key(c) in saved)
    calls = []
    original = Engine.run_batch

    def counting(self, batch, progress=None, **kw):
        calls.extend(chunk_key(chunk) for chunk in batch)
        return original(self, batch, progress, **kw)

    Engine.run_batch = counting
    try:
        resumed = execute(config, None, manager, out, derive=add_critical)
    finally:
        Engine.run_batch = original
    expected = unfinished_batches(config, None, manager, lambda c: chunk_key(c) in saved)
    assert chunk_key(chunks[1]) in expected and len(expected) == len(chunks) - 4
    assert calls == expected
    xr.testing.assert_identical(resumed, reference)
    xr.testing.assert_identical(stored(out), reference)


@pytest.mark.slow
def test_sigkill_of_an_axis_sweep_then_resume(tmp_path):
    args = ["run", "--preset", "fig1", "--set", "sweep.eta_lambda0=[0.5, 2.5, 3.5]",
            "--set", "sweep.seeds=2", "--set", "sweep.chunk_size=1", "--set", "sweep.tol=0.0",
            "--set", "sweep.max_steps=1500", "--axis", "model.width=[100, 200, 300]"]
    out = tmp_path / "killed.nc"
    parts = PartStore(out).folder
    proc = subprocess.Popen([EXE, *args, "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    count = 0
    while count < 4 and proc.poll() is None and time.time() < deadline:
        count = len(list(parts.glob("chunk-*.npz"))) if parts.exists() else 0
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    resumed = subprocess.run([EXE, *args, "-o", str(out)], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr
    whole = tmp_path / "whole.nc"
    subprocess.run([EXE, *args, "-q", "-o", str(whole)], check=True, timeout=300)
    xr.testing.assert_identical(stored(out), stored(whole))


@pytest.mark.slow
def test_dask_across_axes_equals_single_process(manager, tmp_path):
    pytest.importorskip("dask.distributed")
    raw = merge(relu(), {"sweep": {"axes": {"model.hidden_layers": [0, 1],
                                            "model.width": [16, 32]}}})
    single = run(raw, manager)
    out = tmp_path / "dask.nc"
    distributed = run(raw, manager, output=out, workers=2)
    xr.testing.assert_identical(distributed, single)
    xr.testing.assert_identical(stored(out), single)
