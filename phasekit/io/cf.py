"""What makes a stored sweep a CF file that outside tools accept, applied once on the way
to disk (:func:`encode`) and undone on the way back (:func:`decode`).

- Flag variables (``status``, ``phase``, ``fail_status``): phasekit works with their
  values as strings; CF defines flags on integer variables, so they are stored as
  ``int8`` codes with ``flag_values = 0, 1, ...`` and ``flag_meanings`` naming each
  code.  :func:`decode` turns them back into strings, for :func:`phasekit.io.netcdf.
  open_sweep` and for a dataset opened with plain xarray and handed to ``ds.phasekit``;
  cf_xarray reads the codes directly (``ds.status.cf == "converged"``).
- Coordinates have no ``_FillValue`` (CF: coordinate values are never missing), whatever
  encoding a dataset read back from a file carries.
- ``Conventions`` names the CF version, and ``history`` gets one line per write: when,
  which phasekit, and the command that made or changed the file.
"""

from __future__ import annotations

import datetime
import shlex
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from phasekit import __version__

CONVENTIONS = "CF-1.11"


def _string_flags(var: xr.Variable) -> list[str] | None:
    values = var.attrs.get("flag_values")
    if values is None or var.dtype.kind not in "OUS":
        return None
    return [str(v) for v in np.atleast_1d(values)]


def encode(ds: xr.Dataset, command: str | None = None) -> xr.Dataset:
    """A copy of ``ds`` ready for netCDF (module docstring); ``command`` goes into the
    history line (default: the command line of this process)."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        meanings = _string_flags(var.variable)
        if meanings is None:
            continue
        lookup = {m: i for i, m in enumerate(meanings)}
        strings = var.values.astype(str)
        unknown = sorted(set(np.unique(strings)) - set(lookup))
        if unknown:
            raise ValueError(f"{name} holds {unknown}, which are not among its flag_values "
                             f"{meanings}")
        codes = np.vectorize(lookup.__getitem__, otypes=[np.int8])(strings) \
            if strings.size else strings.astype(np.int8)
        attrs = {**var.attrs, "flag_values": np.arange(len(meanings), dtype=np.int8),
                 "flag_meanings": " ".join(meanings)}
        out[name] = xr.Variable(var.dims, codes, attrs)
        out[name].encoding = {"_FillValue": None}
    for name in out.coords:
        out[name].encoding = {**out[name].encoding, "_FillValue": None}
    out.attrs["Conventions"] = CONVENTIONS
    line = history_line(command)
    old = str(ds.attrs.get("history", "")).rstrip("\n")
    out.attrs["history"] = f"{old}\n{line}" if old else line
    return out


def decode(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every integer flag variable turned back into strings (unchanged, the
    same object, when there is none)."""
    coded = [name for name, var in ds.data_vars.items()
             if var.dtype.kind in "iu" and "flag_meanings" in var.attrs
             and np.asarray(var.attrs.get("flag_values", [])).dtype.kind in "iu"]
    if not coded:
        return ds
    out = ds.copy()
    for name in coded:
        var = ds[name].variable
        meanings = str(var.attrs["flag_meanings"]).split()
        table = dict(zip(np.asarray(var.attrs["flag_values"]).tolist(), meanings,
                         strict=True))
        strings = np.vectorize(table.__getitem__, otypes=[object])(var.values) \
            if var.size else var.values.astype(object)
        out[name] = xr.Variable(var.dims, strings,
                                {**var.attrs, "flag_values": list(meanings)})
    return out


def history_line(command: str | None = None) -> str:
    """``2026-12-05T10:00:00Z phasekit 0.1.0: phasekit run --preset fig1``."""
    if command is None:
        command = _this_command()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now} phasekit {__version__}: {command}"


def _this_command() -> str:
    """The command line of this process as a user typed it, or what called phasekit."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if prog == "phasekit" or prog.startswith("phasekit."):
        return shlex.join(["phasekit", *sys.argv[1:]])
    return f"phasekit Python API ({prog or 'python'})"
