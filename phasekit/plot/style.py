"""The look of every phasekit figure (``docs/plotting.md``): the rc style, colours,
line styles and markers, legend helpers, text drawn literally from files, and
deterministic saving.

Importing this module selects the Agg backend when nothing else chose one, so that
figures need no display; a notebook's own backend is left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # headless; a notebook's own backend is left alone

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from phasekit.analysis.phases import bound_names  # noqa: E402
from phasekit.errors import ConfigError  # noqa: E402

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
LAYER_COLORS = (MEAN_COLOR, "#2a9d8f", "#e9c46a", "#8d99ae", "#6a4c93")
#: one colour per learning rate of the trajectory panels, in the order of c: the
#: colour-blind-safe palette of Okabe & Ito (yellow left out: too faint on white);
#: more rates than colours get evenly spaced shades of a perceptual map instead
RATE_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")
RATE_CMAP = "turbo"
#: reference lines, each with its own colour and line style (``docs/plotting.md``):
#: ``level`` the horizontal line of a panel (eta lambda_max = 2, theta^2 ratio 1,
#: gap 0), ``c2`` and ``c4`` the verticals c = 2 and c = 4, ``c_max`` a boundary
#: search's c_max; a bound is dashed in the colour of its kind (:data:`BOUND_COLORS`)
REFERENCE_STYLE = {
    "level": {"color": "0.55", "ls": ":", "lw": 1.0},
    "c2": {"color": "#3b3b3b", "ls": "-.", "lw": 1.1},
    "c4": {"color": "#5e81ac", "ls": (0, (6, 1.5, 1, 1.5, 1, 1.5)), "lw": 1.1},
    "c_max": {"color": "#000000", "ls": "-", "lw": 1.5},
}
BOUND_DASHES = ("--", (0, (6, 2)), (0, (2, 1.5)), (0, (8, 2, 2, 2)), (0, (4, 4)))
#: bounds are coloured by their ``kind`` attribute, the same in every figure: greens
#: for catapult bounds, reds for divergence bounds, browns for any other kind
BOUND_COLORS = {"catapult": ("#00441b", "#41ab5d", "#238b45", "#74c476"),
                "divergence": ("#a50f15", "#fb6a4a", "#67000d", "#ef3b2c")}
OTHER_BOUND_COLORS = ("#8c510a", "#bf812d")
#: the majority phase over seeds (the shading of panels d-g, the cells of the 2-D
#: diagram); pending cells stay white
PHASE_COLORS = {"lazy": "#c6dbef", "catapult": "#c7e9c0", "divergent": "#fdc9b4",
                "trivial": "#dadaeb", "undetermined": "#d9d9d9"}
#: a tie: the seeds split evenly between two or more phases (no majority)
TIE_STYLE = {"facecolor": "#f4f4f4", "hatch": "////", "edgecolor": "#8c8c8c"}
TIE_LABEL = "tie: seeds split evenly"
#: the critical learning rates, in every figure
CRITICAL_STYLE = {
    "c_loss": {"color": "#08306b", "marker": "o",
               "label": r"$c_{\rm loss}$: $L_t > L_0$ in steps 1-{W}"},
    "c_sharp": {"color": "#d94801", "marker": "^",
                "label": r"$c_{\rm sharp}$: sharpness falls {drop} in steps 1-{W}"},
    "c_max": {"color": "#000000", "marker": "s",
              "label": r"$c_{\max}$: largest converged c"},
    "c_trivial": {"color": "#54278f", "marker": "v",
                  "label": r"$c_{\rm trivial}$: first trivial c"},
}
#: the labels of the critical rates of the seed-averaged trajectories (``--average
#: seeds``, docs/phases.md): the thresholds apply to the means over seeds
MEAN_CRITICAL_LABELS = {
    "c_loss": r"$c_{\rm loss}$: $\langle L_t/L_0\rangle$ > {rise} in steps 1-{W}",
    "c_sharp": r"$c_{\rm sharp}$: $\langle\lambda_t/\lambda_0\rangle$ falls {drop} in "
               r"steps 1-{W}",
    "c_max": r"$c_{\max}$: largest c below the first c where a seed diverged",
}
#: the cells of the seed-averaged diagram (analysis.averaged.mean_phase)
MEAN_CELLS = ("cells: regime of the seed-averaged trajectory (divergent: a seed diverged; "
              "catapult: the mean loss rose)")
MEAN_TIE_LABEL = "tie: points at this x split evenly"


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


def bound_dash(ds: xr.Dataset, name: str):
    """The dash pattern of ``bound_<name>``: one per bound (:data:`BOUND_DASHES`)."""
    return BOUND_DASHES[bound_names(ds).index(name) % len(BOUND_DASHES)]


def coincident(values: dict[str, np.ndarray], rtol: float = 1e-6) -> list[list[str]]:
    """``values`` (a bound's values over the drawn points) grouped into lists of names
    whose values agree everywhere (within ``rtol``; NaN where the other is NaN), in
    the order given; names without any finite value are left out."""
    groups: list[list[str]] = []
    for name, v in values.items():
        v = np.asarray(v, dtype=float)
        if not np.isfinite(v).any():
            continue
        for group in groups:
            if np.allclose(values[group[0]], v, rtol=rtol, atol=0.0, equal_nan=True):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def bound_label(ds: xr.Dataset, names: list[str]) -> str:
    """``eq. 60 bound (catapult)``; for bounds that coincide, one label naming each:
    ``eq. 95 = eq. 102 bounds (catapult), equal`` or ``eq. 102 (divergence) = eq. 95
    (catapult), equal``."""
    eqs = [str(ds[f"bound_{n}"].attrs.get("equation", n)) for n in names]
    kinds = [str(ds[f"bound_{n}"].attrs.get("kind", "bound")) for n in names]
    if len(names) == 1:
        return plain(f"{eqs[0]} bound ({kinds[0]})")
    if len(set(kinds)) == 1:
        return plain(f"{' = '.join(eqs)} bounds ({kinds[0]}), equal")
    return plain(" = ".join(f"{e} ({k})" for e, k in zip(eqs, kinds, strict=True)) + ", equal")


def rate_colors(n: int) -> list:
    """``n`` colours a reader tells apart, for the learning rates of the trajectory
    panels in increasing order (:data:`RATE_COLORS`, else evenly spaced shades)."""
    if n <= len(RATE_COLORS):
        return list(RATE_COLORS[:n])
    cmap = matplotlib.colormaps[RATE_CMAP]
    return [cmap(0.05 + 0.9 * k / (n - 1)) for k in range(n)]


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


def title(ds: xr.Dataset) -> str:
    """``model on dataset``, from the file's attributes."""
    data = ds.attrs.get("dataset_source_title", ds.attrs.get("dataset", "?"))
    return plain(f"{ds.attrs.get('model', '?')} on {data}")


def legend_in(ax, handles, labels, title: str) -> None:
    """A legend filling ``ax`` (an axes of its own, so that it never covers data)."""
    ax.set_axis_off()
    ax.legend(handles, labels, loc="upper left", borderaxespad=0, frameon=False, title=title,
              alignment="left")


def c_label(ds, spaced: bool = True) -> str:
    """``c = eta lambda_0``, or ``c = eta lambda^H_0`` where the sweep measured c in the
    loss Hessian's top eigenvalue (``sweep.normalize = "hessian"``)."""
    unit = r"\lambda^H_0" if ds["eta_lambda0"].attrs.get("normalized_by") == \
        "lambda0_hessian" else r"\lambda_0"
    return rf"$c = \eta\,{unit}$" if spaced else rf"$c=\eta\,{unit}$"
