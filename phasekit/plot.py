"""The paper's figure panels, drawn from a stored sweep (``docs/plotting.md``).

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
and a stored ``c_max`` are labelled dashed vertical lines.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so
nothing is ever shown and no display is needed; the Agg backend is selected
when nothing else chose one.  Saved files are deterministic: no dates in
PDF/SVG metadata and a fixed SVG hash salt.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # headless; a notebook's own backend is left alone

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from .options import ConfigError  # noqa: E402
from .phases import bound_names, require  # noqa: E402
from .storage import SweepFileError  # noqa: E402

TRAJECTORY_PANELS = ("a", "b", "c")
FINAL_PANELS = ("d", "e", "f", "g")
PANELS = TRAJECTORY_PANELS + FINAL_PANELS
ALIASES = {"loss": "a", "weight_norm": "b", "sharpness": "c", "final_sharpness": "d",
           "final_weight_norm": "e", "sparsity": "f", "gap": "g",
           "generalisation_gap": "g"}
TITLES = {"a": "(a) training loss", "b": "(b) weight norm", "c": "(c) sharpness",
          "d": "(d) final sharpness", "e": "(e) final weight norm",
          "f": "(f) activation sparsity", "g": "(g) generalisation gap"}
FORMATS = (".png", ".pdf", ".svg")
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "phasekit",
    "savefig.dpi": 150, "figure.dpi": 100, "path.simplify": False,
}
METADATA = {".png": {"Software": "phasekit"}, ".svg": {"Date": None, "Creator": "phasekit"},
            ".pdf": {"CreationDate": None, "ModDate": None, "Creator": "phasekit",
                     "Producer": "phasekit"}}
DIVERGED_STYLE = {"marker": "x", "color": "#d62728", "linestyle": "none", "markersize": 6}
TRIVIAL_STYLE = {"marker": "v", "color": "#9467bd", "linestyle": "none", "markersize": 6}
UNDETERMINED_STYLE = {"marker": "o", "markerfacecolor": "none", "color": "#ff7f0e",
                      "linestyle": "none", "markersize": 6}
MEAN_COLOR = "#1f3b73"
DASHES = ("--", (0, (6, 2)), (0, (3, 2)), (0, (8, 2, 2, 2)), (0, (4, 4)))
LAYER_COLORS = (MEAN_COLOR, "#2a9d8f", "#e9c46a", "#8d99ae", "#6a4c93")
VLINE_COLORS = ("#2ca02c", "#e377c2", "#17becf", "#bcbd22", "#8c564b", "#7f7f7f")


# -- choosing what to draw ---------------------------------------------------------

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
    """The generalisation gap at the stop: the stored observable, else L_test - L_train."""
    if "final_generalisation_gap" in ds.variables:
        da = ds["final_generalisation_gap"]
        return da, da.attrs.get("long_name", "generalisation gap")
    if "final_test_loss" in ds.variables:
        return ds["final_test_loss"] - ds["final_loss"], r"$L_{\rm test} - L_{\rm train}$"
    return None


def _check(ds: xr.Dataset, panels: list[str]) -> None:
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


def choose_c(ds: xr.Dataset, c_values: Sequence[float] | None = None, count: int = 5
             ) -> list[float]:
    """Grid values of ``c`` for the trajectory panels.

    Given ``c_values``, each is replaced by the nearest stored ``c``.  Otherwise
    ``count`` evenly spaced values among the evaluated ones, up to the first
    ``c`` at which every seed diverged.
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
    """One lazy c (the middle one), three catapult c (a fifth, three fifths and all the way
    into the window), the first trivial and the first all-divergent c, by majority phase."""
    from .phases import PHASES, classify

    try:
        phase = classify(ds).values
    except SweepFileError:
        return []
    cs = ds["eta_lambda0"].values
    major = {}
    for j in np.flatnonzero(evaluated):
        col = [p for p in phase[:, j] if p != "pending"]
        major[j] = max(PHASES, key=lambda p: (col.count(p), -PHASES.index(p)))
    lazy = [j for j, p in major.items() if p == "lazy"]
    cat = [j for j, p in major.items() if p == "catapult"
           and (phase[:, j][phase[:, j] != "pending"] == "catapult").all()]
    cat = cat or [j for j, p in major.items() if p == "catapult"]
    picks = []
    if lazy:
        picks.append(lazy[len(lazy) // 2])
    if cat:
        picks += [cat[int(round(f * (len(cat) - 1)))] for f in (0.2, 0.6, 1.0)]
    for target in ("trivial", "divergent"):
        hits = [j for j, p in major.items() if p == target
                and (target != "divergent" or (status[:, j] == "diverged").all())]
        if hits:
            picks.append(hits[0])
    return [float(cs[j]) for j in sorted(set(picks))]


# -- drawing -------------------------------------------------------------------------

def plot_sweep(ds: xr.Dataset, panels: str | Sequence[str] | None = None,
               c_values: Sequence[float] | None = None, path: str | os.PathLike | None = None,
               ) -> Figure:
    """Draw ``panels`` of a stored sweep; save to ``path`` (.png, .pdf or .svg) if given.

    Raises :class:`~phasekit.storage.SweepFileError` when ``ds`` is not a
    phasekit sweep or lacks a variable a requested panel needs, and
    :class:`~phasekit.options.ConfigError` for an unknown panel or file type.
    """
    require(ds, "status", purpose="plotting")
    chosen = parse_panels(panels, ds)
    _check(ds, chosen)
    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot write {path}: the figure file must end in "
                          f"{', '.join(FORMATS)}")
    traj = [p for p in chosen if p in TRAJECTORY_PANELS]
    final = [p for p in chosen if p in FINAL_PANELS]
    with matplotlib.rc_context(STYLE):
        fig = _draw(ds, traj, final, c_values)
        if path is not None:
            save(fig, path)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Save deterministically (fixed metadata, no dates)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"cannot write {path}: the figure file must end in "
                          f"{', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        fig.savefig(path, metadata=METADATA[suffix])
    return path


def _draw(ds: xr.Dataset, traj: list[str], final: list[str], c_values) -> Figure:
    rows = [r for r in (traj, final) if r]
    ncols = max(len(r) for r in rows)
    fig = Figure(figsize=(3.2 * ncols + 3.2, 2.9 * len(rows)), layout="constrained")
    # The last column holds the legends, so that they never cover data.
    grid = fig.add_gridspec(len(rows), ncols + 1, width_ratios=[1.0] * ncols + [0.95])
    status = ds["status"].astype(str).values
    row = 0
    if traj:
        cs = choose_c(ds, c_values)
        axes = [fig.add_subplot(grid[row, k]) for k in range(len(traj))]
        handles = [_trajectory_panel(ax, ds, p, cs, status)
                   for ax, p in zip(axes, traj, strict=True)][0]
        title = r"$c=\eta\,\lambda_0$" + (": median and range over seeds"
                                           if ds.sizes["seed"] > 1 else "")
        _legend(fig.add_subplot(grid[row, ncols]), handles, [h.get_label() for h in handles],
                title)
        row += 1
    if final:
        axes = [fig.add_subplot(grid[row, k]) for k in range(len(final))]
        found: dict[str, object] = {}
        for ax, p in zip(axes, final, strict=True):
            _final_panel(ax, ds, p, status, found)
        vlines = _vertical_lines(ds, axes)
        _legend(fig.add_subplot(grid[row, ncols]), list(found.values()) + list(vlines.values()),
                list(found) + list(vlines), "against c")
    seeds = ds.sizes["seed"]
    data = ds.attrs.get("dataset_source_title", ds.attrs.get("dataset", "?"))
    fig.suptitle(f"{ds.attrs.get('model', '?')} on {data}: "
                 f"{seeds} seed{'s' if seeds != 1 else ''}", fontsize=10)
    return fig


def _legend(ax, handles, labels, title: str) -> None:
    ax.set_axis_off()
    ax.legend(handles, labels, loc="upper left", borderaxespad=0, frameon=False, title=title,
              alignment="left")


def _colors(cs: list[float], ds: xr.Dataset) -> list:
    grid = ds["eta_lambda0"].values
    lo, hi = float(np.min(grid)), float(np.max(grid))
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.9 * (c - lo) / (hi - lo) if hi > lo else 0.5) for c in cs]


def _trajectory_panel(ax, ds: xr.Dataset, panel: str, cs: list[float], status) -> list:
    if panel == "a":
        data, ylabel = ds["loss"], r"$L_t$"
    elif panel == "b":
        data = ds["weight_norm"] / ds["weight_norm"].isel(step=0)
        ylabel = r"$\theta^2_t / \theta^2_0$"
    else:
        data, ylabel = ds["sharpness"], r"$\eta\,\lambda_{\max}(H_t)$"
    steps = ds["step"].values
    handles = []
    finite_ok: list[np.ndarray] = []
    last_step = 0.0
    for c, color in zip(cs, _colors(cs, ds), strict=True):
        j = int(np.flatnonzero(ds["eta_lambda0"].values == c)[0])
        col = status[:, j]
        run = col != "pending"
        diverged = bool((col[run] == "diverged").all())
        n_div = int((col[run] == "diverged").sum())
        keep = run if diverged else run & (col != "diverged")
        vals = data.isel(eta_lambda0=j).values[keep]          # (seeds, steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mid = np.nanmedian(vals, axis=0)
            lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
        has = np.flatnonzero(np.isfinite(vals).any(axis=0))
        if has.size:
            last_step = max(last_step, float(steps[has[-1]]))
        style = "--" if diverged else "-"
        ends = set(col[run])
        if len(ends) == 1 and ends != {"converged"}:
            label = f"{c:.3g} ({ends.pop()})"
        elif n_div:
            label = f"{c:.3g} ({n_div} of {int(run.sum())} seeds diverged, not shown)"
        else:
            label = f"{c:.3g}"
        (line,) = ax.plot(steps, mid, style, color=color, lw=1.3, label=label)
        if vals.shape[0] > 1:
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        if diverged:
            last = np.flatnonzero(np.isfinite(mid))
            if last.size:
                ax.plot(steps[last[-1]], mid[last[-1]], **{**DIVERGED_STYLE, "color": color})
        else:
            finite_ok.append(vals[np.isfinite(vals)])
        handles.append(line)
    ax.set_xscale("symlog", linthresh=10, linscale=0.8)
    ax.set_xlim(0, max(last_step * 1.5, 10.0))
    ax.set_xlabel(r"step $t$")
    ax.set_ylabel(ylabel)
    ax.set_title(TITLES[panel], loc="left")
    ok = np.concatenate(finite_ok) if finite_ok else np.array([])
    if panel == "a":
        ax.set_yscale("log")
        pos = ok[ok > 0]
        if pos.size:
            ax.set_ylim(max(pos.min() / 3, 1e-300), pos.max() * 30)
    else:
        if panel == "c":
            ax.axhline(2.0, color="0.5", lw=0.8, ls=":")
        if ok.size:
            lo, hi = float(ok.min()), float(ok.max())
            if panel == "c":
                lo, hi = min(lo, 2.0), max(hi, 2.0)
            pad = 0.08 * (hi - lo if hi > lo else abs(hi) or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
    return handles


def _final_values(ds: xr.Dataset, panel: str) -> tuple[xr.DataArray, str]:
    if panel == "d":
        return ds["final_sharpness"], r"$\eta\,\lambda_{\max}(H_\infty)$"
    if panel == "e":
        return (ds["final_weight_norm"] / ds["weight_norm"].isel(step=0),
                r"$\theta^2_\infty / \theta^2_0$")
    if panel == "f":
        return ds[_sparsity_name(ds)], "fraction of inactive units"
    gap, label = _gap(ds)
    return gap, label if label.startswith("$") else "generalisation gap"


def _final_panel(ax, ds: xr.Dataset, panel: str, status, handles: dict) -> None:
    values, ylabel = _final_values(ds, panel)
    cs = ds["eta_lambda0"].values
    extra = [d for d in values.dims if d not in ("seed", "eta_lambda0")]
    plain = "mean over converged seeds" if ds.sizes["seed"] > 1 else "converged"
    if extra and values.sizes[extra[0]] == 1:    # one layer: no per-layer legend entries
        values = values.isel({extra[0]: 0})
        extra = []
    if extra:                                    # e.g. sparsity per layer
        dim = extra[0]
        series = [(f"{dim} {values[dim].values[k]}", values.isel({dim: k}).values,
                   LAYER_COLORS[k % len(LAYER_COLORS)])
                  for k in range(values.sizes[dim])]
    else:
        series = [(plain, values.transpose("seed", "eta_lambda0").values, MEAN_COLOR)]
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
        if partial.any():
            s_idx, c_idx = np.nonzero(np.isfinite(vals) & partial[None, :])
            if s_idx.size:
                (dots,) = ax.plot(cs[c_idx], vals[s_idx, c_idx], ".", color=color, ms=4,
                                  alpha=0.6)
                handles.setdefault("single seed (refined c)", dots)
    flat = values.transpose("seed", "eta_lambda0", *extra).values
    if extra:
        flat = flat.mean(axis=tuple(range(2, flat.ndim)))
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
    if panel == "d":
        ax.axhline(2.0, color="0.5", lw=0.8, ls=":")
    elif panel == "e":
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    elif panel == "f":
        ax.set_ylim(-0.02, 1.02)
    elif panel == "g":
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
    evaluated = (status != "pending").any(axis=0)
    span = cs[evaluated] if evaluated.any() else cs
    pad = 0.03 * (span.max() - span.min() if span.max() > span.min() else 1.0)
    ax.set_xlim(span.min() - pad, span.max() + pad)
    ax.set_xlabel(r"$c = \eta\,\lambda_0$")
    ax.set_ylabel(ylabel)
    ax.set_title(TITLES[panel], loc="left")


def _vertical_lines(ds: xr.Dataset, axes) -> dict[str, object]:
    """Dashed verticals at c = 2, c = 4 (when in range), each bound and c_max."""
    lo, hi = axes[0].get_xlim()
    lines: list[tuple[str, float, str]] = [(r"$c = 2$", 2.0, "0.35")]
    if hi >= 4.0:
        lines.append((r"$c = 4$", 4.0, "0.6"))
    seeds = ds.sizes["seed"]
    for k, b in enumerate(bound_names(ds)):
        var = ds[f"bound_{b}"]
        value = float(np.nanmean(var.values))
        if not np.isfinite(value):
            continue
        what = f"{var.attrs.get('equation', b)} bound ({var.attrs.get('kind', 'bound')})"
        if seeds > 1:
            what += ", seed mean"
        lines.append((what, value, VLINE_COLORS[k % len(VLINE_COLORS)]))
    if "c_max" in ds.variables and np.isfinite(ds["c_max"].values.astype(float)).any():
        lines.append((r"$c_{\max}$ (boundary search" + (", seed mean)" if seeds > 1 else ")"),
                      float(np.nanmean(ds["c_max"].values.astype(float))), "#d62728"))
    out: dict[str, object] = {}
    for k, (label, x, color) in enumerate(lines):
        inside = lo <= x <= hi
        dash = DASHES[k % len(DASHES)]
        for ax in axes:
            if inside:
                ax.axvline(x, color=color, ls=dash, lw=1.1)
        text = label if label.startswith("$c =") else f"{label} = {x:.3g}"
        text += "" if inside else " (off the axis)"
        out[text] = Line2D([], [], color=color, ls=dash, lw=1.1)
    return out
