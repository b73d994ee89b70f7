"""What a person reads after a run, as text: the phases along c with their seed spread,
the critical learning rates, the bounds (:func:`summary_text`), the per-c table that
``phasekit run`` prints (:func:`summary_table`) and a boundary search's report
(:func:`boundary_report`)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from phasekit.analysis.phases import (
    DEFAULT_CATAPULT_FACTOR,
    EARLY,
    PHASES,
    bound_names,
    classify,
    critical_summary,
    majority,
    phase_counts,
    sweep_axes,
)


def _fmt(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4g}"


def span(lo: str | float, hi: str | float, fmt: str = ".4g") -> str:
    """``lo-hi`` (``0.5-1.9``), or ``lo to hi`` when an end is negative, so that a minus
    sign never reads as the dash (``-5.664 to -5.151``, never ``-5.664--5.151``)."""
    if float(lo) < 0 or float(hi) < 0:
        return f"{lo:{fmt}} to {hi:{fmt}}"
    return f"{lo:{fmt}}-{hi:{fmt}}"


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def _mean_spread(values: np.ndarray) -> str:
    v = _finite(values)
    if not v.size:
        return "-"
    if v.size == 1:
        return f"{v[0]:.4g}"
    return f"{v.mean():.4g} +/- {v.std(ddof=1):.2g} (range {span(v.min(), v.max())})"


def _mean_std(values: np.ndarray) -> str:
    v = _finite(values)
    if not v.size:
        return "-"
    if v.size == 1 or v.std() <= 1e-9 * max(abs(v.mean()), 1.0):    # equal up to rounding
        return f"{v.mean():.4g}"
    return f"{v.mean():.4g}+/-{v.std(ddof=1):.2g}"


def _window_line(crit: xr.Dataset) -> str | None:
    parts = []           # thresholds from the dataset's attributes (critical_rates)
    if "c_loss" in crit:
        parts.append(f"c_loss: L_t > (1 + {crit.attrs['loss_rise']:g}) L_0, or diverged")
    if "c_sharp" in crit:
        parts.append(f"c_sharp: eta lambda_max(H_t) < {1 - crit.attrs['sharpness_drop']:g} x "
                     f"its initial value")
    if not parts:
        return None
    return (f"early window: steps 1-{crit.attrs['early_window']}; " + "; ".join(parts)
            + " (docs/phases.md)")


def _axis_label(ds: xr.Dataset, name: str) -> str:
    key = ds[name].attrs.get("axis_key")
    return f"{name} ({key})" if key and key != name else name


def _point_label(ds: xr.Dataset, axes: list[str], index: tuple[int, ...]) -> str:
    return " ".join(f"{a}={ds[a].values[i]}" for a, i in zip(axes, index, strict=True))


def _phase_ranges(major: np.ndarray, disagree: np.ndarray, cs: np.ndarray) -> str:
    """``lazy 0.5-1.9, catapult 2-3.8, ...``: runs of equal majority phase along c."""
    parts, start = [], None
    keep = np.flatnonzero(major != "pending")
    for k, j in enumerate(keep):
        if start is None:
            start = j
        if k + 1 == len(keep) or major[keep[k + 1]] != major[j]:
            where = f"{cs[start]:.4g}" if start == j else span(cs[start], cs[j])
            parts.append(f"{major[j]} {where}")
            start = None
    text = ", ".join(parts) if parts else "no run"
    n = int(disagree.sum())
    return text + (f" (seeds disagree at {n} c)" if n else "")


def _report_axes(ds: xr.Dataset, phase: xr.DataArray, crit: xr.Dataset,
                 catapult_factor: float, axes: list[str]) -> list[str]:
    lines = ["sweep axes: " + "; ".join(
        f"{_axis_label(ds, a)} = " + ", ".join(str(v) for v in ds[a].values) for a in axes)]
    counts = phase_counts(phase.transpose(*axes, "seed", "eta_lambda0"), "seed")
    major, disagree = majority(counts.values)
    cs = ds["eta_lambda0"].values
    lines.append(f"phases (criteria: docs/phases.md; catapult factor {catapult_factor:g}), "
                 f"majority over {ds.sizes['seed']} seed(s) per axis point, along c:")
    shape = tuple(ds.sizes[a] for a in axes)
    for index in np.ndindex(*shape):
        lines.append(f"  {_point_label(ds, axes, index)}: "
                     f"{_phase_ranges(major[index], disagree[index], cs)}")
    names = [n for n in ("c_loss", "c_sharp", "c_max", "c_catapult", "c_trivial") if n in crit]
    bnames = bound_names(ds)
    lines.append("")
    lines.append("critical learning rates (eta_lambda0 units), mean +/- std over seeds:")
    header = list(axes) + names + [f"bound_{b}" for b in bnames]
    width = [max(11, len(h)) for h in header]
    lines.append("  ".join(f"{h:>{w}}" for h, w in zip(header, width, strict=True)))
    values = {n: crit[n].transpose(*axes, "seed").values for n in names}
    values.update({f"bound_{b}": ds[f"bound_{b}"].transpose(*axes, "seed").values
                   for b in bnames})
    for index in np.ndindex(*shape):
        row = [str(ds[a].values[i]) for a, i in zip(axes, index, strict=True)]
        row += [_mean_std(values[h][index]) for h in header[len(axes):]]
        lines.append("  ".join(f"{x:>{w}}" for x, w in zip(row, width, strict=True)))
    return lines


def _report_seeds(ds: xr.Dataset, phase: xr.DataArray, crit: xr.Dataset,
                  catapult_factor: float) -> list[str]:
    phase_v = phase.transpose("seed", "eta_lambda0").values
    cs = ds["eta_lambda0"].values
    shown = [p for p in PHASES if (phase_v == p).any()]
    lines = [f"phases (criteria: docs/phases.md; catapult factor {catapult_factor:g}), runs per "
             f"learning rate over {phase_v.shape[0]} seed(s):",
             "eta_lambda0  " + " ".join(f"{p:>12}" for p in shown)]
    for j, c in enumerate(cs):
        col = phase_v[:, j]
        if (col == "pending").all():
            continue
        lines.append(f"{c:>11.4g}  " + " ".join(f"{int((col == p).sum()):>12}" for p in shown))
    lines.append("")
    lines.append("critical learning rates (eta_lambda0 units), per seed:")
    names = [n for n in ("c_loss", "c_sharp", "c_max", "c_fail", "c_catapult", "c_trivial")
             if n in crit]
    bnames = bound_names(ds)
    header = ["seed"] + names + [f"bound_{b}" for b in bnames]
    lines.append("  ".join(f"{h:>12}" for h in header))
    for s, seed in enumerate(ds["seed"].values):
        row = [str(int(seed))] + [_fmt(float(crit[k].values[s])) for k in names]
        row += [_fmt(float(ds[f"bound_{b}"].values[s])) for b in bnames]
        lines.append("  ".join(f"{x:>12}" for x in row))
    for name in ("c_loss", "c_sharp"):
        if name in crit:
            lines.append(f"{name}: {_mean_spread(crit[name].values)}")
    c_max = crit["c_max"].values
    lines.append(f"c_max: {_mean_spread(c_max)}")
    if np.isfinite(c_max).any():
        lines.append(f"catapult window (2, c_max): (2, {np.nanmean(c_max):.4g})")
    for b in bnames:
        gap = crit[f"gap_{b}"].values
        kind = ds[f"bound_{b}"].attrs.get("kind", "")
        eq = ds[f"bound_{b}"].attrs.get("equation", "")
        lines.append(f"bound_{b} ({eq}, {kind}): {_mean_spread(ds[f'bound_{b}'].values)}; "
                     f"c_max - bound = {_mean_spread(gap)}")
    return lines


def summary_text(ds: xr.Dataset, catapult_factor: float = DEFAULT_CATAPULT_FACTOR, *,
                 early_window: int | None = None, sharpness_drop: float | None = None,
                 loss_rise: float | None = None) -> str:
    """A plain-text report: phases per ``c`` and the critical learning rates (per seed;
    for a sweep with axes, the majority phase along ``c`` and the seed mean of each
    critical rate per axis point)."""
    phase = classify(ds, catapult_factor)
    crit = critical_summary(ds, catapult_factor, early_window=early_window,
                            sharpness_drop=sharpness_drop, loss_rise=loss_rise)
    axes = sweep_axes(ds)
    if axes:
        lines = _report_axes(ds, phase, crit, catapult_factor, axes)
    else:
        lines = _report_seeds(ds, phase, crit, catapult_factor)
    window = _window_line(crit)
    if window:
        lines.append(window)
    c = phase["eta_lambda0"]
    slow = int(((phase == "lazy") & (c > 2)).sum())
    early = int(((phase == "catapult") & (c < 2)).sum())
    if slow:
        lines.append(f"note: {slow} converged run(s) above c = 2 are lazy by the loss criterion "
                     f"(their loss rose less than {catapult_factor:g}x; expected just above c = 2 "
                     f"and at small widths, see loss_peak_ratio)")
    if early:
        lines.append(f"note: {early} run(s) below c = 2 rose to {catapult_factor:g}x their initial "
                     f"loss (catapult by the loss criterion)")
    if (crit["converged_above"].values > 0).any():
        lines.append("note: some seeds converge again above c_fail (chaotic dynamics near the "
                     "boundary); c_max is the largest converged c below the first failure")
    return "\n".join(lines)


def summary_table(ds) -> str:
    """What a person reads first after a run: the phases along c (seed spread), the
    critical learning rates and the bounds (:func:`phasekit.analysis.report.summary_text`),
    then theta^2_inf / theta^2_0 and the final sharpness per c (without axes)."""
    import numpy as np

    from phasekit.analysis.report import summary_text

    lines = [summary_text(ds)]
    if not ds.attrs.get("axes"):
        ratio = (ds["final_weight_norm"] / ds["weight_norm"].isel(step=0)).values
        finite = ds["status"].values != "diverged"
        sharp = ds["final_sharpness"].values
        lines.append(f"{'eta_lambda0':>11}  {'theta2_inf/theta2_0':>19}  {'final sharpness':>15}"
                     "  (means over the runs that did not diverge)")
        for j, c in enumerate(ds["eta_lambda0"].values):
            keep = finite[:, j]
            r = f"{np.mean(ratio[keep, j]):.4g}" if keep.any() else "-"
            sh = f"{np.mean(sharp[keep, j]):.4g}" if keep.any() else "-"
            lines.append(f"{c:>11.4g}  {r:>19}  {sh:>15}")
    return "\n".join(lines)


def boundary_report(ds: xr.Dataset) -> str:
    """Plain-text report of a boundary dataset: the critical learning rates per seed
    (without axes) or per axis point (mean and spread over seeds), and the bounds."""
    from phasekit.analysis.phases import require

    if ds.attrs.get("boundary_average") == "seeds":
        return _boundary_averaged(ds)
    require(ds, "c_max", "c_fail", "fail_status", "c_trivial",
            purpose="the boundary report (run 'phasekit boundary' to make such a file)")
    tol = ds.attrs.get("boundary_tol", float("nan"))
    axes = sweep_axes(ds)
    early = [n for n in EARLY if n in ds.variables]
    lines = [f"critical learning rates (eta_lambda0 units), tolerance {tol:g}, "
             f"{ds.attrs.get('boundary_rounds', '?')} round(s), "
             f"{int((ds['status'].values != 'pending').sum())} runs"
             + (f" + {ds.attrs.get('boundary_early_runs', 0)} early-window runs" if early
                else "")]
    names = ["c_loss", "c_sharp"][: len(early)] if early else []
    lines += (_boundary_by_point(ds, axes, names) if axes
              else _boundary_by_seed(ds, names))
    flat = ds["boundary_unbounded"].values.ravel()
    for k, why in enumerate(flat):
        if str(why):
            lines.append(f"warning: cell {k} ({', '.join(axes + ['seed'])} flattened): {why}"
                         if axes else f"warning: seed {int(ds['seed'].values[k])}: {why}")
    return "\n".join(lines)


def _boundary_averaged(ds: xr.Dataset) -> str:
    """The report of a ``phasekit boundary --average seeds`` file: the refined rates of
    the seed-averaged trajectories per axis point (as ``analyze --average seeds``
    prints them), the ``c_max`` brackets' upper ends and the warnings."""
    from phasekit.analysis.averaged import SUFFIX, averaged_report
    from phasekit.analysis.phases import early_thresholds

    names = [n for n in ("c_loss", "c_sharp", "c_max", "c_fail") if f"{n}{SUFFIX}" in ds]
    rates = xr.Dataset({n: ds[f"{n}{SUFFIX}"] for n in names}, attrs=early_thresholds(ds))
    lines = [f"critical learning rates of the seed-averaged trajectories (eta_lambda0 "
             f"units), tolerance {ds.attrs.get('boundary_tol', float('nan')):g}, "
             f"{ds.attrs.get('boundary_rounds', '?')} round(s), "
             f"{int((ds['status'].values != 'pending').sum())} runs + "
             f"{ds.attrs.get('boundary_early_runs', 0)} early-window runs"]
    lines += averaged_report(rates).splitlines()[1:]
    axes = list(ds["boundary_unbounded"].dims)
    flat = ds["boundary_unbounded"].stack(point=axes) if axes else ds["boundary_unbounded"]
    for k, why in enumerate(np.atleast_1d(flat.values)):
        if str(why):
            where = ", ".join(f"{a} = {flat['point'].values[k][j]}" for j, a in
                              enumerate(axes)) if axes else "the point"
            lines.append(f"warning: {where}: {why}")
    return "\n".join(lines)


def _fixed(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4f}"


def _boundary_by_point(ds: xr.Dataset, axes: list[str], names: list[str]) -> list[str]:
    """One line per axis point: the onsets and bounds as mean+/-std over seeds."""
    def spread(x: np.ndarray) -> str:
        x = x[np.isfinite(x)]
        if not x.size:
            return "-"
        return f"{x.mean():.4f}" + (f"+/-{x.std(ddof=1):.3f}" if x.size > 1 else "")

    bnames = bound_names(ds)
    header = list(axes) + names + ["c_max", "c_trivial"] + [f"bound_{b}" for b in bnames]
    lines = ["  ".join(f"{h:>14}" for h in header)]
    stacked = ds.stack(point=axes)
    for j in range(stacked.sizes["point"]):
        at = stacked.isel(point=j)
        row = [str(at[a].values.item()) for a in axes]
        row += [spread(at[n].values.astype(float)) for n in names + ["c_max", "c_trivial"]]
        row += [spread(at[f"bound_{b}"].values.astype(float)) for b in bnames]
        lines.append("  ".join(f"{x:>14}" for x in row))
    lines.append("(mean+/-std over seeds)")
    return lines


def _boundary_by_seed(ds: xr.Dataset, names: list[str]) -> list[str]:
    """One line per seed, then the means over seeds, the catapult window, the trivial
    onset and where each bound lies against c_max."""
    bnames = bound_names(ds)
    header = ["seed"] + names + ["c_max", "c_fail", "fails by", "c_trivial"] + [
        f"bound_{b}" for b in bnames]
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for s, seed in enumerate(ds["seed"].values):
        row = [str(int(seed))] + [_fixed(float(ds[n].values[s])) for n in names]
        row += [_fixed(float(ds["c_max"].values[s])), _fixed(float(ds["c_fail"].values[s])),
                str(ds["fail_status"].values[s]), _fixed(float(ds["c_trivial"].values[s]))]
        row += [_fixed(float(ds[f"bound_{b}"].values[s])) for b in bnames]
        lines.append("  ".join(f"{x:>12}" for x in row))
    for name in names + ["c_max"]:
        finite = ds[name].values.astype(float)
        finite = finite[np.isfinite(finite)]
        if finite.size:
            extra = (f" +/- {finite.std(ddof=1):.4f} (std over {finite.size} seeds; range "
                     f"{span(finite.min(), finite.max(), '.4f')})" if finite.size > 1 else "")
            lines.append(f"{name} = {finite.mean():.4f}{extra}")
    c_max = ds["c_max"].values.astype(float)
    if np.isfinite(c_max).any():
        lines.append(f"catapult window: (2, {np.nanmean(c_max):.4f})")
    triv = ds["c_trivial"].values.astype(float)
    if np.isfinite(triv).any():
        lines.append(f"trivial phase from c = {np.nanmean(triv):.4f} (mean over seeds with "
                     f"one)")
    for b in bnames:
        gap = c_max - ds[f"bound_{b}"].values
        eq = ds[f"bound_{b}"].attrs.get("equation", b)
        kind = ds[f"bound_{b}"].attrs.get("kind", "")
        word = "below" if np.nanmean(gap) >= 0 else "above"
        lines.append(f"bound_{b} ({eq}, {kind}): mean "
                     f"{np.nanmean(ds[f'bound_{b}'].values):.4f}, {abs(np.nanmean(gap)):.4f} "
                     f"{word} c_max (c_max - bound per seed: "
                     + ", ".join(_fixed(g) for g in gap) + ")")
    return lines
