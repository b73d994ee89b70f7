"""The Python API, mirroring the command line (for notebooks and tests)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import xarray as xr

from phasekit.config.registry import PluginManager, get_plugin_manager
from phasekit.config.resolve import build_config, resolve_config
from phasekit.io.netcdf import open_sweep, write_sweep
from phasekit.runner.progress import Progress


def run(config: Mapping | str | os.PathLike | None = None, *, preset: str | None = None,
        overrides: Iterable[str] | Mapping = (), output: str | os.PathLike | None = None,
        progress: bool = False, manager: PluginManager | None = None) -> xr.Dataset:
    """Run a sweep and return its dataset (also written to ``output`` if given).

    >>> ds = run(preset="fig1", overrides=["sweep.seeds=2"])   # doctest: +SKIP
    """
    from phasekit.analysis.phases import add_critical
    from phasekit.runner.execute import execute

    manager = manager or get_plugin_manager()
    resolved, data = resolve_config(build_config(config, preset=preset, overrides=overrides,
                                                 manager=manager), manager)
    return execute(resolved, data, manager, output,
                   progress=Progress() if progress else None, derive=add_critical)


def load(path: str | os.PathLike) -> xr.Dataset:
    """Open a stored sweep (checks that it is one)."""
    return open_sweep(path)


def build_model(config, *, manager: PluginManager | None = None):
    """The model of ``config``, built on its dataset as the sweep engine builds it and
    ready for ``setup`` (its dataset is ``model.data``).

    ``config`` is a raw mapping with the tables ``[model]`` and ``[dataset]`` (as in a
    config file) or a resolved config; the ``[sweep]`` table, axes included, is not
    used.  Used by the contract checks of :mod:`phasekit.testing`.

    >>> model = build_model({"model": {"name": "relu", "width": 16},
    ...                      "dataset": {"name": "random", "num_train": 4}})  # doctest: +SKIP
    """
    from phasekit.config.resolve import ResolvedConfig
    from phasekit.engine.engine import Engine

    manager = manager or get_plugin_manager()
    raw = config.to_dict() if isinstance(config, ResolvedConfig) else config
    tables = {k: raw[k] for k in ("model", "dataset") if k in raw}
    resolved, data = resolve_config(tables, manager)
    return Engine(resolved, data, manager).model


# -- analysis: mirrors `phasekit analyze`, `phasekit boundary` and `phasekit plot` -----

def _as_sweep(sweep: xr.Dataset | str | os.PathLike) -> xr.Dataset:
    return sweep if isinstance(sweep, xr.Dataset) else open_sweep(sweep)


def classify(sweep: xr.Dataset | str | os.PathLike, *, catapult_factor: float = 2.0,
             output: str | os.PathLike | None = None) -> xr.Dataset:
    """The sweep with a ``phase`` variable added (``phasekit analyze``); a dataset or a path.

    Written to ``output`` if given.  Criteria: ``docs/phases.md``.
    """
    from phasekit.analysis.phases import add_phases

    ds = add_phases(_as_sweep(sweep), catapult_factor)
    if output is not None:
        write_sweep(ds, Path(output))
    return ds


def boundary(config: Mapping | str | os.PathLike | None = None, *, preset: str | None = None,
             overrides: Iterable[str] | Mapping = (), axes: Iterable[str] = (),
             tol: float = 0.01, points: int = 1, early: bool = True,
             average: str | None = None, output: str | os.PathLike | None = None, log=None,
             manager: PluginManager | None = None) -> xr.Dataset:
    """Find ``c_loss``, ``c_sharp``, ``c_max`` and the trivial onset for every axis point
    and seed (``phasekit boundary``); ``early=False`` skips c_loss and c_sharp;
    ``average="seeds"`` finds those of the seed-averaged trajectories per axis point
    instead (``<name>_mean_traj``; ``phasekit boundary --average seeds``).

    Returns every evaluated whole run in the usual schema plus ``c_max(*axes, seed)`` etc.;
    ``print(ds.phasekit.summary())`` reports them.  See ``docs/boundary.md``.

    >>> ds = boundary(preset="fig1", tol=0.01)   # doctest: +SKIP
    """
    from phasekit.analysis.boundary import find_boundary

    manager = manager or get_plugin_manager()
    raw = build_config(config, preset=preset, overrides=overrides, axes=axes, manager=manager)
    ds = find_boundary(raw, manager, tol=tol, points=points, early=early, average=average,
                       log=log)
    if output is not None:
        write_sweep(ds, Path(output))
    return ds


def plot(sweep: xr.Dataset | str | os.PathLike, path: str | os.PathLike | None = None, *,
         panels=None, c_values=None, x: str | None = None, select=None,
         average: str | None = None, ylog: bool = False):
    """The paper's panels of a sweep, or its 2-D phase diagram when it has axes
    (``phasekit plot``); returns a matplotlib Figure.

    ``panels`` like ``"a,b,d"`` (default: every panel the sweep has data for),
    ``c_values`` the learning rates of the trajectory panels, ``x`` the diagram's
    x axis (an axis name or a ratio such as ``"hidden_layers/width"``), ``select``
    axis values to fix (``{"width": 512}`` or ``["width=512"]``: the 1-D panels of
    that slice), ``average="seeds"`` the diagram of the seed-averaged trajectories,
    ``ylog=True`` c on a log axis.  See ``docs/plotting.md``.
    """
    from phasekit.plot.figure import plot_sweep

    return plot_sweep(_as_sweep(sweep), panels=panels, c_values=c_values, path=path, x=x,
                      select=select, average=average, ylog=ylog)
