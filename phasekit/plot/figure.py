"""``plot_sweep``: the figure of a stored sweep (``docs/plotting.md``), the paper's panels
(:mod:`phasekit.plot.panels`) or, for a sweep with axes, the 2-D phase diagram
(:mod:`phasekit.plot.diagram`).

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so
nothing is ever shown and no display is needed (:mod:`phasekit.plot.style` selects
the Agg backend when nothing else chose one).  Saved files are deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import xarray as xr
from matplotlib.figure import Figure

from phasekit.analysis.averaged import check_average
from phasekit.analysis.phases import require, sweep_axes
from phasekit.errors import ConfigError
from phasekit.plot.diagram import diagram
from phasekit.plot.panels import (
    FINAL_PANELS,
    TRAJECTORY_PANELS,
    check_panels,
    draw_panels,
    parse_panels,
)
from phasekit.plot.select import axes_text, default_x, no_axes_text, parse_x, select_axes
from phasekit.plot.style import FORMATS, STYLE, save


def plot_sweep(ds: xr.Dataset, panels: str | Sequence[str] | None = None,
               c_values: Sequence[float] | None = None, path: str | os.PathLike | None = None,
               *, x: str | None = None, select: Mapping | Sequence[str] | str | None = None,
               average: str | None = None, ylog: bool = False) -> Figure:
    """Draw a stored sweep; save to ``path`` (.png, .pdf or .svg) if given.

    Without axes (or with every axis fixed by ``select``, e.g. ``{"width": 512}``
    or ``["width=512"]``): the ``panels`` of the paper.  With axes left: the 2-D
    phase diagram, ``x`` one axis or ``"a/b"``; ``average="seeds"`` draws it from
    the seed-averaged trajectories (their critical rates as the file stores them,
    ``<name>_mean_traj``, else computed), ``ylog=True`` puts c on a log axis.  An axis
    with a single value counts as fixed unless ``x`` names it.

    Raises :class:`~phasekit.errors.SweepFileError` when ``ds`` is not a
    phasekit sweep or lacks a variable a requested panel needs, and
    :class:`~phasekit.errors.ConfigError` for an unknown panel, axis, selected
    value or file type, an ``average`` other than ``"seeds"``, and ``average`` or
    ``ylog`` without axes.
    """
    require(ds, "status", purpose="plotting")
    check_average(average, "--average")
    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot write {path}: the figure file must end in "
                          f"{', '.join(FORMATS)}")
    ds = select_axes(ds, select)
    axes = sweep_axes(ds)
    x_axes = parse_x(ds, x) if x is not None else ()
    lone = {a: 0 for a in axes if ds.sizes[a] == 1 and a not in x_axes}
    ds = ds.isel(lone)
    axes = [a for a in axes if a not in lone]
    if axes:
        given = [flag for flag, value in (("--panels", panels), ("--c", c_values))
                 if value is not None]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} choose the panels of one axis point, but this sweep "
                f"has the axes {axes_text(ds, axes)}: fix each with --select (e.g. --select "
                f"{axes[-1]}={ds[axes[-1]].values[0]}), or leave {' and '.join(given)} out "
                f"for the phase diagram")
        with matplotlib.rc_context(STYLE):
            fig = diagram(ds, x_axes or (default_x(ds, axes),), axes, average=average,
                          ylog=ylog)
            if path is not None:
                save(fig, path)
        return fig
    _diagram_only(ds, average, ylog)
    chosen = parse_panels(panels, ds)
    check_panels(ds, chosen)
    traj = [p for p in chosen if p in TRAJECTORY_PANELS]
    final = [p for p in chosen if p in FINAL_PANELS]
    with matplotlib.rc_context(STYLE):
        fig = draw_panels(ds, traj, final, c_values)
        if path is not None:
            save(fig, path)
    return fig


def _diagram_only(ds: xr.Dataset, average: str | None, ylog: bool) -> None:
    """Refuse the options of the phase diagram for the panels of one axis point: their
    trajectories are per seed, and their y axes are not c."""
    given = [flag for flag, value in (("--average seeds", average), ("--ylog", ylog))
             if value]
    if given:
        flags = " and ".join(given)
        raise ConfigError(f"{flags} draw{'s' if len(given) == 1 else ''} the phase diagram "
                          f"of a sweep with axes, but {no_axes_text(ds)}: leave {flags} out "
                          f"for the panels, or plot a sweep with axes")
