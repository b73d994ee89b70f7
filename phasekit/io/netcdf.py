"""Storage schema: one labelled ``xarray.Dataset`` per sweep, written with netCDF4.

Dimensions ``seed``, ``eta_lambda0``, ``step`` (plus any an observable adds,
e.g. ``layer``).  Variables (see ``docs/schema.md``):

* ``eta(seed, eta_lambda0)``, ``lambda0(seed)``, ``lambda0_hessian(seed)`` (the loss
  Hessian's, with ``sweep.normalize = "hessian"`` or ``sweep.hessian``)
* trajectories ``loss``, ``weight_norm``, ``sharpness`` and every applicable
  observable over ``(seed, eta_lambda0, step)``; NaN after the run stopped
* ``final_<name>(seed, eta_lambda0)`` at the stop, ``steps``, ``status``
* ``bound_<name>(seed)``: docs/theory.md §3 bounds in ``eta_lambda0`` units

The dataset's attributes carry the resolved config as TOML text, the model and
dataset names and the phasekit and torch versions.  The file follows the CF
conventions (:mod:`phasekit.io.cf`): ``units = "1"`` on every dimensionless
quantity, ``long_name`` on every variable, ``status`` a flag variable (strings in
memory, integer codes with ``flag_meanings`` on disk), no ``_FillValue`` on
coordinates, a ``history`` line per write.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from phasekit import __version__
from phasekit.engine.hessian import c_unit, wants_hessian
from phasekit.errors import OutputError, SweepFileError
from phasekit.io import cf
from phasekit.io.files import write_failure

STATUS_DOC = ("why the run stopped: converged (|L_t - L_(t-1)| < tol), diverged (loss "
              "non-finite or above divergence_loss), max_steps (ran out of steps), trivial "
              "(converged to a dead network: every unit inactive, NTK ~ 0), pending (not run: "
              "the grid point was not evaluated)")

#: the values of ``status``, in the order of its ``flag_values``
STATUS_FLAGS = ("converged", "diverged", "max_steps", "trivial", "pending")

CORE_DOCS = {
    "loss": ("training loss L_t = 1/(2D) sum_alpha (z_alpha - y_alpha)^2",
             "docs/theory.md §1"),
    "weight_norm": ("weight norm theta_t^2 = sum_mu theta_mu^2",
                    "docs/theory.md §1; update eq. 12, 139"),
    "sharpness": ("eta * lambda_max(H_t), normalised top NTK eigenvalue", "eq. 4"),
}


#: long names of observables' extra dimensions; others are named after their observables
EXTRA_DIM_NAMES = {"layer": "hidden layer, 1 = next to the input"}


def _attr_value(value):
    """A dataset attribute as netCDF stores it: numbers as numbers (a bool as 0/1,
    numpy scalars as Python ones), strings as strings; anything else is left out."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, np.integer | np.floating):
        return value.item()
    return value if isinstance(value, int | float | str) else None


def _union(lists) -> list:
    """Values of several coordinate lists, first-seen order."""
    return list(dict.fromkeys(v for values in lists for v in values))


class _Observables:
    """The observables that apply at some axis point: their documentation and extra
    dimensions (``layer``), each dimension's coordinates the union over every point's
    (NaN where a point lacks a value)."""

    def __init__(self, engines):
        self.docs, self.dims = {}, {}
        self.point_coords = [engines[p].observable_coords() for p in range(len(engines))]
        for p in range(len(engines)):
            for obs in engines[p].observables:
                self.docs.setdefault(obs.name, obs)
                self.dims.setdefault(obs.name, obs.dims)
        self.union = {dim: _union(pc[name][dim] for pc in self.point_coords
                                  if dim in pc.get(name, {}))
                      for name, dims in self.dims.items() for dim in dims}

    def index(self, p: int, name: str, dims: tuple[str, ...],
              arr_shape: tuple[int, ...]) -> list[np.ndarray]:
        """Positions of point ``p``'s extra-dimension entries in the union coordinates."""
        out = []
        for dim, size in zip(dims, arr_shape, strict=True):
            mine = self.point_coords[p].get(name, {}).get(dim)
            if mine is None:
                out.append(np.arange(size))
            else:
                pos = {v: i for i, v in enumerate(self.union[dim])}
                out.append(np.asarray([pos[v] for v in mine]))
        return out


class _Grid:
    """Chunk results gathered over a flat axis-point dimension ``P``: ``(P, S)`` per
    seed, ``(P, S, C)`` per run, ``(P, S, C, R)`` per recorded step."""

    def __init__(self, P: int, S: int, C: int, schedule: np.ndarray, normalize: str):
        self.schedule, self.normalize = schedule, normalize
        self.lambda0 = np.full((P, S), np.nan)
        self.lambda0_hessian = np.full((P, S), np.nan)
        self.eta = np.full((P, S, C), np.nan)
        self.steps = np.full((P, S, C), -1, dtype=np.int64)
        self.status = np.full((P, S, C), "pending", dtype=object)
        self.traj: dict[str, np.ndarray] = {}
        self.final: dict[str, np.ndarray] = {}
        self.dims: dict[str, tuple[str, ...]] = {}
        self.bounds: dict[str, np.ndarray] = {}
        self.bound_meta: dict[str, object] = {}

    def add(self, res, observables: _Observables) -> None:
        """One chunk's result."""
        p, si, ci = res.chunk.point, res.chunk.seed_index, np.asarray(res.chunk.c_index)
        P, S, C = self.eta.shape
        R = len(self.schedule)
        self.lambda0[p, si] = res.lambda0
        self.lambda0_hessian[p, si] = res.lambda0_hessian
        self.eta[p, si, ci] = res.eta
        self.steps[p, si, ci] = res.steps
        self.status[p, si, ci] = res.status
        for name, arr in res.traj.items():
            if name not in self.traj:
                self.dims[name] = tuple(res.extra_dims.get(name, ()))
                sizes = tuple(len(observables.union[d]) if observables.union.get(d) else n
                              for d, n in zip(self.dims[name], arr.shape[2:], strict=True))
                self.traj[name] = np.full((P, S, C, R) + sizes, np.nan)
                self.final[name] = np.full((P, S, C) + sizes, np.nan)
            extra = observables.index(p, name, self.dims[name], arr.shape[2:])
            self.traj[name][(p, si) + np.ix_(ci, np.arange(R), *extra)] = arr
            self.final[name][(p, si) + np.ix_(ci, *extra)] = res.final[name]
        for b in res.bounds:
            self.bounds.setdefault(b.name, np.full((P, S), np.nan))[p, si] = \
                b.eta * c_unit(self.normalize, res.lambda0, res.lambda0_hessian)
            self.bound_meta.setdefault(b.name, b)

    def trim(self) -> None:
        """Drop the recorded steps after the last step any run reached."""
        last = int(self.steps.max()) if self.steps.size else -1
        if last >= 0:
            keep = int(np.searchsorted(self.schedule, last, side="right"))
            self.schedule = self.schedule[:keep]
            self.traj = {name: arr[:, :, :, :keep] for name, arr in self.traj.items()}


def build_dataset(engines, results) -> xr.Dataset:
    """Assemble chunk results into the schema above.

    ``engines`` is the :class:`~phasekit.engine.points.PointEngines` of the sweep (one
    engine per axis point; one point without axes).  Every array is first filled
    over a flat axis-point dimension ``P`` and reshaped to the axes' dimensions at
    the end (dropped without axes).
    """
    config = engines.config
    sweep = config.sweep
    observables = _Observables(engines)
    grid = _Grid(len(engines), len(sweep["seeds"]), len(sweep["eta_lambda0"]),
                 engines[0].schedule, sweep["normalize"])
    for res in results:
        grid.add(res, observables)
    grid.trim()

    coords = {"seed": np.asarray(sweep["seeds"], dtype=np.int64),
              "eta_lambda0": np.asarray(sweep["eta_lambda0"], dtype=np.float64),
              "step": grid.schedule.astype(np.int64)}
    coords.update({dim: np.asarray(values) for dim, values in observables.union.items()
                   if values})
    for key, dim in zip(config.axes, config.axis_dims, strict=True):
        coords[dim] = np.asarray(config.axes[key])
    data_vars = _data_vars(grid, observables, config)
    data_vars.update(_point_options(engines, config))
    ds = xr.Dataset({k: xr.Variable(*v) for k, v in data_vars.items()}, coords=coords,
                    attrs=_global_attrs(engines, config))
    _describe_coords(ds, config, observables)
    return ds


def _data_vars(grid: _Grid, observables: _Observables, config) -> dict:
    """``name -> (dims, values, attrs)`` of every variable of the schema but the
    option values, reshaped from ``(P, ...)`` to the axes."""
    axes, axis_dims, sweep = config.axes, config.axis_dims, config.sweep

    def shaped(arr: np.ndarray) -> np.ndarray:
        """(P, ...) -> (*axes, ...), or (...) without axes."""
        return arr.reshape(config.axis_shape + arr.shape[1:]) if axes else arr[0]

    runs = (*axis_dims, "seed", "eta_lambda0")
    data_vars = {
        "eta": (runs, shaped(grid.eta), {
            "long_name": f"learning rate eta = eta_lambda0 / {_unit_name(sweep)}",
            "units": "1", "equation": "docs/theory.md §1"}),
        "lambda0": ((*axis_dims, "seed"), shaped(grid.lambda0), {
            "long_name": "lambda_max(H_0), top eigenvalue of the NTK at initialisation",
            "units": "1", "equation": "eq. 4"}),
    }
    if wants_hessian(sweep):
        data_vars["lambda0_hessian"] = ((*axis_dims, "seed"), shaped(grid.lambda0_hessian),
                                        HESSIAN_ATTRS)
    for name in grid.traj:
        if name in CORE_DOCS:
            long_name, equation = CORE_DOCS[name]
        else:
            long_name, equation = observables.docs[name].long_name, \
                observables.docs[name].equation
        extra = grid.dims[name]
        attrs = {"long_name": long_name, "units": "1"}
        if equation:
            attrs["equation"] = equation
        note = "value at theta_t, before the t-th update; NaN after the run stopped"
        if extra and axes:
            note += (f"; NaN where an axis point has no such {', '.join(extra)} (padded to the "
                     f"union over axis points)")
        data_vars[name] = (runs + ("step",) + extra, shaped(grid.traj[name]),
                           {**attrs, "note": note})
        data_vars[f"final_{name}"] = (runs + extra, shaped(grid.final[name]),
                                      {**attrs, "long_name": f"{long_name}, at the stop"})
    data_vars["steps"] = (runs, shaped(grid.steps), {
        "long_name": "gradient-descent updates made before the run stopped (-1: not run)",
        "units": "1"})
    data_vars["status"] = (runs, shaped(grid.status), {
        "long_name": "how the run ended",
        "flag_values": list(STATUS_FLAGS),
        "flag_meanings": " ".join(STATUS_FLAGS),
        "description": STATUS_DOC})
    for name, values in grid.bounds.items():
        b = grid.bound_meta[name]
        attrs = {"long_name": b.long_name, "equation": b.equation, "kind": b.kind,
                 "units": "1",
                 "comment": f"in eta_lambda0 units: eta_bound * {_unit_name(sweep)}"}
        if axes:
            attrs["note"] = "NaN at axis points where the bound does not apply"
        data_vars[f"bound_{name}"] = ((*axis_dims, "seed"), shaped(values), attrs)
    return data_vars


def _global_attrs(engines, config) -> dict:
    """The dataset's attributes: CF conventions, the config as TOML, names and versions,
    and the dataset attributes every axis point shares (``dataset_<key>``)."""
    attrs = {
        "Conventions": cf.CONVENTIONS,
        "title": "phasekit learning-rate sweep",
        "source": f"phasekit {__version__} (torch {torch.__version__})",
        "config": config.to_toml(),
        "model": config.model["name"],
        "dataset": config.dataset["name"],
        "axes": " ".join(config.axis_dims),
        "phasekit_version": __version__,
        "torch_version": torch.__version__,
        "comment": f"step t describes theta_t before the t-th update; eta_lambda0 = "
                   f"eta * {_unit_name(config.sweep)}; every quantity is dimensionless",
    }
    shared = None
    for p in range(len(engines)):
        mine = {k: _attr_value(v) for k, v in engines[p].data.attrs.items()
                if _attr_value(v) is not None}
        shared = mine if shared is None else {k: v for k, v in shared.items()
                                              if mine.get(k) == v}
    for key, value in (shared or {}).items():
        attrs[f"dataset_{key}"] = value
    return attrs


def _describe_coords(ds: xr.Dataset, config, observables: _Observables) -> None:
    """CF attributes of the coordinates (and ``units`` of the option values), in place."""
    axis_dims = config.axis_dims
    ds["seed"].attrs["long_name"] = "random seed of the initialisation and fixed features"
    unit = _unit_name(config.sweep)
    ds["eta_lambda0"].attrs.update({"long_name": C_LONG_NAMES[unit], "units": "1",
                                    "normalized_by": unit})
    ds["step"].attrs.update({"long_name": "gradient-descent step t (0 = initialisation)",
                             "units": "1"})
    for key, dim in zip(config.axes, axis_dims, strict=True):
        ds[dim].attrs.update({"long_name": f"sweep axis {key}", "axis_key": key})
    for dim in observables.union:
        if dim in ds.coords:
            users = sorted(name for name, d in observables.dims.items() if dim in d)
            ds[dim].attrs["long_name"] = EXTRA_DIM_NAMES.get(
                dim, f"{dim} of the observable(s) {', '.join(users)}")
    for name, var in ds.variables.items():
        # Option values are numbers without a physical unit (widths, counts, scales).
        if (name in axis_dims or str(name).startswith(("model_", "dataset_"))) \
                and var.dtype.kind in "iuf":
            var.attrs["units"] = "1"
    return ds


#: the variable ``eta_lambda0`` is measured in (``sweep.normalize``) -> its long name
C_LONG_NAMES = {
    "lambda0": "normalised learning rate c = eta * lambda_max(H_0)",
    "lambda0_hessian": "normalised learning rate c = eta * lambda^H_0, the loss Hessian's top "
                       "eigenvalue at initialisation",
}

HESSIAN_ATTRS = {
    "long_name": "lambda^H_0, top eigenvalue of the loss Hessian (1/D) J^T J + (1/D) "
                 "sum_a (z_a - y_a) grad^2 z_a at initialisation",
    "units": "1", "equation": "docs/theory.md §1 (loss Hessian)",
    "comment": "its Gauss-Newton part (1/D) J^T J has the NTK's top eigenvalue lambda0"}


def _unit_name(sweep: dict) -> str:
    """The stored variable that ``eta_lambda0`` is measured in: ``lambda0`` or, with
    ``sweep.normalize = "hessian"``, ``lambda0_hessian``."""
    return c_unit(sweep["normalize"], "lambda0", "lambda0_hessian")


def _point_options(engines, config) -> dict:
    """``model_<key>`` / ``dataset_<key>``: resolved option values that differ between
    axis points (derived ones such as zeta = sqrt(2/width) included), over exactly the
    axes they vary along; the axes themselves are coordinates already."""
    if not config.axes:
        return {}
    out = {}
    for kind in ("model", "dataset"):
        tables = [getattr(engines[p].config, kind) for p in range(len(engines))]
        for key in _union(t.keys() for t in tables):
            if key == "name" or f"{kind}.{key}" in config.axes:
                continue
            values = [t.get(key) for t in tables]
            scalar = all(isinstance(v, int | float | str) for v in values)
            if not scalar or len(set(map(repr, values))) == 1:
                continue
            arr = np.asarray(values).reshape(config.axis_shape)
            dims = list(config.axis_dims)
            for axis in reversed(range(arr.ndim)):    # keep only the axes it depends on
                first = np.take(arr, [0], axis=axis)
                if (arr == first).all():
                    arr = np.squeeze(first, axis=axis)
                    del dims[axis]
            out[f"{kind}_{key}"] = (tuple(dims), arr,
                                    {"long_name": f"resolved {kind}.{key} at each axis point"})
    return out


def write_sweep(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, ``fsync``, then a rename
    (:func:`phasekit.io.files.atomic_write`).  The file gets the mode of the file it
    replaces, or ``0o666`` less the umask."""
    from phasekit.io.files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = cf.encode(ds)
    return atomic_write(path, lambda tmp: _write_netcdf4(encoded, tmp))


def _write_netcdf4(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """``ds.to_netcdf(path, engine="netcdf4")`` for in-memory data, less one cost:
    ``to_netcdf`` asks dask for its scheduler to choose a file lock, which imports
    dask.distributed (about 0.2-0.3 s of a 1-2 s command) wherever it is installed.
    The data here are numpy arrays written from this thread, so the lock is xarray's
    own for netCDF4-python, passed explicitly; the file is the same
    (tests/test_netcdf_write.py compares the two byte for byte)."""
    from xarray.backends import NetCDF4DataStore
    from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

    store = NetCDF4DataStore.open(os.fspath(path), mode="w", format="NETCDF4",
                                  lock=NETCDF4_PYTHON_LOCK)
    try:
        ds.dump_to_store(store)
    finally:
        store.close()


def open_sweep(path: str | os.PathLike, *, load: bool = True) -> xr.Dataset:
    """A stored sweep, checked to be one before anything is read into memory.

    Refuses (:class:`SweepFileError`) a missing or non-regular file, a file netCDF
    cannot read, one without phasekit's ``phasekit_version`` and TOML ``config``
    attributes, and one whose variables would take more memory than
    :func:`phasekit.engine.memory.memory_limit` allows (their sizes are declared in the
    file's header, so a small file can claim terabytes).  Only the root group is
    read; netCDF groups are ignored.  With ``load=False`` the file stays open,
    read lazily (close it, e.g. ``with open_sweep(p, load=False) as ds``).
    """
    from phasekit.config.limits import describe_memory_limit, memory_limit
    from phasekit.errors import fmt_bytes

    path = Path(path)
    if not path.exists():
        raise SweepFileError(f"{path}: no such file")
    if not path.is_file():
        raise SweepFileError(f"{path} is not a file")
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a sweep"
        raise SweepFileError(f"{path} is not a netCDF file phasekit can read "
                             f"({type(exc).__name__}: {exc})") from None
    try:
        config = ds.attrs.get("config")
        if "phasekit_version" not in ds.attrs or config is None:
            raise SweepFileError(f"{path} is not a phasekit sweep (no phasekit_version/config "
                                 f"attributes)")
        try:
            if not isinstance(config, str):
                raise TypeError(f"it holds a {type(config).__name__}, not text")
            tomllib.loads(config)
        except (TypeError, tomllib.TOMLDecodeError) as exc:
            raise SweepFileError(f"{path} is not a phasekit sweep: its config attribute is "
                                 f"not a TOML document ({exc})") from None
        size = sum(int(v.size) * v.dtype.itemsize for v in ds.variables.values())
        limit = memory_limit()
        if size > limit:
            raise SweepFileError(f"{path} declares variables of {fmt_bytes(size)} in all, more "
                                 f"than phasekit reads into memory ({describe_memory_limit()});"
                                 f" refusing to load it")
        if load:
            try:
                ds.load()
            except Exception as exc:  # noqa: BLE001 - a damaged file, whatever the reader says
                raise SweepFileError(f"{path}: cannot read its data ({type(exc).__name__}: "
                                     f"{exc})") from None
    except BaseException:
        ds.close()
        raise
    if load:
        ds.close()
    return cf.decode(ds)


def stored_config(ds: xr.Dataset) -> dict:
    """The resolved config a sweep was run with."""
    return tomllib.loads(ds.attrs["config"])


def write_output(ds, path: Path, then: Callable[[], str] | None = None) -> Path:
    """:func:`phasekit.io.netcdf.write_sweep`, a failure (a full disk: netCDF reports it as
    ``RuntimeError``) as one :class:`OutputError` ending in ``then()`` (default: the
    file is unchanged)."""
    from phasekit.io.netcdf import write_sweep

    path = Path(path)
    try:
        return write_sweep(ds, path)
    except (OSError, RuntimeError) as exc:
        after = then() if then is not None else f"{path} is unchanged"
        raise OutputError(f"cannot write {path} ({write_failure(path, exc)}); {after}") from None
