"""Every preset's output is a CF-1.11 file that plain xarray, netCDF4 and cf_xarray read
without phasekit, and that the IOOS compliance checker passes without an error or a
warning: units, long names, the status flag variable (integer codes with
flag_meanings), numeric attributes, no fill values on coordinates, a history line per
write, and learning rates exact as written."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from phasekit.cli.main import main
from phasekit.config.registry import BUILTIN_DISTRIBUTION, get_plugin_manager
from phasekit.errors import DataError
from phasekit_plugins import images
from phasekit_plugins.images import FMNIST_SOURCE, locate

from .test_images import write_cifar, write_idx_set

#: every test here reads one tiny run of every preset (about a minute)
pytestmark = pytest.mark.slow

TINY = ["--set", "sweep.seeds=[0]", "--set", "sweep.eta_lambda0=[1.0, 3.0]",
        "--set", "sweep.max_steps=5"]
NETWORK_MODELS = ("homogeneous", "relu", "deep_relu", "linear_bias")
IMAGE_DATA = ("mnist", "fmnist", "cifar10")


def builtin_presets() -> dict:
    """phasekit's own presets (third-party ones installed here are not phasekit's to test)."""
    return {r.name: r.obj for r in get_plugin_manager().registrations("preset")
            if r.distribution == BUILTIN_DISTRIBUTION}

# Runs in a fresh interpreter that never imports phasekit: the checks a user of the file
# would make with xarray, netCDF4 and cf_xarray alone.  Prints one JSON report per file.
CHECK = r"""
import json, sys
import netCDF4
import numpy as np
import xarray as xr
import cf_xarray  # noqa: F401 - registers ds.cf

reports = {}
for path in sys.argv[1:]:
    ds = xr.open_dataset(path)
    nc = netCDF4.Dataset(path)
    status = ds["status"]
    flags = status.cf.flags
    report = {
        "Conventions": ds.attrs.get("Conventions"),
        "no_long_name": [str(n) for n, v in ds.variables.items() if not v.attrs.get("long_name")],
        "float_without_units": [str(n) for n, v in ds.variables.items()
                                if v.dtype.kind == "f" and v.attrs.get("units") != "1"],
        "units": {str(n): v.attrs.get("units") for n, v in ds.variables.items()},
        "coordinate_fill_values": [str(n) for n in ds.coords
                                   if "_FillValue" in nc[str(n)].ncattrs()],
        "status_is_flag": bool(status.cf.is_flag_variable),
        "status_dtype": str(status.dtype),
        "flag_values": status.attrs["flag_values"].tolist(),
        "flag_meanings": status.attrs["flag_meanings"],
        "status_values": sorted(set(np.unique(status.values).tolist())),
        "flags_match": all(bool(((status.cf == m) == (status == i)).all())
                           and bool((flags[m] == (status == i)).all())
                           for i, m in enumerate(status.attrs["flag_meanings"].split())),
        "isin_match": bool((status.cf.isin(["converged", "diverged"])
                            == status.isin([0, 1])).all()),
        "history": ds.attrs.get("history"),
        "numeric_attrs": {k: type(v).__name__ for k, v in ds.attrs.items()
                          if k.startswith("dataset_num") or k == "dataset_input_dim"},
        "axes": ds.attrs["axes"],
        "axis_keys": {d: ds[d].attrs.get("axis_key") for d in ds.attrs["axes"].split()},
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "exact_03": (bool(ds.sel(eta_lambda0=0.3)["eta_lambda0"] == 0.3)
                     if 0.3 in ds["eta_lambda0"].values.tolist() else None),
        "phasekit_imported": "phasekit" in sys.modules,
    }
    nc.close()
    ds.close()
    reports[path] = report
print(json.dumps(reports))
"""


def _image_data(folder) -> None:
    """Stand-ins where the real sets are absent (CIFAR-10 always here); MNIST presets fall
    back to Fashion-MNIST, the real one when Debian's dataset-fashion-mnist is installed."""
    write_cifar(folder / "cifar-10-batches-bin")
    try:
        locate(FMNIST_SOURCE, "")
    except DataError:
        write_idx_set(folder / "fashion-mnist", gz=True)


def _overrides(name: str, config: dict) -> list[str]:
    extra = []
    if config["model"]["name"] in NETWORK_MODELS:
        extra += ["--set", "model.width=16"]
    if config["dataset"]["name"] in IMAGE_DATA:
        extra += ["--set", "dataset.num_train=8", "--set", "dataset.max_test=16"]
    if name == "fig1":          # a grid whose values are exact as written
        extra += ["--set", "sweep.eta_lambda0={start=0.1, stop=1, num=10}"]
    return TINY + extra


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One tiny run of every preset, plus an axis sweep and a ReLU net with ``layer``."""
    folder = tmp_path_factory.mktemp("cf")
    data = folder / "data"
    _image_data(data)
    mp = pytest.MonkeyPatch()
    mp.setenv(images.ENV_DATA, str(data))
    runs = {name: ["--preset", name, *_overrides(name, preset.config)]
            for name, preset in builtin_presets().items()}
    runs["axes"] = ["--preset", "fig1", *TINY, "--axis", "model.width=[20, 40]"]
    runs["deep-axes"] = ["--preset", "fig15", *_overrides("fig15", {
        "model": {"name": "deep_relu"}, "dataset": {"name": "fmnist"}}),
        "--axis", "model.hidden_layers=[1, 2]"]
    paths = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # the MNIST -> Fashion-MNIST fallback
            for name, args in runs.items():
                paths[name] = folder / f"{name}.nc"
                assert main(["run", *args, "-q", "-o", str(paths[name])]) == 0, name
    finally:
        mp.undo()
    proc = subprocess.run([sys.executable, "-c", CHECK, *map(str, paths.values())],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    return {name: {**reports[str(path)], "path": path} for name, path in paths.items()}


def test_outside_tools_read_the_files_without_phasekit(outputs):
    """The checks run in an interpreter that never imports phasekit: plain xarray,
    cf_xarray and netCDF4 read every file (the import hook of ``import phasekit``
    plays no part)."""
    assert not any(r["phasekit_imported"] for r in outputs.values())


def test_conventions_long_names_units(outputs):
    for name, r in outputs.items():
        assert r["Conventions"] == "CF-1.11", name
        assert r["no_long_name"] == [], name
        assert r["float_without_units"] == [], name
        units = r["units"]
        assert units["steps"] == units["step"] == units["eta_lambda0"] == "1", name
        assert units["seed"] is None and units["status"] is None, name
        assert all(units[b] == "1" for b in units if b.startswith("bound_")), name


def test_no_fill_value_on_coordinates(outputs):
    for name, r in outputs.items():
        assert r["coordinate_fill_values"] == [], name


def test_status_is_a_flag_variable_cf_xarray_understands(outputs):
    for name, r in outputs.items():
        assert r["status_is_flag"], name
        assert r["flag_meanings"] == "converged diverged max_steps trivial pending"
        assert r["status_dtype"] == "int8" and r["flag_values"] == [0, 1, 2, 3, 4], name
        assert set(r["status_values"]) <= {0, 1, 2, 3, 4}, name
        assert r["flags_match"] and r["isin_match"], name


def test_numeric_attributes_are_numbers(outputs):
    for name, r in outputs.items():
        assert r["numeric_attrs"], name
        assert set(r["numeric_attrs"].values()) <= {"int", "int64", "float", "float64"}, (
            name, r["numeric_attrs"])


def test_learning_rates_are_exact_as_written(outputs):
    assert outputs["fig1"]["exact_03"] is True


def test_axes_and_extra_dims(outputs):
    axes = outputs["axes"]
    assert axes["axes"] == "width" and axes["axis_keys"] == {"width": "model.width"}
    assert axes["units"]["width"] == "1" and axes["units"]["model_zeta"] == "1"
    deep = outputs["deep-axes"]
    assert deep["axis_keys"] == {"hidden_layers": "model.hidden_layers"}
    assert deep["dims"]["layer"] == 3       # 2 and 3 hidden layers: padded to the union
    assert deep["units"]["layer"] is None              # a label, not a quantity


def test_history_names_the_command(outputs):
    for name, r in outputs.items():
        lines = r["history"].splitlines()
        assert len(lines) == 1 and " phasekit " in lines[0], name
        assert lines[0].endswith(("phasekit run", "(pytest)", "(__main__.py)")) or \
            "phasekit Python API" in lines[0], (name, lines)


def _compliance(paths) -> dict:
    """The IOOS compliance checker at the strictest CF version it knows, on ``paths``:
    per file, the points it withheld and the checks that raised inside the checker."""
    pytest.importorskip("compliance_checker")
    from compliance_checker.runner import CheckSuite

    suite = CheckSuite()
    suite.load_all_available_checkers()
    strictest = max((k for k in suite.checkers if k.startswith("cf:1.")),
                    key=lambda k: tuple(int(x) for x in k[3:].split(".")))
    found = {}
    for path in paths:
        ds = suite.load_dataset(str(path))
        results, errors = suite.run_all(ds, [strictest], skip_checks=[])[strictest]
        groups = suite.build_structure(strictest, results, str(path), 1)   # 1: strict
        found[str(path)] = {
            "checker": strictest,
            "points": (groups["scored_points"], groups["possible_points"]),
            "missed": [(r.name, r.msgs) for r in groups["all_priorities"]
                       if r.value[0] < r.value[1]],
            "errors": {str(k): str(v) for k, v in errors.items()},
        }
        ds.close()
    return found


def test_the_compliance_checker_passes_every_output(outputs, tmp_path):
    """Every preset's output, an analysed copy (``analyze --in-place`` rewrites the file)
    and a boundary search's file: no error, no warning, no check that crashed."""
    import shutil

    analysed = tmp_path / "analysed.nc"
    shutil.copy(outputs["fig2"]["path"], analysed)
    assert main(["analyze", str(analysed), "--in-place"]) == 0
    boundary = tmp_path / "boundary.nc"
    assert main(["boundary", "--preset", "fig1", "-q", "--set", "sweep.seeds=[0]",
                 "--set", "model.width=40", "--tol", "0.1", "-o", str(boundary)]) == 0
    paths = [r["path"] for r in outputs.values()] + [analysed, boundary]
    for path, report in _compliance(paths).items():
        assert report["checker"] == "cf:1.11"
        assert report["missed"] == [] and report["errors"] == {}, (path, report)
        scored, possible = report["points"]
        assert scored == possible > 0, (path, report)
