"""Which part of a sweep with axes a figure draws (``docs/plotting.md``): fixing axes
(``--select``), the diagram's x axis (``--x``, one axis or a ratio of two) and its
scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from phasekit.analysis.phases import sweep_axes
from phasekit.errors import ConfigError
from phasekit.plot.style import plain

GEOMETRIC_RTOL = 0.05


def axes_text(ds: xr.Dataset, axes: list[str]) -> str:
    out = []
    for a in axes:
        key = ds[a].attrs.get("axis_key")
        out.append(f"{a} ({key})" if key and key != a else a)
    return ", ".join(out) if out else "none"


def _find_axis(ds: xr.Dataset, key: str, what: str) -> str:
    """The axis dimension named ``key`` (``width``) or whose option is ``key``
    (``model.width``); ConfigError naming the axes otherwise."""
    key = key.strip()
    axes = sweep_axes(ds)
    for a in axes:
        if key == a or key == ds[a].attrs.get("axis_key"):
            return a
    fixed = fixed_text(ds)
    if not axes:
        where = (f"every axis is fixed ({fixed})" if fixed
                 else "this sweep has no axes (sweep.axes)")
        raise ConfigError(f"{what}: {where}")
    raise ConfigError(f"{what}: {key!r} is not an axis of this sweep; its axes are "
                      f"{axes_text(ds, axes)}" + (f" ({fixed} fixed)" if fixed else ""))


def numeric(ds: xr.Dataset, axis: str) -> bool:
    return ds[axis].dtype.kind in "iuf"


def _match(ds: xr.Dataset, axis: str, value, what: str) -> int:
    """The index of ``value`` (a string from the command line, or a value) on ``axis``."""
    coord = ds[axis].values
    kind = coord.dtype.kind
    hits = np.array([], dtype=int)
    try:
        if kind in "iuf":
            hits = np.flatnonzero(np.isclose(coord.astype(float), float(value), rtol=1e-9,
                                             atol=0.0))
        elif kind == "b":
            word = str(value).strip().lower()
            if word in ("true", "false"):
                hits = np.flatnonzero(coord == (word == "true"))
        else:
            hits = np.flatnonzero(coord.astype(str) == str(value).strip())
    except (TypeError, ValueError):
        pass
    if not hits.size:
        raise ConfigError(f"{what}: {value!s} is not a value of the axis {axis}; its values "
                          f"are {', '.join(str(v) for v in coord)}")
    return int(hits[0])


def select_axes(ds: xr.Dataset, select: Mapping | Sequence[str] | str | None) -> xr.Dataset:
    """``ds`` with axes fixed to one value each: ``{"width": 512}`` or ``["width=512"]``
    (an axis by its dimension or option name); the fixed axes stay as scalar
    coordinates.  ConfigError for an unknown axis or a value not on it."""
    if not select:
        return ds
    if isinstance(select, Mapping):
        items = [(str(k), v) for k, v in select.items()]
    else:
        items = []
        for text in [select] if isinstance(select, str) else select:
            key, eq, value = str(text).partition("=")
            if not eq or not key.strip() or not value.strip():
                raise ConfigError(f"--select expects AXIS=VALUE such as width=512, got "
                                  f"{text!r}")
            items.append((key.strip(), value.strip()))
    picks: dict[str, int] = {}
    for key, value in items:
        what = f"--select {key}={value}"
        axis = _find_axis(ds, key, what)
        if axis in picks:
            raise ConfigError(f"{what}: the axis {axis} is selected twice")
        picks[axis] = _match(ds, axis, value, what)
    return ds.isel(picks)


def parse_x(ds: xr.Dataset, x: str) -> tuple[str, ...]:
    """The axes of ``--x``: ``("width",)`` or, for ``"hidden_layers/width"``,
    ``("hidden_layers", "width")`` (both numeric)."""
    parts = str(x).split("/")
    what = f"--x {x}"
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"{what}: expected one axis (width) or a ratio of two "
                          f"(hidden_layers/width)")
    axes = tuple(_find_axis(ds, p, what) for p in parts)
    if len(axes) == 2:
        if axes[0] == axes[1]:
            raise ConfigError(f"{what}: a ratio needs two different axes")
        for a in axes:
            if not numeric(ds, a):
                raise ConfigError(f"{what}: the axis {a} is not numeric "
                                  f"({', '.join(str(v) for v in ds[a].values)})")
        if (ds[axes[1]].values == 0).any():
            raise ConfigError(f"{what}: the axis {axes[1]} has the value 0")
    return axes


def default_x(ds: xr.Dataset, axes: list[str]) -> str:
    """The numeric axis with the most values (the later one in config order on a tie);
    the last axis if none is numeric."""
    numbers = [a for a in axes if numeric(ds, a)]
    if not numbers:
        return axes[-1]
    return max(reversed(numbers), key=lambda a: ds.sizes[a])


def geometric(values) -> bool:
    """Whether ``values`` form a geometric grid: at least three positive values whose
    consecutive ratios agree within 5% and differ from 1 (then drawn on a log scale)."""
    v = np.unique(np.asarray(values, dtype=float))
    if v.size < 3 or not (v > 0).all():
        return False
    ratio = v[1:] / v[:-1]
    return bool(ratio.min() > 1 + GEOMETRIC_RTOL
                and ratio.max() <= ratio.min() * (1 + GEOMETRIC_RTOL))


def fixed_text(ds: xr.Dataset) -> str:
    """``width = 512, ...``: the sweep's axes fixed by a selection (scalar coordinates)."""
    names = str(ds.attrs.get("axes", "") or "").split()
    return plain(", ".join(f"{a} = {ds[a].values.item()}" for a in names
                           if a in ds.coords and ds[a].ndim == 0))

