"""Phase classification of stored runs: lazy, catapult, divergent, trivial.

Works on any stored sweep (``docs/schema.md``); nothing is re-run.  Each run
``(seed, eta_lambda0)`` gets one phase from its ``status`` and its recorded
training loss (criteria also in ``docs/phases.md`` and in the ``phase``
variable's attributes):

=================  ==================================================================
``status``         phase
=================  ==================================================================
``diverged``       ``divergent``
``trivial``        ``trivial`` (converged to a dead network, SPEC 1)
``converged``      ``catapult`` if ``max_t L_t >= catapult_factor * L_0``, else ``lazy``
``max_steps``      ``undetermined`` (neither converged nor diverged within max_steps)
``pending``        ``pending`` (not run)
=================  ==================================================================

``L_0`` is the loss at initialisation (step 0) and ``max_t L_t`` the largest
loss among the recorded steps ``t >= 1`` and the loss at the stop
(``final_loss``).  The default ``catapult_factor`` is 2: in the lazy phase
(``c < 2``) the loss of a wide model decays monotonically, so it never
doubles, whereas a catapult grows the loss exponentially, by a factor of
order the width, before it falls (SPEC 1; paper Appendix A).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .storage import SweepFileError

PHASES = ("lazy", "catapult", "divergent", "trivial", "undetermined", "pending")
DEFAULT_CATAPULT_FACTOR = 2.0
#: statuses that count as "the run converged to a useful model" when locating c_max
CONVERGED = "converged"

STATUS_TO_PHASE = {"diverged": "divergent", "trivial": "trivial",
                   "max_steps": "undetermined", "pending": "pending"}


def criteria(catapult_factor: float = DEFAULT_CATAPULT_FACTOR) -> str:
    """The classification rule, as stored in the ``phase`` variable's attributes."""
    return (f"status diverged -> divergent; status trivial -> trivial; status converged -> "
            f"catapult if max_(t>=1) L_t >= {catapult_factor:g} * L_0 (maximum over the recorded "
            f"steps and the final loss), else lazy; status max_steps -> undetermined; status "
            f"pending -> pending")


def require(ds: xr.Dataset, *names: str, purpose: str) -> None:
    """Raise :class:`SweepFileError` unless ``ds`` is a phasekit sweep holding ``names``."""
    if not isinstance(ds, xr.Dataset):
        raise SweepFileError(f"{purpose} needs an xarray Dataset of a phasekit sweep, got "
                             f"{type(ds).__name__}")
    if "phasekit_version" not in ds.attrs or "config" not in ds.attrs:
        raise SweepFileError(f"{purpose}: this dataset is not a phasekit sweep (no "
                             f"phasekit_version/config attributes)")
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise SweepFileError(f"{purpose} needs the variable(s) {', '.join(missing)}, which this "
                             f"sweep lacks")


def loss_peak_ratio(ds: xr.Dataset) -> xr.DataArray:
    """``max_(t>=1) L_t / L_0`` per run (``inf`` when ``L_0 = 0 < max L_t``, NaN if not run)."""
    require(ds, "loss", "final_loss", purpose="the catapult criterion")
    loss = ds["loss"]
    L0 = loss.isel(step=0)
    later = loss.isel(step=slice(1, None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN rows: runs that stopped
        peak = np.fmax(later.max("step", skipna=True), ds["final_loss"])
        ratio = xr.where(L0 > 0, peak / L0, xr.where(peak > 0, np.inf, 0.0))
    ratio = ratio.where(L0.notnull())
    ratio.attrs = {"long_name": "largest training loss after initialisation over the initial "
                                "loss, max_(t>=1) L_t / L_0",
                   "note": "maximum over the recorded steps and the loss at the stop"}
    return ratio.rename("loss_peak_ratio")


def classify(ds: xr.Dataset, catapult_factor: float = DEFAULT_CATAPULT_FACTOR) -> xr.DataArray:
    """The phase of every run, ``phase(seed, eta_lambda0)`` (see the module docstring)."""
    if not (np.isfinite(catapult_factor) and catapult_factor > 1):
        raise ValueError(f"catapult_factor must be a number above 1, got {catapult_factor!r}")
    require(ds, "status", "loss", "final_loss", purpose="phase classification")
    status = ds["status"].astype(str)
    unknown = sorted(set(np.unique(status.values)) - set(STATUS_TO_PHASE) - {CONVERGED})
    if unknown:
        raise SweepFileError(f"phase classification: unknown status value(s) {unknown}")
    ratio = loss_peak_ratio(ds)
    phase = np.empty(status.shape, dtype=object)
    for stat, ph in STATUS_TO_PHASE.items():
        phase[status.values == stat] = ph
    conv = status.values == CONVERGED
    catapult = np.asarray(ratio.values >= catapult_factor)
    phase[conv & catapult] = "catapult"
    phase[conv & ~catapult] = "lazy"
    out = xr.DataArray(phase.astype(str), dims=status.dims, coords=status.coords, name="phase")
    out.attrs = {"long_name": "phase of the run", "flag_meanings": " ".join(PHASES),
                 "criteria": criteria(catapult_factor), "catapult_factor": catapult_factor,
                 "documentation": "docs/phases.md"}
    return out


def add_phases(ds: xr.Dataset, catapult_factor: float = DEFAULT_CATAPULT_FACTOR) -> xr.Dataset:
    """A copy of ``ds`` with ``phase`` and ``loss_peak_ratio`` added (or replaced)."""
    phase = classify(ds, catapult_factor)
    out = ds.copy()
    out["phase"] = phase
    out["loss_peak_ratio"] = loss_peak_ratio(ds)
    return out


# -- critical learning rates from a stored grid --------------------------------------

def _first_index(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def critical_summary(ds: xr.Dataset, catapult_factor: float = DEFAULT_CATAPULT_FACTOR
                     ) -> xr.Dataset:
    """Per seed: the critical learning rates visible on the stored grid.

    * ``c_fail``: the smallest evaluated ``c`` whose run did not converge
      (diverged, trivial or max_steps); NaN if every evaluated run converged;
    * ``c_max``: the largest evaluated ``c`` below ``c_fail`` that converged
      (``phasekit boundary`` stores a refined ``c_max``, which is used when present);
    * ``c_catapult``: the smallest ``c`` classified ``catapult``;
    * ``c_trivial``: the smallest ``c`` whose run ended trivial;
    * ``converged_above``: converged runs above ``c_fail`` (non-monotone, chaotic
      dynamics near the boundary);
    * ``gap_<bound>``: ``c_max - bound_<bound>``, how far each stored bound sits
      below ``c_max``.
    """
    phase = classify(ds, catapult_factor)
    status = ds["status"].astype(str).values
    cs = ds["eta_lambda0"].values
    S = status.shape[0]
    out = {name: np.full(S, np.nan) for name in ("c_max", "c_fail", "c_catapult", "c_trivial")}
    above = np.zeros(S, dtype=np.int64)
    for s in range(S):
        evaluated = status[s] != "pending"
        fail = evaluated & (status[s] != CONVERGED)
        i_fail = _first_index(fail)
        conv = status[s] == CONVERGED
        if i_fail is not None:
            out["c_fail"][s] = cs[i_fail]
            below = np.flatnonzero(conv[:i_fail])
            if below.size:
                out["c_max"][s] = cs[below[-1]]
            above[s] = int(conv[i_fail:].sum())
        i_cat = _first_index(phase.values[s] == "catapult")
        if i_cat is not None:
            out["c_catapult"][s] = cs[i_cat]
        i_triv = _first_index(status[s] == "trivial")
        if i_triv is not None:
            out["c_trivial"][s] = cs[i_triv]
    if "c_max" in ds.variables:        # refined by phasekit boundary
        out["c_max"] = ds["c_max"].values.astype(float)
        if "c_fail" in ds.variables:
            out["c_fail"] = ds["c_fail"].values.astype(float)
        if "c_trivial" in ds.variables:
            out["c_trivial"] = ds["c_trivial"].values.astype(float)
    docs = {
        "c_max": "largest c that converged, below c_fail (eta_lambda0 units)",
        "c_fail": "smallest evaluated c that did not converge (diverged, trivial or max_steps)",
        "c_catapult": "smallest c whose run was classified catapult",
        "c_trivial": "smallest c whose run ended trivial (dead network)",
    }
    seed = ds["seed"]
    res = xr.Dataset({k: (("seed",), v, {"long_name": docs[k]}) for k, v in out.items()},
                     coords={"seed": seed})
    res["converged_above"] = (("seed",), above, {
        "long_name": "converged runs above c_fail (non-monotone boundary)"})
    for b in bound_names(ds):
        eq = ds[f"bound_{b}"].attrs.get("equation", b)
        res[f"gap_{b}"] = (("seed",), out["c_max"] - ds[f"bound_{b}"].values, {
            "long_name": f"c_max - bound_{b}: how far the {eq} bound sits below c_max"})
    res.attrs["catapult_window"] = "(2, c_max)"
    return res


def bound_names(ds: xr.Dataset) -> list[str]:
    """Names of the stored bounds (``bound_<name>`` variables), sorted."""
    return sorted(str(v)[len("bound_"):] for v in ds.data_vars if str(v).startswith("bound_"))


def _fmt(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4g}"


def _mean_spread(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if not v.size:
        return "-"
    if v.size == 1:
        return f"{v[0]:.4g}"
    return f"{v.mean():.4g} +/- {v.std(ddof=1):.2g} (range {v.min():.4g}-{v.max():.4g})"


def summary_text(ds: xr.Dataset, catapult_factor: float = DEFAULT_CATAPULT_FACTOR) -> str:
    """A plain-text report: phase counts per ``c`` and the critical learning rates."""
    phase = classify(ds, catapult_factor).values
    cs = ds["eta_lambda0"].values
    shown = [p for p in PHASES if (phase == p).any()]
    lines = [f"phases (criteria: docs/phases.md; catapult factor {catapult_factor:g}), runs per "
             f"learning rate over {phase.shape[0]} seed(s):",
             "eta_lambda0  " + " ".join(f"{p:>12}" for p in shown)]
    for j, c in enumerate(cs):
        col = phase[:, j]
        if (col == "pending").all():
            continue
        lines.append(f"{c:>11.4g}  " + " ".join(f"{int((col == p).sum()):>12}" for p in shown))
    crit = critical_summary(ds, catapult_factor)
    lines.append("")
    lines.append("critical learning rates (eta_lambda0 units), per seed:")
    header = ["seed", "c_max", "c_fail", "c_catapult", "c_trivial"]
    bnames = bound_names(ds)
    header += [f"bound_{b}" for b in bnames]
    lines.append("  ".join(f"{h:>12}" for h in header))
    for s, seed in enumerate(ds["seed"].values):
        row = [str(int(seed))] + [_fmt(float(crit[k].values[s]))
                                  for k in ("c_max", "c_fail", "c_catapult", "c_trivial")]
        row += [_fmt(float(ds[f"bound_{b}"].values[s])) for b in bnames]
        lines.append("  ".join(f"{x:>12}" for x in row))
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
    grid_c = np.broadcast_to(cs, phase.shape)
    slow = int(((phase == "lazy") & (grid_c > 2)).sum())
    early = int(((phase == "catapult") & (grid_c < 2)).sum())
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
