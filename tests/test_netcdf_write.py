"""phasekit writes its netCDF files through xarray's netCDF4 store with an explicit lock
(``phasekit.io.netcdf._write_netcdf4``) rather than ``Dataset.to_netcdf``, which asks
dask for its scheduler and so imports dask.distributed wherever dask is installed
(docs/performance.md, start-up).  The file must be the one ``to_netcdf`` writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from phasekit.io.netcdf import _write_netcdf4


def _dataset() -> xr.Dataset:
    """Coordinates, strings, NaNs, integer flags and attributes of several types."""
    rng = np.random.default_rng(0)
    loss = rng.standard_normal((3, 4))
    loss[1, 2] = np.nan
    return xr.Dataset(
        {"loss": (("seed", "step"), loss, {"long_name": "loss", "units": "1"}),
         "status": (("seed",), np.array([0, 1, 2], dtype=np.int8),
                    {"flag_values": np.array([0, 1, 2], dtype=np.int8),
                     "flag_meanings": "converged diverged max_steps"}),
         "note": ((), "text")},
        coords={"seed": [0, 1, 2], "step": np.array([0, 1, 10, 100])},
        attrs={"title": "t", "tol": 1e-6, "flags": np.array([1, 2])})


def test_bytes_equal_to_to_netcdf(tmp_path):
    ds = _dataset()
    ds.to_netcdf(tmp_path / "xarray.nc", engine="netcdf4")
    _write_netcdf4(ds, tmp_path / "phasekit.nc")
    assert (tmp_path / "xarray.nc").read_bytes() == (tmp_path / "phasekit.nc").read_bytes()


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                    reason="dask.distributed is not installed")
def test_writing_does_not_import_dask_distributed(tmp_path):
    code = ("import sys\n"
            "from phasekit.cli.main import main\n"
            f"rc = main(['run', '--preset', 'fig1', '--set', 'sweep.seeds=[0]', '-o', "
            f"{str(tmp_path / 'x.nc')!r}, '-q'])\n"
            "assert not rc, rc\n"
            "assert 'distributed' not in sys.modules, 'dask.distributed was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
