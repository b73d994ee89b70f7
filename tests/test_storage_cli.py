"""Storage schema, netCDF round trip and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import xarray as xr

from phasekit.cli.main import main
from phasekit.errors import SweepFileError
from phasekit.io.netcdf import open_sweep, write_sweep

from .helpers import stored, sweep, toy_quadratic

SMALL = ["--set", "model.width=40", "--set", "sweep.eta_lambda0=[0.5, 2.5, 6.0]",
         "--set", "sweep.seeds=2", "--set", "sweep.max_steps=3000"]


@pytest.fixture(scope="module")
def small_sweep():
    return sweep(toy_quadratic(40, 1.0, 2.0), eta_lambda0=[0.5, 2.5, 6.0], seeds=[0, 1],
                 max_steps=3000)


def test_schema(small_sweep):
    ds = small_sweep
    assert set(ds.dims) == {"seed", "eta_lambda0", "step"}
    grid = ("seed", "eta_lambda0")
    assert ds.eta.dims == grid and ds.lambda0.dims == ("seed",)
    for v in ("loss", "weight_norm", "sharpness"):
        assert ds[v].dims == grid + ("step",)
        assert ds[f"final_{v}"].dims == grid
    assert ds.steps.dims == grid and ds.status.dims == grid
    assert set(np.unique(ds.status.values)) <= {"converged", "diverged", "max_steps"}
    for word in ("converged", "diverged", "max_steps"):
        assert word in ds.status.attrs["description"]
    for name, var in ds.variables.items():
        if name not in ("seed", "eta_lambda0", "step"):
            assert var.attrs.get("long_name"), name
    assert ds.loss.attrs["equation"] and ds.bound_eq60.attrs["equation"] == "eq. 60"
    assert ds.bound_eq60.dims == ("seed",)
    config = tomllib.loads(ds.attrs["config"])
    assert config["model"]["name"] == ds.attrs["model"] == "quadratic"
    assert ds.attrs["dataset"] == "toy"
    assert ds.attrs["phasekit_version"] and ds.attrs["torch_version"]


def test_netcdf_round_trip(tmp_path, small_sweep):
    path = write_sweep(small_sweep, tmp_path / "s.nc")
    xr.testing.assert_identical(stored(path), small_sweep)
    assert not [p for p in tmp_path.iterdir() if p.name != "s.nc"]  # no temporary left


def test_open_sweep_rejects_other_files(tmp_path):
    other = tmp_path / "other.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(other)
    with pytest.raises(SweepFileError, match="not a phasekit sweep"):
        open_sweep(other)
    text = tmp_path / "t.nc"
    text.write_text("hello")
    with pytest.raises(SweepFileError, match="not a netCDF file"):
        open_sweep(text)


def test_cli_run_writes_sweep_and_table(tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(["run", "--preset", "fig1", *SMALL, "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "eta_lambda0" in printed.out and "bound_eq60" in printed.out
    assert "done (" in printed.err and "running" in printed.err     # the progress bar
    ds = open_sweep(out)
    assert ds.sizes["seed"] == 2 and list(ds.eta_lambda0.values) == [0.5, 2.5, 6.0]
    assert ds.status.sel(eta_lambda0=6.0).values.tolist() == ["diverged", "diverged"]


def test_cli_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nname = "quadratic"\nwidth = 20\n[dataset]\nname = "toy"\n'
                   '[sweep]\neta_lambda0 = {start = 0.5, stop = 1.5, num = 3}\n')
    out = tmp_path / "c.nc"
    assert main(["run", str(cfg), "--set", "sweep.seeds=[4]", "-q", "-o", str(out)]) == 0
    ds = open_sweep(out)
    assert list(ds.seed.values) == [4] and list(ds.eta_lambda0.values) == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("args, message", [
    (["--set", "model.width=7"], "model.width must be even"),
    (["--set", "model.name=nope"], "unknown model 'nope'. Available:"),
    (["--set", "sweep.bogus=1"], "unknown key 'sweep.bogus'"),
    (["--preset", "fig99"], "unknown preset 'fig99'. Available:"),
    (["/no/such/config.toml"], "cannot read config file"),
    (["fig1"], "no config file fig1; fig1 is a preset: use --preset fig1"),
])
def test_cli_invalid_input_fails_before_work(tmp_path, capsys, args, message):
    out = tmp_path / "x.nc"
    assert main(["run", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_refuses_to_replace_a_different_sweep(tmp_path, capsys):
    out = tmp_path / "keep.nc"
    assert main(["run", "--preset", "fig1", *SMALL, "-q", "-o", str(out)]) == 0
    before = out.read_bytes()
    assert main(["run", "--preset", "fig1", *SMALL, "--set", "sweep.max_steps=10", "-q",
                 "-o", str(out)]) == 2
    assert "different config" in capsys.readouterr().err
    assert out.read_bytes() == before                                # results kept
    assert main(["run", "--preset", "fig1", *SMALL, "--set", "sweep.max_steps=10", "-q",
                 "--overwrite", "-o", str(out)]) == 0


def test_cli_plugins_and_presets(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind, name in [("model", "quadratic"), ("model", "quadratic_bias"), ("dataset", "toy"),
                       ("dataset", "random"), ("dataset", "teacher_student"),
                       ("observable", "test_loss"), ("preset", "fig1")]:
        assert any(line.split()[:3] == [kind, name, "phasekit"] for line in out.splitlines())
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "fig1", "fig4", "fig5", "fig6", "fig7"):
        assert name in out


@pytest.mark.slow
def test_console_script(tmp_path):
    """The installed ``phasekit`` command (a real subprocess)."""
    exe = os.path.join(os.path.dirname(sys.executable), "phasekit")
    out = tmp_path / "cli.nc"
    proc = subprocess.run([exe, "run", "--preset", "fig6", "--set",
                           "sweep.eta_lambda0=[1.0, 3.0]", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ds = xr.open_dataset(out)
    assert "bound_eq77" in ds and "bias_norm" in ds
    ds.close()


def test_plugins_options_lists_what_each_plugin_declares(capsys):
    """``phasekit plugins --options NAME`` prints every declared option of that model
    or dataset (and of [sweep]) with its type, default and help; an unknown name is
    one line with a suggestion."""
    from phasekit.config.registry import get_plugin_manager
    from phasekit.config.resolve import SWEEP_OPTIONS

    assert main(["plugins", "--options", "deep_relu", "point", "sweep"]) == 0
    out = capsys.readouterr().out
    manager = get_plugin_manager()
    for name in ("deep_relu", "point"):
        assert f'name = "{name}"' in out
        for key, opt in manager.get("model" if name == "deep_relu" else "dataset",
                                    name).options.items():
            assert f"  {key}" in out and opt.help in out
    assert all(f"  {key}" in out for key in SWEEP_OPTIONS)
    assert main(["plugins", "--options", "deep_rlu"]) == 2
    assert "did you mean 'deep_relu'?" in capsys.readouterr().err


def test_flags_are_codes_on_disk_and_words_in_phasekit(tmp_path):
    """status is stored as CF integer flags; phasekit's readers, and ds.phasekit on a
    plain xr.open_dataset, see the words again, identical to the dataset written."""
    ds = sweep(toy_quadratic(width=30, eta_lambda0=[0.5, 3.0, 9.0], seeds=[0, 1],
                             max_steps=400))
    path = write_sweep(ds, tmp_path / "s.nc")
    with xr.open_dataset(path) as plain:
        assert plain.status.dtype == np.int8
        assert plain.status.attrs["flag_meanings"].split()[plain.status.values[0, 0]] \
            == ds.status.values[0, 0]
        np.testing.assert_array_equal(plain.phasekit.phases().values,
                                      ds.phasekit.phases().values)
    back = open_sweep(path)
    np.testing.assert_array_equal(back.status.values, ds.status.values)
    assert back.status.attrs["flag_values"] == list(ds.status.attrs["flag_values"])
    assert back.attrs["history"].count("\n") == 0 and "phasekit" in back.attrs["history"]
