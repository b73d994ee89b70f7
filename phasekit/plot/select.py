"""Which part of a sweep with axes a figure draws (``docs/plotting.md``): fixing axes
(``--select``), the diagram's x axis (``--x``, one axis or an arithmetic expression of
axes) and its scale."""

from __future__ import annotations

import ast
import re
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


def no_axes_text(ds: xr.Dataset) -> str:
    """Why a sweep without axes left has none: fixed by a selection, or never swept."""
    fixed = fixed_text(ds)
    return (f"every axis is fixed ({fixed})" if fixed
            else "this sweep has no axes (sweep.axes)")


def _find_axis(ds: xr.Dataset, key: str, what: str) -> str:
    """The axis dimension named ``key`` (``width``) or whose option is ``key``
    (``model.width``); ConfigError naming the axes otherwise."""
    key = key.strip()
    axes = sweep_axes(ds)
    for a in axes:
        if key == a or key == ds[a].attrs.get("axis_key"):
            return a
    if not axes:
        raise ConfigError(f"{what}: {no_axes_text(ds)}")
    fixed = fixed_text(ds)
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


class XAxis(tuple):
    """What ``--x`` puts on the diagram's x axis: the sweep axes it reads (the tuple
    itself, in order of first appearance), its label, and :meth:`values`: one axis as it
    is, or an arithmetic expression of numeric axes (``hidden_layers/width``,
    ``(hidden_layers+2)/width``: numbers, axis names, ``+ - * / **`` and parentheses)."""

    text: str
    expression: ast.Expression | None

    def __new__(cls, axes: tuple[str, ...], text: str, expression: ast.Expression | None):
        out = super().__new__(cls, axes)
        out.text, out.expression = text, expression
        return out

    def values(self, per_axis: Sequence[np.ndarray]) -> np.ndarray:
        """x at each point, from each axis's value there (in the tuple's order)."""
        if self.expression is None:
            return np.asarray(per_axis[0])
        names = dict(zip(self, (np.asarray(v, dtype=float) for v in per_axis), strict=True))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(_evaluate(self.expression.body, names), dtype=float)


_OPERATORS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
              ast.Div: np.divide, ast.Pow: np.power}


def _evaluate(node: ast.AST, names: Mapping[str, np.ndarray]):
    if isinstance(node, ast.BinOp):
        return _OPERATORS[type(node.op)](_evaluate(node.left, names),
                                         _evaluate(node.right, names))
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, names)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name):
        return names[node.id]
    return float(node.value)                         # ast.Constant, checked by _parse


def _parse(text: str, what: str) -> ast.Expression:
    """``text`` as an arithmetic expression of names and numbers, nothing else."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ConfigError(f"{what}: not an arithmetic expression of axes") from None
    for node in ast.walk(tree):
        ok = (isinstance(node, ast.Expression | ast.Name | ast.Load | ast.operator
                         | ast.unaryop)
              or isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS
              or isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
              or isinstance(node, ast.Constant) and isinstance(node.value, int | float)
              and not isinstance(node.value, bool))
        if not ok:
            raise ConfigError(f"{what}: only axis names, numbers, + - * / ** and "
                              f"parentheses are allowed")
    return tree


def parse_x(ds: xr.Dataset, x: str) -> XAxis:
    """The x axis of ``--x``: one axis (``width``, ``model.width``) or an arithmetic
    expression of numeric axes (``hidden_layers/width``, ``(hidden_layers+2)/width``)."""
    what = f"--x {x}"
    text = str(x).strip()
    if not text:
        raise ConfigError(f"{what}: name an axis (width) or an expression of axes "
                          f"(hidden_layers/width)")
    if _AXIS_NAME.fullmatch(text):
        return XAxis((_find_axis(ds, text, what),), text, None)
    tree = _parse(text.replace("model.", "model__").replace("dataset.", "dataset__"), what)
    found = list(dict.fromkeys(n.id for n in sorted(            # in the order written
        (n for n in ast.walk(tree) if isinstance(n, ast.Name)), key=lambda n: n.col_offset)))
    if not found:
        raise ConfigError(f"{what}: the expression names no axis")
    axes = [_find_axis(ds, n.replace("__", ".", 1), what) for n in found]
    for node in ast.walk(tree):                     # the names as the axes are called
        if isinstance(node, ast.Name):
            node.id = axes[found.index(node.id)]
    for a in axes:
        if not numeric(ds, a):
            raise ConfigError(f"{what}: the axis {a} is not numeric "
                              f"({', '.join(str(v) for v in ds[a].values)})")
    out = XAxis(tuple(axes), ast.unparse(tree), tree)
    grids = np.meshgrid(*(ds[a].values for a in out), indexing="ij")
    values = out.values([g.ravel() for g in grids])
    if not np.isfinite(values).all():
        raise ConfigError(f"{what}: not finite at some axis point (a division by 0?)")
    if values.size > 1 and np.unique(values).size == 1:
        raise ConfigError(f"{what}: the same value at every axis point; a ratio needs two "
                          f"different axes")
    return out


_AXIS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


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

