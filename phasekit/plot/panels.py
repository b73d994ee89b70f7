"""The paper's panels of one sweep without axes (or one axis point of a sweep with
axes), ``docs/plotting.md``.

Panels (letters as in the paper's Figures 1-3)::

    a  training loss L_t against step t           (log scale, chosen c)
    b  theta^2_t / theta^2_0 against step t        (chosen c)
    c  eta lambda_max(H_t) against step t          (chosen c)
    d  final sharpness eta lambda_max(H_inf)      against c
    e  theta^2_inf / theta^2_0                     against c
    f  activation sparsity per layer at the stop  against c (if recorded)
    g  generalisation gap at the stop             against c (if recorded)

Against ``c`` (panels d-g) the line is the mean over the seeds whose run
converged, the band their full range; trivial and undetermined (max_steps)
runs are separate markers and diverged runs are crosses along the bottom
edge.  Every stored bound, ``c = 2`` (and ``c = 4`` when the grid reaches it)
and a stored ``c_max`` are labelled vertical lines, each in its own style.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter
from matplotlib.transforms import blended_transform_factory

from phasekit.analysis.phases import (
    VOTING,
    bound_names,
    classify,
    majority,
    phase_counts,
    require,
    tied,
)
from phasekit.errors import ConfigError, SweepFileError
from phasekit.plot.select import fixed_text
from phasekit.plot.style import (
    CRITICAL_STYLE,
    DIVERGED_STYLE,
    LAYER_COLORS,
    MEAN_COLOR,
    PHASE_COLORS,
    REFERENCE_STYLE,
    TIE_LABEL,
    TIE_STYLE,
    TRIVIAL_STYLE,
    UNDETERMINED_STYLE,
    bound_color,
    bound_dash,
    bound_label,
    c_label,
    coincident,
    legend_in,
    plain,
    rate_colors,
    title,
)

TRAJECTORY_PANELS = ("a", "b", "c")
FINAL_PANELS = ("d", "e", "f", "g")
PANELS = TRAJECTORY_PANELS + FINAL_PANELS
ALIASES = {"loss": "a", "weight_norm": "b", "sharpness": "c", "final_sharpness": "d",
           "final_weight_norm": "e", "sparsity": "f", "gap": "g",
           "generalisation_gap": "g"}
TITLES = {"a": "(a) training loss", "b": "(b) weight norm", "c": "(c) sharpness",
          "d": "(d) final sharpness", "e": "(e) final weight norm",
          "f": "(f) activation sparsity", "g": "(g) generalisation gap"}
#: the horizontal reference line of a panel: its value and legend label
LEVELS = {"c": (2.0, r"(c) $\eta\,\lambda_{\max}(H_t) = 2$: edge of stability"),
          "d": (2.0, r"(d) $\eta\,\lambda_{\max}(H_\infty) = 2$: edge of stability"),
          "e": (1.0, r"(e) $\theta^2_\infty / \theta^2_0 = 1$: norm unchanged"),
          "g": (0.0, "(g) no generalisation gap")}


# -- choosing what to draw ---------------------------------------------------------

#: a c axis whose evaluated rates span this factor or more is drawn logarithmic (a
#: geometric grid such as 1.25 ... 256 would otherwise crowd its first decade
#: into a sliver); the paper's linear grids (0.1 ... 6, a factor of 60) stay linear
LOG_C_SPAN = 100.0
#: a panel of positive values spanning this factor or more is drawn on a log y axis
#: (a run whose weight norm grew by 1e13 would otherwise flatten every other curve)
LOG_Y_SPAN = 1e3


def log_c_axis(cs: np.ndarray) -> bool:
    """Whether the rates ``cs`` are drawn on a logarithmic c axis (:data:`LOG_C_SPAN`)."""
    return bool(cs.size and cs.min() > 0 and cs.max() >= LOG_C_SPAN * cs.min())


def _log_values(values: np.ndarray) -> bool:
    """Whether positive ``values`` span :data:`LOG_Y_SPAN` or more (any value <= 0: no)."""
    values = values[np.isfinite(values)]
    return bool(values.size and values.min() > 0 and values.max() >= LOG_Y_SPAN * values.min())


def _span_edges(cs: np.ndarray, log: bool) -> np.ndarray:
    """The edges of the span each rate of ``cs`` owns on the c axis: midpoints between
    neighbours (geometric ones on a log axis), half a step beyond the ends."""
    x = np.log(cs) if log else cs
    if len(x) > 1:
        edges = np.concatenate([[x[0] - (x[1] - x[0]) / 2], (x[1:] + x[:-1]) / 2,
                                [x[-1] + (x[-1] - x[-2]) / 2]])
    else:
        edges = np.array([x[0] - (0.1 if log else 0.5), x[0] + (0.1 if log else 0.5)])
    return np.exp(edges) if log else edges


def parse_panels(panels: str | Sequence[str] | None, ds: xr.Dataset | None = None) -> list[str]:
    """Panel letters from ``"a,b,c"`` or a sequence (aliases allowed); default: a-e plus
    f and g when the sweep records what they need."""
    if panels is None:
        out = ["a", "b", "c", "d", "e"]
        if ds is not None:
            if _sparsity_name(ds):
                out.append("f")
            if _gap(ds) is not None:
                out.append("g")
        return out
    items = panels.split(",") if isinstance(panels, str) else list(panels)
    out = []
    for item in items:
        key = str(item).strip().lower()
        key = ALIASES.get(key, key)
        if key not in PANELS:
            raise ConfigError(f"unknown panel {item!r}; choose from {', '.join(PANELS)} "
                              f"(or {', '.join(sorted(ALIASES))})")
        if key not in out:
            out.append(key)
    if not out:
        raise ConfigError("no panels given; choose from " + ", ".join(PANELS))
    return out


def _sparsity_name(ds: xr.Dataset) -> str | None:
    for name in ("final_sparsity", "final_activation_sparsity"):
        if name in ds.variables:
            return name
    return None


def _gap(ds: xr.Dataset) -> tuple[xr.DataArray, str] | None:
    """The generalisation gap at the stop and its axis label: the stored observable,
    else L_test - L_train."""
    if "final_generalisation_gap" in ds.variables:
        return ds["final_generalisation_gap"], "generalisation gap"
    if "final_test_loss" in ds.variables:
        return ds["final_test_loss"] - ds["final_loss"], r"$L_{\rm test} - L_{\rm train}$"
    return None


def check_panels(ds: xr.Dataset, panels: list[str]) -> None:
    """SweepFileError naming the panel and the variable when ``ds`` lacks what a
    requested panel draws."""
    require(ds, "status", "eta_lambda0", purpose="plotting")
    needs = {"a": ["loss"], "b": ["weight_norm"], "c": ["sharpness"],
             "d": ["final_sharpness"], "e": ["final_weight_norm", "weight_norm"]}
    for p in panels:
        for var in needs.get(p, []):
            if var not in ds.variables:
                raise SweepFileError(f"panel ({p}) {TITLES[p][4:]} needs the variable '{var}', "
                                     f"which this sweep lacks")
    if "f" in panels and _sparsity_name(ds) is None:
        raise SweepFileError("panel (f) activation sparsity needs the variable "
                             "'final_sparsity' (recorded for ReLU networks), which this sweep "
                             "lacks")
    if "g" in panels and _gap(ds) is None:
        raise SweepFileError("panel (g) generalisation gap needs the variable "
                             "'final_generalisation_gap' or 'final_test_loss' (a dataset with a "
                             "test split), which this sweep lacks")
    for p in panels:
        values, _ = _trajectory_data(ds, p) if p in TRAJECTORY_PANELS else _final_values(ds, p)
        if not np.isfinite(values.values).any():
            raise SweepFileError(f"panel ({p}) {TITLES[p][4:]}: '{values.name or p}' holds no "
                                 f"finite value (every run is NaN or inf), so there is nothing "
                                 f"to draw; leave the panel out with --panels")


def choose_c(ds: xr.Dataset, c_values: Sequence[float] | None = None, count: int = 5
             ) -> list[float]:
    """Grid values of ``c`` for the trajectory panels.

    Given ``c_values``, each is replaced by the nearest stored ``c``.  Otherwise
    rates across every phase present (:func:`_phase_picks`), or, when that gives
    fewer than two, ``count`` evenly spaced values among the evaluated ones, up to
    the first ``c`` at which every seed diverged.
    """
    cs = ds["eta_lambda0"].values
    status = ds["status"].astype(str).values
    evaluated = (status != "pending").any(axis=0)
    if not evaluated.any():
        raise SweepFileError("this sweep has no evaluated run (every status is 'pending')")
    if c_values is not None:
        out = []
        for c in c_values:
            try:
                c = float(c)
            except (TypeError, ValueError):
                raise ConfigError(f"--c expects numbers, got {c!r}") from None
            idx = np.flatnonzero(evaluated)
            near = float(cs[idx[np.argmin(np.abs(cs[idx] - c))]])
            if near not in out:
                out.append(near)
        return out
    full = (status != "pending").all(axis=0)
    picks = _phase_picks(ds, status, full if full.sum() >= 2 else evaluated)
    if len(picks) >= 2:
        return picks
    idx = np.flatnonzero(evaluated)
    all_div = [i for i in idx if (status[:, i] == "diverged").all()]
    if all_div:
        idx = idx[idx <= all_div[0]]
    picks_i = np.unique(np.round(np.linspace(0, len(idx) - 1, min(count, len(idx)))).astype(int))
    return [float(cs[idx[k]]) for k in picks_i]


def _phase_picks(ds: xr.Dataset, status: np.ndarray, evaluated: np.ndarray) -> list[float]:
    """Rates across every phase present: the middle lazy c, three catapult c (a fifth,
    three fifths and all the way into the window), the first trivial, undetermined
    and all-divergent c.  A phase's candidates are the c where it is the majority
    over seeds, else where it ties for the majority (``phases.tied``), else where
    any seed is in it."""
    try:
        counts = phase_counts(classify(ds), "seed").transpose("phase", "eta_lambda0").values
    except SweepFileError:
        return []
    cols = np.flatnonzero(evaluated)
    major, _ = majority(counts)
    tie = tied(counts)
    top = counts.max(axis=0)
    picks = []
    for k, p in enumerate(VOTING):
        clear = [j for j in cols if major[j] == p and not tie[j]]
        shared = [j for j in cols if tie[j] and counts[k, j] == top[j]]
        cand = clear or shared or [j for j in cols if counts[k, j] > 0]
        if not cand:
            continue
        if p == "lazy":
            picks.append(cand[len(cand) // 2])
        elif p == "catapult":
            whole = [j for j in clear if counts[k, j] == counts[:, j].sum()]
            cand = whole or cand
            picks += [cand[int(round(f * (len(cand) - 1)))] for f in (0.2, 0.6, 1.0)]
        elif p == "divergent":
            every = [j for j in cand if (status[:, j][status[:, j] != "pending"]
                                         == "diverged").all()]
            picks.append((every or cand)[0])
        else:
            picks.append(cand[0])
    cs = ds["eta_lambda0"].values
    return [float(cs[j]) for j in sorted(set(picks))]


# -- the figure ----------------------------------------------------------------------

def draw_panels(ds: xr.Dataset, traj: list[str], final: list[str], c_values) -> Figure:
    """Trajectory panels on the first row, panels against ``c`` on the second; the
    legends in a column of their own on the right."""
    rows = [r for r in (traj, final) if r]
    ncols = max(len(r) for r in rows)
    fig = Figure(figsize=(3.2 * ncols + 3.2, 2.9 * len(rows)), layout="constrained")
    grid = fig.add_gridspec(len(rows), ncols + 1, width_ratios=[1.0] * ncols + [0.95])
    status = ds["status"].astype(str).values
    row = 0
    if traj:
        cs = choose_c(ds, c_values)
        axes = [fig.add_subplot(grid[row, k]) for k in range(len(traj))]
        handles = [_trajectory_panel(ax, ds, p, cs, status)
                   for ax, p in zip(axes, traj, strict=True)][0]
        if "c" in traj:
            handles.append(_level_line(axes[traj.index("c")], "c"))
        head = c_label(ds, spaced=False) + (": median and range over seeds"
                                          if ds.sizes["seed"] > 1 else "")
        legend_in(fig.add_subplot(grid[row, ncols]), handles, [h.get_label() for h in handles],
                  head)
        row += 1
    if final:
        axes = [fig.add_subplot(grid[row, k]) for k in range(len(final))]
        found: dict[str, object] = {}
        for ax, p in zip(axes, final, strict=True):
            _final_panel(ax, ds, p, status, found)
        for ax, p in zip(axes, final, strict=True):
            if p in LEVELS:
                line = _level_line(ax, p)
                found[line.get_label()] = line
        vlines = _vertical_lines(ds, axes)
        legend_in(fig.add_subplot(grid[row, ncols]), list(found.values()) + list(vlines.values()),
                  list(found) + list(vlines), "against c")
    seeds = ds.sizes["seed"]
    fixed = fixed_text(ds)
    fig.suptitle(f"{title(ds)}: {seeds} seed{'s' if seeds != 1 else ''}"
                 + (f" ({fixed})" if fixed else ""), fontsize=10)
    return fig


def _level_line(ax, panel: str) -> Line2D:
    """The panel's horizontal reference line (:data:`LEVELS`), labelled."""
    value, label = LEVELS[panel]
    return ax.axhline(value, label=label, **REFERENCE_STYLE["level"])


# -- trajectories against the step ---------------------------------------------------

def _trajectory_data(ds: xr.Dataset, panel: str) -> tuple[xr.DataArray, str]:
    if panel == "a":
        return ds["loss"], r"$L_t$"
    if panel == "b":
        return ds["weight_norm"] / ds["weight_norm"].isel(step=0), r"$\theta^2_t / \theta^2_0$"
    return ds["sharpness"], r"$\eta\,\lambda_{\max}(H_t)$"


def _rate_label(c: float, col: np.ndarray, run: np.ndarray) -> str:
    """``2.4``, ``4.1 (diverged)`` or ``3.3 (2 of 8 seeds diverged, not shown)``."""
    ends = set(col[run])
    n_div = int((col[run] == "diverged").sum())
    if len(ends) == 1 and ends != {"converged"}:
        return f"{c:.3g} ({plain(ends.pop())})"
    if n_div:
        return f"{c:.3g} ({n_div} of {int(run.sum())} seeds diverged, not shown)"
    return f"{c:.3g}"


def _trajectory_panel(ax, ds: xr.Dataset, panel: str, cs: list[float], status) -> list:
    data, ylabel = _trajectory_data(ds, panel)
    steps = ds["step"].values
    handles = []
    finite_ok: list[np.ndarray] = []
    last_step = 0.0
    for c, color in zip(cs, rate_colors(len(cs)), strict=True):
        j = int(np.flatnonzero(ds["eta_lambda0"].values == c)[0])
        col = status[:, j]
        run = col != "pending"
        diverged = bool((col[run] == "diverged").all())
        keep = run if diverged else run & (col != "diverged")
        vals = data.isel(eta_lambda0=j).values[keep]          # (seeds, steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mid = np.nanmedian(vals, axis=0)
            lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
        has = np.flatnonzero(np.isfinite(vals).any(axis=0))
        if has.size:
            last_step = max(last_step, float(steps[has[-1]]))
        (line,) = ax.plot(steps, mid, "--" if diverged else "-", color=color, lw=1.3,
                          label=_rate_label(c, col, run))
        if vals.shape[0] > 1:
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        if diverged:
            last = np.flatnonzero(np.isfinite(mid))
            if last.size:
                ax.plot(steps[last[-1]], mid[last[-1]], **{**DIVERGED_STYLE, "color": color})
        else:
            finite_ok.append(vals[np.isfinite(vals)])
        handles.append(line)
    _step_axis(ax, last_step)
    ax.set_ylabel(ylabel)
    ax.set_title(TITLES[panel], loc="left")
    ok = np.concatenate(finite_ok) if finite_ok else np.array([])
    _trajectory_ylim(ax, panel, ok)
    return handles


def _step_axis(ax, last_step: float) -> None:
    """Linear up to step 10, logarithmic beyond (symlog), with a labelled tick on every
    decade (``0, 10, 100, ...``; also at 2 and 5 times a decade when the axis spans
    less than two) and minor ticks between."""
    right = max(last_step * 1.5, 10.0)
    ax.set_xscale("symlog", linthresh=10, linscale=0.8)
    ax.set_xlim(0, right)
    decades = range(1, int(math.floor(math.log10(right))) + 1)
    steps = (1, 2, 5) if len(decades) < 2 else (1,)
    major = [m * 10.0 ** k for k in decades for m in steps if m * 10.0 ** k <= right]
    ax.xaxis.set_major_locator(FixedLocator([0.0] + major))
    ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
    ax.xaxis.set_minor_locator(FixedLocator(
        [m * 10.0 ** k for k in decades for m in range(2, 10)
         if m not in steps and m * 10.0 ** k <= right]))
    ax.set_xlabel(r"step $t$")


def _step_label(value: float, _pos=None) -> str:
    """``0``, ``10``, ``200``, ``5000``, then ``10^4``, ``10^5`` ... on the step axis."""
    if value < 1e4:
        return f"{value:.0f}"
    k = math.floor(math.log10(value) + 1e-9)
    m = round(value / 10.0 ** k)
    return f"${m} \\times 10^{{{k}}}$" if m != 1 else f"$10^{{{k}}}$"


def _trajectory_ylim(ax, panel: str, ok: np.ndarray) -> None:
    """The y range of the runs that did not diverge (diverging curves leave the top)."""
    if panel == "a":
        ax.set_yscale("log")
        pos = ok[ok > 0]
        if pos.size:
            ax.set_ylim(max(pos.min() / 3, 1e-300), pos.max() * 30)
        return
    if _log_values(ok):
        ax.set_yscale("log")
        lo, hi = float(ok.min()), float(ok.max())
        if panel == "c":
            lo, hi = min(lo, 2.0), max(hi, 2.0)
        ax.set_ylim(lo / 3, hi * 3)
        return
    if ok.size:
        lo, hi = float(ok.min()), float(ok.max())
        if panel == "c":
            lo, hi = min(lo, 2.0), max(hi, 2.0)
        pad = 0.08 * (hi - lo if hi > lo else abs(hi) or 1.0)
        ax.set_ylim(lo - pad, hi + pad)


# -- final values against c ----------------------------------------------------------

def _final_values(ds: xr.Dataset, panel: str) -> tuple[xr.DataArray, str]:
    if panel == "d":
        return ds["final_sharpness"], r"$\eta\,\lambda_{\max}(H_\infty)$"
    if panel == "e":
        return (ds["final_weight_norm"] / ds["weight_norm"].isel(step=0),
                r"$\theta^2_\infty / \theta^2_0$")
    if panel == "f":
        return ds[_sparsity_name(ds)], "fraction of inactive units"
    return _gap(ds)


def _shade_phases(ax, ds: xr.Dataset, handles: dict) -> None:
    """Shade the c axis by the majority phase over seeds (docs/phases.md), hatched
    where the seeds tie: each evaluated c owns the span to the midpoints of its
    neighbours."""
    cs = ds["eta_lambda0"].values
    counts = phase_counts(classify(ds), "seed").transpose("phase", "eta_lambda0").values
    major, _ = majority(counts)
    tie = tied(counts)
    edges = _span_edges(cs, ax.get_xscale() == "log")
    for j, name in enumerate(major):
        if tie[j]:
            ax.axvspan(edges[j], edges[j + 1], lw=0, zorder=0, **TIE_STYLE)
            handles.setdefault(TIE_LABEL, Patch(lw=0, **TIE_STYLE))
        elif name in PHASE_COLORS:
            ax.axvspan(edges[j], edges[j + 1], color=PHASE_COLORS[name], alpha=0.55, lw=0,
                       zorder=0)
            handles.setdefault(f"phase: {name}", Patch(facecolor=PHASE_COLORS[name],
                                                       alpha=0.55, lw=0))


def _final_series(ds: xr.Dataset, values: xr.DataArray
                  ) -> tuple[list, xr.DataArray, list[str]]:
    """``[(label, values(seed, c), colour)]``: one series, or one per layer (a layer
    that does not exist at this axis point is left out); the values kept and their
    extra dimension, if any."""
    extra = [d for d in values.dims if d not in ("seed", "eta_lambda0")]
    if extra:            # a layer that does not exist at this axis point is all NaN
        present = np.isfinite(values.transpose(extra[0], ...).values)
        present = present.reshape(present.shape[0], -1).any(axis=1)
        if present.any():
            values = values.isel({extra[0]: np.flatnonzero(present)})
    if extra and values.sizes[extra[0]] == 1:    # one layer: no per-layer legend entries
        values = values.isel({extra[0]: 0})
        extra = []
    if extra:                                    # e.g. sparsity per layer
        dim = extra[0]
        return [(plain(f"{dim} {values[dim].values[k]}"),
                 values.isel({dim: k}).transpose("seed", "eta_lambda0").values,
                 LAYER_COLORS[k % len(LAYER_COLORS)])
                for k in range(values.sizes[dim])], values, extra
    label = "mean over converged seeds" if ds.sizes["seed"] > 1 else "converged"
    return [(label, values.transpose("seed", "eta_lambda0").values, MEAN_COLOR)], values, extra


def _final_panel(ax, ds: xr.Dataset, panel: str, status, handles: dict) -> None:
    values, ylabel = _final_values(ds, panel)
    cs = ds["eta_lambda0"].values
    evaluated = (status != "pending").any(axis=0)
    span = cs[evaluated] if evaluated.any() else cs
    _c_axis(ax, span)
    if "loss" in ds.variables and "final_loss" in ds.variables:
        _shade_phases(ax, ds, handles)
    series, values, extra = _final_series(ds, values)
    conv = status == "converged"
    # Columns every seed ran make the mean line; points only some seeds ran (a
    # boundary search refines each seed on its own) are drawn as single dots.
    full = (status != "pending").all(axis=0)
    partial = ~full & (status != "pending").any(axis=0)
    for label, vals, color in series:
        vals = np.where(conv, vals, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(vals[:, full], axis=0)
            lo, hi = np.nanmin(vals[:, full], axis=0), np.nanmax(vals[:, full], axis=0)
        (line,) = ax.plot(cs[full], mean, "-", marker=".", color=color, lw=1.3, ms=4)
        handles.setdefault(label, line)
        if ds.sizes["seed"] > 1:
            band = ax.fill_between(cs[full], lo, hi, color=color, alpha=0.2, lw=0)
            handles.setdefault("range over seeds", band)
        s_idx, c_idx = np.nonzero(np.isfinite(vals) & partial[None, :])
        if s_idx.size:
            (dots,) = ax.plot(cs[c_idx], vals[s_idx, c_idx], ".", color=color, ms=4, alpha=0.6)
            handles.setdefault("single seed (refined c)", dots)
    _status_markers(ax, values, extra, cs, status, handles)
    if panel == "f":
        ax.set_ylim(-0.02, 1.02)
    elif _log_values(_drawn(values, extra, status)):
        ax.set_yscale("log")
    ax.set_xlabel(c_label(ds))
    ax.set_ylabel(ylabel)
    ax.set_title(TITLES[panel], loc="left")


def _drawn(values: xr.DataArray, extra: list[str], status: np.ndarray) -> np.ndarray:
    """The values a panel against c draws at their height: every run that ran and did
    not diverge (diverged runs are marked along the bottom edge)."""
    flat = values.transpose("seed", "eta_lambda0", *extra).values
    shown = (status != "diverged") & (status != "pending")
    return flat[shown].ravel()


def _c_axis(ax, span: np.ndarray) -> None:
    """The c axis of a panel against c: over the evaluated rates ``span`` with a 3 %
    margin, logarithmic (with plain-number ticks) where they span
    :data:`LOG_C_SPAN` or more."""
    if log_c_axis(span):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        margin = (span.max() / span.min()) ** 0.03
        ax.set_xlim(span.min() / margin, span.max() * margin)
        return
    pad = 0.03 * (span.max() - span.min() if span.max() > span.min() else 1.0)
    ax.set_xlim(span.min() - pad, span.max() + pad)


def _status_markers(ax, values: xr.DataArray, extra: list[str], cs: np.ndarray, status,
                    handles: dict) -> None:
    """Trivial and undetermined runs at their values; a cross along the bottom edge at
    every c where any seed diverged."""
    flat = values.transpose("seed", "eta_lambda0", *extra).values
    if extra:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            flat = np.nanmean(flat, axis=tuple(range(2, flat.ndim)))
    for name, style, stat in (("trivial (dead network)", TRIVIAL_STYLE, "trivial"),
                              ("max_steps (undetermined)", UNDETERMINED_STYLE, "max_steps")):
        s_idx, c_idx = np.nonzero(status == stat)
        ok = np.isfinite(flat[s_idx, c_idx])
        if ok.any():
            (h,) = ax.plot(cs[c_idx[ok]], flat[s_idx, c_idx][ok], **style)
            handles.setdefault(name, h)
    div = (status == "diverged").any(axis=0)
    if div.any():
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        (h,) = ax.plot(cs[div], np.full(int(div.sum()), 0.02), transform=trans, clip_on=False,
                       **DIVERGED_STYLE)
        handles.setdefault("diverged (any seed)", h)


def _vertical_lines(ds: xr.Dataset, axes) -> dict[str, object]:
    """Vertical reference lines at c = 2, c = 4 (when in range), each bound (bounds
    with equal values share one line and one label) and a boundary file's c_max,
    each in its own colour and line style; ``{legend label: handle}``."""
    lo, hi = axes[0].get_xlim()
    seed_mean = ", seed mean" if ds.sizes["seed"] > 1 else ""
    lines: list[tuple[str, float, dict]] = [(r"$c = 2$", 2.0, REFERENCE_STYLE["c2"])]
    if hi >= 4.0:
        lines.append((r"$c = 4$", 4.0, REFERENCE_STYLE["c4"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # NaN: not applicable here
        means = {b: [float(np.nanmean(ds[f"bound_{b}"].values))] for b in bound_names(ds)}
    for group in coincident(means):
        style = {"color": bound_color(ds, group[0]), "ls": bound_dash(ds, group[0]), "lw": 1.1}
        lines.append((bound_label(ds, group) + seed_mean, means[group[0]][0], style))
    if ("c_max" in ds.variables and "boundary_tol" in ds.attrs
            and np.isfinite(ds["c_max"].values.astype(float)).any()):
        lines.append((r"$c_{\max}$ (boundary search" + (seed_mean + ")" if seed_mean else ")"),
                      float(np.nanmean(ds["c_max"].values.astype(float))),
                      {**REFERENCE_STYLE["c_max"], "color": CRITICAL_STYLE["c_max"]["color"]}))
    out: dict[str, object] = {}
    for label, x, style in lines:
        inside = lo <= x <= hi
        text = label if label.startswith("$c =") else f"{label} = {x:.3g}"
        text += "" if inside else " (off the axis)"
        for ax in axes:
            if inside:
                ax.axvline(x, label=text, **style)
        out[text] = Line2D([], [], label=text, **style)
    return out
