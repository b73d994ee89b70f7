"""The 2-D phase diagram of a sweep with axes (``docs/plotting.md``): x = one axis or
a ratio of two (``x="hidden_layers/width"``), y = ``c``; cells coloured by the
majority phase over seeds (hatched on a tie), the critical learning rates
``c_loss``, ``c_sharp``, ``c_max`` (and ``c_trivial``) as the file holds them, with
their spread over seeds, and every bound per axis point.  Every other axis gets a
panel per value.  With ``average="seeds"`` the curves are the critical rates of the
seed-averaged trajectories (one value per point) and the cells the regime of those
trajectories (:mod:`phasekit.analysis.averaged`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr
from matplotlib.collections import PatchCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from phasekit.analysis.averaged import mean_phase, stored_seed_averaged
from phasekit.analysis.phases import (
    VOTING,
    bound_names,
    classify,
    majority,
    phase_counts,
    stored_critical,
    tied,
)
from phasekit.plot.select import axes_text, fixed_text, geometric, numeric
from phasekit.plot.style import (
    CRITICAL_STYLE,
    MEAN_CELLS,
    MEAN_CRITICAL_LABELS,
    MEAN_TIE_LABEL,
    PHASE_COLORS,
    TIE_LABEL,
    TIE_STYLE,
    bound_color,
    bound_label,
    c_label,
    coincident,
    legend_in,
    plain,
    title,
)

LEGEND_GROUPS = ("phase", "disagree", "critical", "family", "bound")
FAMILY_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
SEEDS_DISAGREE = "seeds disagree (majority shown)"
POINTS_DISAGREE = "points at this x disagree (pooled)"
#: points that share an x value are spread over this middle part of their cell
SPREAD = 0.6


@dataclass
class _Points:
    """The axis points of one panel, stacked: ``x`` per point, the distinct x values
    ``ux`` (a cell each) and each point's cell ``group``, the drawn position ``xd``
    (points sharing a cell spread across it), the families of points joined by a
    line (one per value of a ratio's numerator), and the scales."""
    x: np.ndarray
    values: list[np.ndarray]
    ux: np.ndarray
    group: np.ndarray
    xd: np.ndarray
    families: list[np.ndarray]
    family_values: list
    categorical: bool
    log_x: bool
    log_y: bool


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted ``values``: midpoints (geometric on a log scale)."""
    v = np.log(values) if log else np.asarray(values, dtype=float)
    if v.size == 1:
        half = 0.35 if log else max(0.5 * abs(v[0]), 0.5)
        e = np.array([v[0] - half, v[0] + half])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])
    return np.exp(e) if log else e


def _groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``x`` (equal within 1e-9 relative) and each point's group."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.ones(len(xs), dtype=bool)
    new[1:] = ~np.isclose(xs[1:], xs[:-1], rtol=1e-9, atol=0.0)
    group = np.empty(len(x), dtype=int)
    group[order] = np.cumsum(new) - 1
    return xs[new], group


def _spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, minimum and maximum over the last axis, ignoring NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.nanmedian(values, axis=-1), np.nanmin(values, axis=-1),
                np.nanmax(values, axis=-1))


def _drawn_x(ux: np.ndarray, group: np.ndarray, log: bool) -> np.ndarray:
    """Where each point is drawn: at its x, or, when several points share a cell (1/64
    and 2/128; every width at depth 0), evenly across the middle :data:`SPREAD` of
    the cell, in the order of the points."""
    edges = _edges(ux, log)
    scale = np.log if log else np.asarray
    lo, hi = scale(edges[:-1]), scale(edges[1:])
    out = ux[group].astype(float)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if members.size > 1:
            t = 0.5 + SPREAD * ((np.arange(members.size) + 0.5) / members.size - 0.5)
            pos = lo[g] + t * (hi[g] - lo[g])
            out[members] = np.exp(pos) if log else pos
    return out


def _points(ds: xr.Dataset, x_axes: tuple[str, ...], ylog: bool) -> _Points:
    cs = ds["eta_lambda0"].values
    P = int(np.prod([ds.sizes[a] for a in x_axes]))
    grids = np.meshgrid(*(ds[a].values for a in x_axes), indexing="ij")
    values = [g.ravel() for g in grids]                        # per point, each x axis
    expression = getattr(x_axes, "expression", None)
    categorical = expression is None and not numeric(ds, x_axes[0])
    if categorical:
        x = np.arange(P, dtype=float)
    elif expression is None:
        x = values[0].astype(float)
    else:
        x = x_axes.values(values)
    if expression is None:
        log_x = not categorical and geometric(x)
    else:                # an expression (k/w): a log scale where it spans a decade
        log_x = bool((x > 0).all()) and float(x.max()) >= 10 * float(x.min())
    ux, group = _groups(x)
    # families of points joined by lines: all points, or one per value of the numerator
    family_of, family_values = (values[0], list(ds[x_axes[0]].values)) if len(x_axes) > 1 \
        else (np.zeros(P), [0])
    families = [np.flatnonzero(family_of == v) for v in family_values]
    families = [idx[np.argsort(x[idx], kind="stable")] for idx in families]
    return _Points(x, values, ux, group, _drawn_x(ux, group, log_x), families, family_values,
                   categorical, log_x, ylog or geometric(cs))


def diagram(ds: xr.Dataset, x_axes: tuple[str, ...], axes: list[str], *,
            average: str | None = None, ylog: bool = False) -> Figure:
    """The 2-D phase diagram: one panel per value of the axes not on x, and a legend in
    the free slot of an incomplete last row, else below the panels.  ``average="seeds"``:
    of the seed-averaged trajectories; ``ylog``: c on a log axis (else only for a
    geometric grid of c)."""
    others = [a for a in axes if a not in x_axes]
    if average:                                   # one value per point: no seed axis
        crit = stored_seed_averaged(ds)
        counts = phase_counts(mean_phase(ds, crit.attrs), [])
    else:
        crit = stored_critical(ds)
        counts = phase_counts(classify(ds), "seed")           # (phase, *axes, c)
    shown = [q for q in CRITICAL_STYLE if q in crit and np.isfinite(crit[q].values).any()]
    combos = list(np.ndindex(*(ds.sizes[a] for a in others)))
    n = len(combos)
    ncols = n if n <= 3 else 2 if n == 4 else 4 if n % 4 == 0 and n % 3 else 3
    nrows = math.ceil(n / ncols)
    free = nrows * ncols - n
    fig = Figure(figsize=(max(3.6 * ncols, 0.0 if free else 6.6), 3.4 * nrows + 0.4),
                 layout="constrained")
    grid = fig.add_gridspec(nrows, ncols)
    handles: dict[str, dict[str, object]] = {g: {} for g in LEGEND_GROUPS}
    panels = []
    for k, combo in enumerate(combos):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        where = dict(zip(others, combo, strict=True))
        _panel(ax, ds.isel(where), counts.isel(where), crit.isel(where), x_axes, shown,
               handles, ylog)
        if others:
            ax.set_title(plain(", ".join(f"{a} = {ds[a].values[i]}"
                                         for a, i in where.items())), loc="left")
        panels.append(ax)
    for ax in panels[1:]:
        ax.sharey(panels[0])
    head = (MEAN_CELLS if average else "cells: majority phase over seeds") + (
        ("\n" if free else "; ") + ("curves: critical rates of the seed-averaged "
                                    "trajectories" if average else
                                    "curves: median, bars: range over seeds")
        if shown else "")
    handles["phase"] = {MEAN_TIE_LABEL if average and p == TIE_LABEL else p:
                        handles["phase"][p] for p in (*VOTING, TIE_LABEL)
                        if p in handles["phase"]}
    entries = [(label, h) for g in LEGEND_GROUPS for label, h in handles[g].items()]
    if free:
        legend_in(fig.add_subplot(grid[nrows - 1, ncols - free:]), [h for _, h in entries],
                  [label for label, _ in entries], head)
    else:
        fig.legend([h for _, h in entries], [label for label, _ in entries], title=head,
                   loc="outside lower center", ncols=max(3, int(fig.get_figwidth() // 2.2)),
                   frameon=False, alignment="left", fontsize=7.5, title_fontsize=8,
                   handlelength=1.6, columnspacing=1.2, labelspacing=0.3)
    fixed = fixed_text(ds)
    seeds = ds.sizes["seed"]
    what = "phase diagram of the seed-averaged trajectories, " if average else "phase diagram, "
    fig.suptitle(f"{title(ds)}: {what}{seeds} seed{'s' if seeds != 1 else ''}"
                 + (f" ({fixed})" if fixed else ""), fontsize=10)
    return fig


def _panel(ax, ds: xr.Dataset, counts: xr.DataArray, crit: xr.Dataset,
           x_axes: tuple[str, ...], shown: list[str], handles: dict[str, dict],
           ylog: bool) -> None:
    """One panel: the points of ``x_axes`` over x, c over y (seed-averaged rates,
    without a seed axis: no seed disagreement to mark)."""
    pts = _points(ds, x_axes, ylog)
    cs = ds["eta_lambda0"].values
    per_point = counts.transpose("phase", *x_axes, "eta_lambda0").values.reshape(
        len(VOTING), len(pts.x), len(cs))
    _cells(ax, pts, cs, per_point, handles)
    _marks(ax, pts, cs, per_point, ds.sizes["seed"] if "seed" in crit.dims else 1, handles)
    for q in shown:
        _critical_curve(ax, pts, crit, q, x_axes, handles)
    if len(pts.families) > 1:
        for f, v in enumerate(pts.family_values):
            handles["family"].setdefault(plain(f"{x_axes[0]} = {v}"),
                                         Line2D([], [], color="0.3", lw=1.3,
                                                ls=FAMILY_STYLES[f % len(FAMILY_STYLES)]))
    _bounds(ax, ds, pts, cs, x_axes, handles)
    _frame(ax, ds, pts, cs, x_axes)


def _cells(ax, pts: _Points, cs: np.ndarray, per_point: np.ndarray, handles) -> None:
    """Each (x, c) cell coloured by the majority phase of its runs (points sharing an x
    pooled), hatched on a tie.  A ``c`` that a column did not evaluate (a boundary
    search refines each point on its own) takes the phase of the nearest evaluated
    ``c`` of that column; a column without any evaluated run stays white."""
    member = (pts.group[None, :] == np.arange(len(pts.ux))[:, None]).astype(float)
    pooled = np.einsum("gp,kpc->kgc", member, per_point)      # (phase, x, c)
    pooled = _fill_unevaluated(pooled, np.log(cs) if pts.log_y else cs)
    major, _ = majority(pooled)                                 # (x, c)
    tie = tied(pooled)
    code = np.full(major.shape, np.nan)
    for i, name in enumerate(VOTING):
        code[(major == name) & ~tie] = i
    x_edges, c_edges = _edges(pts.ux, pts.log_x), _edges(cs, pts.log_y)
    ax.pcolormesh(x_edges, c_edges, np.ma.masked_invalid(code.T),
                  cmap=ListedColormap([PHASE_COLORS[p] for p in VOTING]), vmin=-0.5,
                  vmax=len(VOTING) - 0.5, shading="flat", edgecolors="none")
    for name in VOTING:
        if ((major == name) & ~tie).any():
            handles["phase"].setdefault(name, Patch(facecolor=PHASE_COLORS[name],
                                                    edgecolor="0.6", lw=0.5))
    gi, ci = np.nonzero(tie)
    if gi.size:
        boxes = [Rectangle((x_edges[g], c_edges[c]), x_edges[g + 1] - x_edges[g],
                           c_edges[c + 1] - c_edges[c]) for g, c in zip(gi, ci, strict=True)]
        ax.add_collection(PatchCollection(boxes, lw=0, zorder=1.5, **TIE_STYLE))
        handles["phase"].setdefault(TIE_LABEL, Patch(lw=0, **TIE_STYLE))


def _fill_unevaluated(pooled: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``pooled`` (phase, x, c) with every all-zero cell of a column that has evaluated
    cells replaced by the counts of the nearest evaluated cell (in ``y``)."""
    out = pooled.copy()
    ran = pooled.sum(axis=0) > 0                                # (x, c)
    for g in np.flatnonzero(ran.any(axis=1) & ~ran.all(axis=1)):
        have = np.flatnonzero(ran[g])
        for c in np.flatnonzero(~ran[g]):
            out[:, g, c] = pooled[:, g, have[np.argmin(np.abs(y[have] - y[c]))]]
    return out


def _marks(ax, pts: _Points, cs: np.ndarray, per_point: np.ndarray, seeds: int,
           handles) -> None:
    """A dot where the seeds of a point disagree (only with more than one seed), a
    hollow diamond where points pooled into one cell differ in their majority."""
    cells = len(pts.ux)
    if seeds > 1:
        split = (per_point > 0).sum(axis=0) > 1                 # (point, c)
        gi, ci = np.nonzero(np.array([split[pts.group == g].any(axis=0) for g in range(cells)]))
        if gi.size:
            (dots,) = ax.plot(pts.ux[gi], cs[ci], linestyle="none", marker="o", ms=2.2,
                              color="0.15")
            handles["disagree"].setdefault(SEEDS_DISAGREE, dots)
    major, _ = majority(per_point)                              # (point, c)
    differ = np.zeros((cells, len(cs)), dtype=bool)
    for g in range(cells):
        m = major[pts.group == g]
        for c in range(len(cs)):
            differ[g, c] = len(set(m[:, c]) - {"pending"}) > 1
    gi, ci = np.nonzero(differ)
    if gi.size:
        (marks,) = ax.plot(pts.ux[gi], cs[ci], linestyle="none", marker="D", ms=3.2,
                           mfc="none", mew=0.7, color="0.25")
        handles["disagree"].setdefault(POINTS_DISAGREE, marks)


def _critical_label(crit: xr.Dataset, q: str) -> str:
    var = crit[q]
    window = var.attrs.get("early_window", crit.attrs.get("early_window", "?"))
    label = (MEAN_CRITICAL_LABELS[q] if "seed" not in var.dims
             else CRITICAL_STYLE[q]["label"]).replace("{W}", str(window))
    drop = var.attrs.get("sharpness_drop", crit.attrs.get("sharpness_drop", 0.05))
    rise = var.attrs.get("loss_rise", crit.attrs.get("loss_rise", 0.0))
    return label.replace("{drop}", f">{100 * float(drop):g}%").replace(
        "{rise}", f"{1 + float(rise):g}")


def _critical_curve(ax, pts: _Points, crit: xr.Dataset, q: str, x_axes: tuple[str, ...],
                    handles) -> None:
    """The median over seeds of ``q`` with its range as error bars, one line per family,
    drawn at the points' positions; a rate without a seed axis (seed-averaged) as it is,
    without bars."""
    style = CRITICAL_STYLE[q]
    per_seed = "seed" in crit[q].dims
    v = crit[q].transpose(*x_axes, *(["seed"] if per_seed else [])).values.reshape(
        len(pts.x), -1)
    mid, lo, hi = _spread(v)
    err = np.nan_to_num(np.vstack([mid - lo, hi - mid])) if per_seed else None
    label = _critical_label(crit, q)
    for f, idx in enumerate(pts.families):
        if not np.isfinite(mid[idx]).any():
            continue
        bars = ax.errorbar(pts.xd[idx], mid[idx], yerr=None if err is None else err[:, idx],
                           color=style["color"],
                           marker=style["marker"], ms=4.5, lw=1.3, capsize=2.0,
                           elinewidth=0.9, ls=FAMILY_STYLES[f % len(FAMILY_STYLES)], zorder=3)
        handles["critical"].setdefault(label, bars.lines[0] if f == 0 else Line2D(
            [], [], color=style["color"], marker=style["marker"], ms=4.5, lw=1.3))


def _bounds(ax, ds: xr.Dataset, pts: _Points, cs: np.ndarray, x_axes: tuple[str, ...],
            handles) -> None:
    """Each bound as a bar at each axis point (its mean over seeds), joined within a
    family; bounds equal at every point are drawn once, with one label naming each."""
    lo_c, hi_c = _edges(cs, pts.log_y)[[0, -1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # NaN: not applicable here
        means = {b: np.nanmean(ds[f"bound_{b}"].transpose(*x_axes, "seed").values
                               .reshape(len(pts.x), -1), axis=-1) for b in bound_names(ds)}
    for k, group in enumerate(coincident(means)):
        v = means[group[0]]
        color = bound_color(ds, group[0])
        # later bounds get shorter, thinner bars, so that close bounds stay visible
        bar = {"marker": "_", "ms": max(14.0 - 3.0 * k, 5.0), "mew": max(2.6 - 0.5 * k, 1.1)}
        for idx in pts.families:
            ax.plot(pts.xd[idx], v[idx], color=color, lw=0.9, ls=(0, (4, 2)),
                    zorder=2.5 + 0.01 * k, **bar)
        inside = np.isfinite(v) & (v >= lo_c) & (v <= hi_c)
        label = bound_label(ds, group) + ("" if inside.any() else " (off the axis)")
        handles["bound"].setdefault(label, Line2D([], [], color=color, lw=0.9, ls=(0, (4, 2)),
                                                  **bar))


def tick_label(value: float) -> str:
    """An x value as a reader writes it: ``256``, ``1/128`` (a ratio such as depth over
    width is the reciprocal of a whole number), else three significant digits."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e7:
        return f"{value:.0f}"
    if 0 < value < 1 and abs(1 / value - round(1 / value)) < 1e-9 * (1 / value):
        return f"1/{round(1 / value)}"
    return f"{value:.3g}"


def _frame(ax, ds: xr.Dataset, pts: _Points, cs: np.ndarray, x_axes: tuple[str, ...]) -> None:
    """Scales, limits, ticks at the x values (up to 12, or 6 for a ratio) and labels."""
    ax.set_xscale("log" if pts.log_x else "linear")
    ax.set_yscale("log" if pts.log_y else "linear")
    x_edges = _edges(pts.ux, pts.log_x)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(*_edges(cs, pts.log_y)[[0, -1]])
    if pts.categorical:
        ax.xaxis.set_major_locator(FixedLocator(pts.ux))
        ax.set_xticklabels([plain(v) for v in pts.values[0]])
    elif len(pts.ux) <= (12 if len(x_axes) == 1 else 6):     # ratios crowd: default ticks
        ax.xaxis.set_major_locator(FixedLocator(pts.ux))
        ax.xaxis.set_minor_locator(NullLocator())
        labels = [tick_label(v) for v in pts.ux]
        ax.set_xticklabels(labels, rotation=45 if max(map(len, labels)) > 5 else 0)
    if pts.log_y:                                   # 0.5, 1, 2, 5, 10, 20, ... as numbers
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    label = (plain(axes_text(ds, list(x_axes))) if getattr(x_axes, "expression", None) is None
             else plain(x_axes.text))
    ax.set_xlabel(label)
    ax.set_ylabel(c_label(ds))
