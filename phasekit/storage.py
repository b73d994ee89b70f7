"""Storage schema: one labelled ``xarray.Dataset`` per sweep, written with netCDF4.

Dimensions ``seed``, ``eta_lambda0``, ``step`` (plus any an observable adds,
e.g. ``layer``).  Variables (see ``docs/schema.md``):

* ``eta(seed, eta_lambda0)``, ``lambda0(seed)``
* trajectories ``loss``, ``weight_norm``, ``sharpness`` and every applicable
  observable over ``(seed, eta_lambda0, step)``; NaN after the run stopped
* ``final_<name>(seed, eta_lambda0)`` at the stop, ``steps``, ``status``
* ``bound_<name>(seed)``: SPEC 3 bounds in ``eta_lambda0`` units

The dataset's attributes carry the resolved config as TOML text, the model and
dataset names and the phasekit and torch versions.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from . import __version__

STATUS_DOC = ("why the run stopped: converged (|L_t - L_(t-1)| < tol), diverged (loss "
              "non-finite or above divergence_loss), max_steps (ran out of steps), trivial "
              "(converged to a dead network: every unit inactive, NTK ~ 0), pending (not run: "
              "the grid point was not evaluated)")

CORE_DOCS = {
    "loss": ("training loss L_t = 1/(2D) sum_alpha (z_alpha - y_alpha)^2", "SPEC 1"),
    "weight_norm": ("weight norm theta_t^2 = sum_mu theta_mu^2", "SPEC 1; update eq. 12, 139"),
    "sharpness": ("eta * lambda_max(H_t), normalised top NTK eigenvalue", "eq. 4"),
}


class SweepFileError(ValueError):
    """A file that is not a phasekit sweep, or lacks what is asked of it."""


def build_dataset(engine, results) -> xr.Dataset:
    """Assemble chunk results into the schema above."""
    sweep = engine.sweep
    seeds, cs, sched = sweep["seeds"], sweep["eta_lambda0"], engine.schedule
    S, C, R = len(seeds), len(cs), len(sched)
    obs_docs = {o.name: o for o in engine.observables}
    obs_coords = engine.observable_coords()

    lambda0 = np.full(S, np.nan)
    eta = np.full((S, C), np.nan)
    steps = np.full((S, C), -1, dtype=np.int64)
    status = np.full((S, C), "pending", dtype=object)
    traj: dict[str, np.ndarray] = {}
    final: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    bounds: dict[str, np.ndarray] = {}
    bound_meta: dict[str, object] = {}

    for res in results:
        si, ci = res.chunk.seed_index, np.asarray(res.chunk.c_index)
        lambda0[si] = res.lambda0
        eta[si, ci] = res.eta
        steps[si, ci] = res.steps
        status[si, ci] = res.status
        for name, arr in res.traj.items():
            if name not in traj:
                traj[name] = np.full((S, C, R) + arr.shape[2:], np.nan)
                final[name] = np.full((S, C) + arr.shape[2:], np.nan)
                dims[name] = res.extra_dims.get(name, ())
            traj[name][si, ci] = arr
            final[name][si, ci] = res.final[name]
        for b in res.bounds:
            bounds.setdefault(b.name, np.full(S, np.nan))[si] = b.eta * res.lambda0
            bound_meta[b.name] = b

    # Trim the step axis after the last step any run reached.
    last = int(steps.max()) if steps.size else -1
    if last >= 0:
        keep = int(np.searchsorted(sched, last, side="right"))
        sched = sched[:keep]
        traj = {name: arr[:, :, :keep] for name, arr in traj.items()}

    coords = {"seed": np.asarray(seeds, dtype=np.int64),
              "eta_lambda0": np.asarray(cs, dtype=np.float64),
              "step": sched.astype(np.int64)}
    for per_obs in obs_coords.values():
        coords.update({k: np.asarray(v) for k, v in per_obs.items()})

    grid = ("seed", "eta_lambda0")
    data_vars = {
        "eta": (grid, eta, {"long_name": "learning rate eta = eta_lambda0 / lambda0",
                            "equation": "SPEC 1"}),
        "lambda0": (("seed",), lambda0, {"long_name": "lambda_max(H_0), top eigenvalue of "
                                         "the NTK at initialisation", "equation": "eq. 4"}),
    }
    for name in traj:
        if name in CORE_DOCS:
            long_name, equation = CORE_DOCS[name]
        else:
            long_name, equation = obs_docs[name].long_name, obs_docs[name].equation
        extra = dims[name]
        attrs = {"long_name": long_name}
        if equation:
            attrs["equation"] = equation
        data_vars[name] = (grid + ("step",) + extra, traj[name],
                           {**attrs, "note": "value at theta_t, before the t-th update; "
                                             "NaN after the run stopped"})
        data_vars[f"final_{name}"] = (grid + extra, final[name],
                                      {**attrs, "long_name": f"{long_name}, at the stop"})
    data_vars["steps"] = (grid, steps, {"long_name": "gradient-descent updates made before "
                                        "the run stopped"})
    data_vars["status"] = (grid, status, {
        "long_name": "how the run ended",
        "flag_meanings": "converged diverged max_steps trivial pending",
        "description": STATUS_DOC})
    for name, values in bounds.items():
        b = bound_meta[name]
        data_vars[f"bound_{name}"] = (("seed",), values, {
            "long_name": b.long_name, "equation": b.equation, "kind": b.kind,
            "units": "eta_lambda0 (eta * lambda0)"})

    config = engine.config
    attrs = {
        "title": "phasekit learning-rate sweep",
        "config": config.to_toml(),
        "model": config.model["name"],
        "dataset": config.dataset["name"],
        "phasekit_version": __version__,
        "torch_version": torch.__version__,
        "conventions": "step t describes theta_t before the t-th update; eta_lambda0 = "
                       "eta * lambda_max(H_0)",
    }
    for key, value in engine.data.attrs.items():
        if isinstance(value, int | float | str):
            attrs[f"dataset_{key}"] = value
    ds = xr.Dataset({k: xr.Variable(*v) for k, v in data_vars.items()}, coords=coords,
                    attrs=attrs)
    ds["seed"].attrs["long_name"] = "random seed of the initialisation and fixed features"
    ds["eta_lambda0"].attrs["long_name"] = "normalised learning rate c = eta * lambda_max(H_0)"
    ds["step"].attrs["long_name"] = "gradient-descent step t (0 = initialisation)"
    return ds


def write_sweep(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_sweep(path: str | os.PathLike) -> xr.Dataset:
    """Load a stored sweep into memory, checking it is one."""
    path = Path(path)
    if not path.exists():
        raise SweepFileError(f"{path}: no such file")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a sweep"
        raise SweepFileError(f"{path} is not a netCDF file phasekit can read ({exc})") from None
    if "phasekit_version" not in ds.attrs or "config" not in ds.attrs:
        raise SweepFileError(f"{path} is not a phasekit sweep (no phasekit_version/config "
                             f"attributes)")
    return ds


def stored_config(ds: xr.Dataset) -> dict:
    """The resolved config a sweep was run with."""
    return tomllib.loads(ds.attrs["config"])
