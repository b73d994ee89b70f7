"""Figures of a stored sweep (``docs/plotting.md``): the paper's panels and, for a
sweep with axes, the 2-D phase diagram.

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

A sweep with axes (``sweep.axes``) is drawn as a 2-D phase diagram instead
(:func:`plot_sweep`): x = one axis or a ratio of two (``x="hidden_layers/width"``),
y = ``c``, cells coloured by the majority phase over seeds, the critical
learning rates ``c_loss``, ``c_sharp``, ``c_max`` (and ``c_trivial``) as curves
with their spread over seeds, and every bound per axis point.  ``select``
fixes axes to one value each; with every axis fixed the panels above are drawn.

Strings read from the file (model and dataset names, attributes, axis values)
are drawn literally through :func:`plain`, never parsed as mathtext.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so
nothing is ever shown and no display is needed; the Agg backend is selected
when nothing else chose one.  Saved files are deterministic: no dates in
PDF/SVG metadata and a fixed SVG hash salt.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # headless; a notebook's own backend is left alone

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from phasekit.analysis.phases import (
    VOTING,
    bound_names,
    classify,
    critical_rates,
    majority,
    phase_counts,
    require,
    sweep_axes,
)
from phasekit.errors import (
    ConfigError,  # noqa: E402
    SweepFileError,  # noqa: E402
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
FORMATS = (".png", ".pdf", ".svg")
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "phasekit",
    "savefig.dpi": 150, "figure.dpi": 100, "path.simplify": False,
    "text.usetex": False,      # strings from files are drawn as plain text (see plain())
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
#: bounds are coloured by their ``kind`` attribute, the same in every figure: greens
#: for catapult bounds, reds for divergence bounds, greys for any other kind
BOUND_COLORS = {"catapult": ("#00441b", "#41ab5d", "#238b45", "#74c476"),
                "divergence": ("#a50f15", "#fb6a4a", "#67000d", "#ef3b2c")}
OTHER_BOUND_COLORS = ("#525252", "#969696")
#: the majority phase of a cell of the 2-D diagram (pending cells stay white)
PHASE_COLORS = {"lazy": "#c6dbef", "catapult": "#c7e9c0", "divergent": "#fdc9b4",
                "trivial": "#dadaeb", "undetermined": "#d9d9d9"}
#: the critical learning rates, in every figure
CRITICAL_STYLE = {
    "c_loss": {"color": "#08306b", "marker": "o",
               "label": r"$c_{\rm loss}$: loss rises above $L_0$ in steps 1-{W}"},
    "c_sharp": {"color": "#d94801", "marker": "^",
                "label": r"$c_{\rm sharp}$: sharpness falls {drop} in steps 1-{W}"},
    "c_max": {"color": "#000000", "marker": "s",
              "label": r"$c_{\max}$: largest c that converged"},
    "c_trivial": {"color": "#54278f", "marker": "v",
                  "label": r"$c_{\rm trivial}$: first c that ended trivial"},
}
LEGEND_GROUPS = ("phase", "disagree", "critical", "family", "bound")
FAMILY_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
GEOMETRIC_RTOL = 0.05


def plain(text: object) -> str:
    """``text`` (read from a file) drawn literally: every ``$`` is escaped, so that
    matplotlib never parses it as mathtext (``text.usetex`` is off in :data:`STYLE`)."""
    return str(text).replace("$", r"\$")


def bound_color(ds: xr.Dataset, name: str) -> str:
    """The colour of ``bound_<name>``: a shade of its kind's family (:data:`BOUND_COLORS`)."""
    kind = ds[f"bound_{name}"].attrs.get("kind")
    same = [b for b in bound_names(ds) if ds[f"bound_{b}"].attrs.get("kind") == kind]
    family = BOUND_COLORS.get(kind, OTHER_BOUND_COLORS)
    return family[same.index(name) % len(family)]


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
    """The generalisation gap at the stop and its axis label: the stored observable,
    else L_test - L_train."""
    if "final_generalisation_gap" in ds.variables:
        return ds["final_generalisation_gap"], "generalisation gap"
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
    from phasekit.analysis.phases import PHASES, classify

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
               *, x: str | None = None, select: Mapping | Sequence[str] | str | None = None
               ) -> Figure:
    """Draw a stored sweep; save to ``path`` (.png, .pdf or .svg) if given.

    Without axes (or with every axis fixed by ``select``, e.g. ``{"width": 512}``
    or ``["width=512"]``): the ``panels`` of the paper.  With axes left: the 2-D
    phase diagram (:func:`_diagram`), ``x`` one axis or ``"a/b"``.  An axis
    with a single value counts as fixed unless ``x`` names it.

    Raises :class:`~phasekit.errors.SweepFileError` when ``ds`` is not a
    phasekit sweep or lacks a variable a requested panel needs, and
    :class:`~phasekit.options.ConfigError` for an unknown panel, axis, selected
    value or file type.
    """
    require(ds, "status", purpose="plotting")
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
                f"has the axes {_axes_text(ds, axes)}: fix each with --select (e.g. --select "
                f"{axes[-1]}={ds[axes[-1]].values[0]}), or leave {' and '.join(given)} out "
                f"for the phase diagram")
        with matplotlib.rc_context(STYLE):
            fig = _diagram(ds, x_axes or (default_x(ds, axes),), axes)
            if path is not None:
                save(fig, path)
        return fig
    chosen = parse_panels(panels, ds)
    _check(ds, chosen)
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
        # tight: whatever a legend needs is inside the file, never clipped
        fig.savefig(path, metadata=METADATA[suffix], bbox_inches="tight", pad_inches=0.05)
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
    fixed = _fixed(ds)
    fig.suptitle(f"{_title(ds)}: {seeds} seed{'s' if seeds != 1 else ''}"
                 + (f" ({fixed})" if fixed else ""), fontsize=10)
    return fig


def _title(ds: xr.Dataset) -> str:
    data = ds.attrs.get("dataset_source_title", ds.attrs.get("dataset", "?"))
    return plain(f"{ds.attrs.get('model', '?')} on {data}")


def _fixed(ds: xr.Dataset) -> str:
    """``width = 512, ...``: the sweep's axes fixed by a selection (scalar coordinates)."""
    names = str(ds.attrs.get("axes", "") or "").split()
    return plain(", ".join(f"{a} = {ds[a].values.item()}" for a in names
                           if a in ds.coords and ds[a].ndim == 0))


def _bound_label(var: xr.DataArray, name: str) -> str:
    return f"{var.attrs.get('equation', name)} bound ({var.attrs.get('kind', 'bound')})"


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
            label = f"{c:.3g} ({plain(ends.pop())})"
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
    return _gap(ds)


def _shade_phases(ax, ds: xr.Dataset, handles: dict) -> None:
    """Shade the c axis by the majority phase over seeds (docs/phases.md): each
    evaluated c owns the span to the midpoints of its neighbours."""
    cs = ds["eta_lambda0"].values
    major, _ = majority(phase_counts(classify(ds), "seed").transpose("phase", "eta_lambda0")
                        .values)
    edges = np.concatenate([[cs[0] - (cs[1] - cs[0]) / 2 if len(cs) > 1 else cs[0] - 0.5],
                            (cs[1:] + cs[:-1]) / 2,
                            [cs[-1] + (cs[-1] - cs[-2]) / 2 if len(cs) > 1 else cs[-1] + 0.5]])
    for j, name in enumerate(major):
        if name in PHASE_COLORS:
            ax.axvspan(edges[j], edges[j + 1], color=PHASE_COLORS[name], alpha=0.55, lw=0,
                       zorder=0)
            handles.setdefault(f"phase: {name}", Patch(facecolor=PHASE_COLORS[name],
                                                       alpha=0.55, lw=0))


def _final_panel(ax, ds: xr.Dataset, panel: str, status, handles: dict) -> None:
    values, ylabel = _final_values(ds, panel)
    cs = ds["eta_lambda0"].values
    if "loss" in ds.variables and "final_loss" in ds.variables:
        _shade_phases(ax, ds, handles)
    extra = [d for d in values.dims if d not in ("seed", "eta_lambda0")]
    mean_label = "mean over converged seeds" if ds.sizes["seed"] > 1 else "converged"
    if extra:            # a layer that does not exist at this axis point is all NaN: left out
        present = np.isfinite(values.transpose(extra[0], ...).values)
        present = present.reshape(present.shape[0], -1).any(axis=1)
        if present.any():
            values = values.isel({extra[0]: np.flatnonzero(present)})
    if extra and values.sizes[extra[0]] == 1:    # one layer: no per-layer legend entries
        values = values.isel({extra[0]: 0})
        extra = []
    if extra:                                    # e.g. sparsity per layer
        dim = extra[0]
        series = [(plain(f"{dim} {values[dim].values[k]}"), values.isel({dim: k}).values,
                   LAYER_COLORS[k % len(LAYER_COLORS)])
                  for k in range(values.sizes[dim])]
    else:
        series = [(mean_label, values.transpose("seed", "eta_lambda0").values, MEAN_COLOR)]
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
    for b in bound_names(ds):
        var = ds[f"bound_{b}"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # NaN: not applicable here
            value = float(np.nanmean(var.values))
        if not np.isfinite(value):
            continue
        what = plain(_bound_label(var, b))
        if seeds > 1:
            what += ", seed mean"
        lines.append((what, value, bound_color(ds, b)))
    if ("c_max" in ds.variables and "boundary_tol" in ds.attrs
            and np.isfinite(ds["c_max"].values.astype(float)).any()):
        lines.append((r"$c_{\max}$ (boundary search" + (", seed mean)" if seeds > 1 else ")"),
                      float(np.nanmean(ds["c_max"].values.astype(float))),
                      CRITICAL_STYLE["c_max"]["color"]))
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


# -- sweeps with axes: selecting, choosing x -----------------------------------------

def _axes_text(ds: xr.Dataset, axes: list[str]) -> str:
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
    fixed = _fixed(ds)
    if not axes:
        where = (f"every axis is fixed ({fixed})" if fixed
                 else "this sweep has no axes (sweep.axes)")
        raise ConfigError(f"{what}: {where}")
    raise ConfigError(f"{what}: {key!r} is not an axis of this sweep; its axes are "
                      f"{_axes_text(ds, axes)}" + (f" ({fixed} fixed)" if fixed else ""))


def _numeric(ds: xr.Dataset, axis: str) -> bool:
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
            if not _numeric(ds, a):
                raise ConfigError(f"{what}: the axis {a} is not numeric "
                                  f"({', '.join(str(v) for v in ds[a].values)})")
        if (ds[axes[1]].values == 0).any():
            raise ConfigError(f"{what}: the axis {axes[1]} has the value 0")
    return axes


def default_x(ds: xr.Dataset, axes: list[str]) -> str:
    """The numeric axis with the most values (the later one in config order on a tie);
    the last axis if none is numeric."""
    numeric = [a for a in axes if _numeric(ds, a)]
    if not numeric:
        return axes[-1]
    return max(reversed(numeric), key=lambda a: ds.sizes[a])


def geometric(values) -> bool:
    """Whether ``values`` form a geometric grid: at least three positive values whose
    consecutive ratios agree within 5% and differ from 1 (then drawn on a log scale)."""
    v = np.unique(np.asarray(values, dtype=float))
    if v.size < 3 or not (v > 0).all():
        return False
    ratio = v[1:] / v[:-1]
    return bool(ratio.min() > 1 + GEOMETRIC_RTOL
                and ratio.max() <= ratio.min() * (1 + GEOMETRIC_RTOL))


# -- the 2-D phase diagram -----------------------------------------------------------

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


def _diagram(ds: xr.Dataset, x_axes: tuple[str, ...], axes: list[str]) -> Figure:
    """The 2-D phase diagram of a sweep with axes (``docs/plotting.md``).

    ``x_axes``: one axis, or two for their ratio (each point at x = first / second;
    all points on one panel).  y = ``c``.  Each cell is coloured by
    the majority phase of its runs (points sharing an x value are pooled), with a
    dot where they disagree; ``c_loss``, ``c_sharp``, ``c_max`` and ``c_trivial``
    are the median over seeds with their range as error bars, one line style per
    value of a ratio's numerator; the bounds are marked per axis point.  Every
    other axis gets a panel per value.
    """
    others = [a for a in axes if a not in x_axes]
    phase = classify(ds)
    crit = critical_rates(ds)
    counts = phase_counts(phase, "seed")                      # (phase, *axes, c)
    shown = [q for q in CRITICAL_STYLE if q in crit
             and np.isfinite(crit[q].values).any()]
    combos = list(np.ndindex(*(ds.sizes[a] for a in others)))
    n = len(combos)
    ncols = n if n <= 3 else 2 if n == 4 else 4 if n % 4 == 0 and n % 3 else 3
    nrows = math.ceil(n / ncols)
    free = nrows * ncols - n
    fig = Figure(figsize=(3.6 * ncols + (0 if free else 3.4), 3.4 * nrows + 0.4),
                 layout="constrained")
    grid = fig.add_gridspec(nrows, ncols + (0 if free else 1),
                            width_ratios=[1.0] * ncols + ([] if free else [0.95]))
    handles: dict[str, dict[str, object]] = {g: {} for g in LEGEND_GROUPS}
    panels = []
    for k, combo in enumerate(combos):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        where = dict(zip(others, combo, strict=True))
        _diagram_panel(ax, ds.isel(where), counts.isel(where), crit.isel(where), x_axes,
                       shown, handles)
        if others:
            ax.set_title(plain(", ".join(f"{a} = {ds[a].values[i]}"
                                         for a, i in where.items())), loc="left")
        panels.append(ax)
    for ax in panels[1:]:
        ax.sharey(panels[0])
    legend_ax = fig.add_subplot(grid[nrows - 1, ncols - free:] if free else grid[:, ncols])
    title = "cells: majority phase over seeds"
    if shown:
        title += "\ncurves: median, bars: range over seeds"
    handles["phase"] = {p: handles["phase"][p] for p in VOTING if p in handles["phase"]}
    entries = [(label, h) for g in LEGEND_GROUPS for label, h in handles[g].items()]
    _legend(legend_ax, [h for _, h in entries], [label for label, _ in entries], title)
    fixed = _fixed(ds)
    seeds = ds.sizes["seed"]
    fig.suptitle(f"{_title(ds)}: phase diagram, {seeds} seed{'s' if seeds != 1 else ''}"
                 + (f" ({fixed})" if fixed else ""), fontsize=10)
    return fig


def _diagram_panel(ax, ds: xr.Dataset, counts: xr.DataArray, crit: xr.Dataset,
                   x_axes: tuple[str, ...], shown: list[str],
                   handles: dict[str, dict[str, object]]) -> None:
    """One panel: x_axes over x (stacked into points), c over y."""
    cs = ds["eta_lambda0"].values
    P = int(np.prod([ds.sizes[a] for a in x_axes]))
    grids = np.meshgrid(*(ds[a].values for a in x_axes), indexing="ij")
    values = [g.ravel() for g in grids]                        # per point, each x axis
    categorical = len(x_axes) == 1 and not _numeric(ds, x_axes[0])
    if categorical:
        x = np.arange(P, dtype=float)
    elif len(x_axes) == 1:
        x = values[0].astype(float)
    else:
        x = values[0].astype(float) / values[1].astype(float)
    if len(x_axes) == 1:
        log_x = not categorical and geometric(x)
    else:
        log_x = geometric(ds[x_axes[0]].values) and geometric(ds[x_axes[1]].values)
    log_y = geometric(cs)

    # cells: the majority phase of every run at (x, c); points with equal x pooled
    ux, group = _groups(x)
    per_point = counts.transpose("phase", *x_axes, "eta_lambda0").values
    member = (group[None, :] == np.arange(len(ux))[:, None]).astype(float)   # (x, point)
    pooled = np.einsum("gp,kpc->kgc", member, per_point.reshape(len(VOTING), P, len(cs)))
    major, disagree = majority(pooled)                          # (x, c)
    code = np.full(major.shape, np.nan)
    for i, name in enumerate(VOTING):
        code[major == name] = i
    cmap = ListedColormap([PHASE_COLORS[p] for p in VOTING])
    ax.pcolormesh(_edges(ux, log_x), _edges(cs, log_y), np.ma.masked_invalid(code.T),
                  cmap=cmap, vmin=-0.5, vmax=len(VOTING) - 0.5, shading="flat",
                  edgecolors="none")
    for name in VOTING:
        if (major == name).any():
            handles["phase"].setdefault(name, Patch(facecolor=PHASE_COLORS[name], edgecolor="0.6",
                                           lw=0.5))
    gi, ci = np.nonzero(disagree)
    if gi.size:
        (dots,) = ax.plot(ux[gi], cs[ci], linestyle="none", marker="o", ms=2.2,
                          color="0.15")
        handles["disagree"].setdefault("seeds disagree (majority shown)", dots)

    # families of points joined by lines: all points, or one per value of the numerator
    if len(x_axes) == 2:
        family_of = values[0]
        family_values = list(ds[x_axes[0]].values)
    else:
        family_of = np.zeros(P)
        family_values = [0]
    families = [np.flatnonzero(family_of == v) for v in family_values]
    families = [idx[np.argsort(x[idx], kind="stable")] for idx in families]

    W = crit.attrs.get("early_window", "?")
    for q in shown:
        style = CRITICAL_STYLE[q]
        v = crit[q].transpose(*x_axes, "seed").values.reshape(P, -1)
        mid, lo, hi = _spread(v)
        err = np.nan_to_num(np.vstack([mid - lo, hi - mid]))
        label = style["label"]
        if q == "c_loss":
            label = label.replace("{W}", str(W))
        elif q == "c_sharp":
            drop = crit["c_sharp"].attrs.get("sharpness_drop", 0.05)
            label = label.replace("{W}", str(W)).replace("{drop}", f">{100 * drop:g}%")
        for f, idx in enumerate(families):
            if not np.isfinite(mid[idx]).any():
                continue
            bars = ax.errorbar(x[idx], mid[idx], yerr=err[:, idx], color=style["color"],
                               marker=style["marker"], ms=4.5, lw=1.3, capsize=2.0,
                               elinewidth=0.9, ls=FAMILY_STYLES[f % len(FAMILY_STYLES)],
                               zorder=3)
            handles["critical"].setdefault(label, bars.lines[0] if f == 0 else
                               Line2D([], [], color=style["color"], marker=style["marker"],
                                      ms=4.5, lw=1.3))
    if len(families) > 1:
        for f, v in enumerate(family_values):
            handles["family"].setdefault(plain(f"{x_axes[0]} = {v}"),
                               Line2D([], [], color="0.3", lw=1.3,
                                      ls=FAMILY_STYLES[f % len(FAMILY_STYLES)]))

    # the bounds, per axis point: a bar at each point, joined within a family
    lo_c, hi_c = _edges(cs, log_y)[[0, -1]]
    for k, b in enumerate(bound_names(ds)):
        var = ds[f"bound_{b}"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            v = np.nanmean(var.transpose(*x_axes, "seed").values.reshape(P, -1), axis=-1)
        if not np.isfinite(v).any():
            continue
        color = bound_color(ds, b)
        # later bounds get shorter, thinner bars, so that equal bounds stay visible
        bar = {"marker": "_", "ms": max(14.0 - 3.0 * k, 5.0), "mew": max(2.6 - 0.5 * k, 1.1)}
        for idx in families:
            ax.plot(x[idx], v[idx], color=color, lw=0.9, ls=(0, (4, 2)), zorder=2.5 + 0.01 * k,
                    **bar)
        inside = np.isfinite(v) & (v >= lo_c) & (v <= hi_c)
        label = plain(_bound_label(var, b)) + ("" if inside.any() else " (off the axis)")
        handles["bound"].setdefault(label, Line2D([], [], color=color, lw=0.9, ls=(0, (4, 2)),
                                                  **bar))

    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if log_y else "linear")
    x_edges = _edges(ux, log_x)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(lo_c, hi_c)
    if categorical:
        ax.xaxis.set_major_locator(FixedLocator(ux))
        ax.set_xticklabels([plain(v) for v in values[0]])
    elif len(ux) <= (12 if len(x_axes) == 1 else 6):     # ratios crowd: default ticks
        ax.xaxis.set_major_locator(FixedLocator(ux))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{v:.0f}" if float(v).is_integer() and abs(v) < 1e7
                            else f"{v:.3g}" for v in ux],
                           rotation=45 if len(x_axes) == 2 else 0)
    label = (plain(_axes_text(ds, list(x_axes))) if len(x_axes) == 1
             else plain(f"{x_axes[0]} / {x_axes[1]}"))
    ax.set_xlabel(label)
    ax.set_ylabel(r"$c = \eta\,\lambda_0$")
