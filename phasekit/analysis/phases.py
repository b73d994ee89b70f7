"""Phase classification of stored runs: lazy, catapult, divergent, trivial.

Works on any stored sweep (``docs/schema.md``); nothing is re-run.  Each run
``(*axes, seed, eta_lambda0)`` (``axes``: the sweep's axis dimensions, none for
a sweep without ``sweep.axes``) gets one phase from its ``status`` and its
recorded training loss (criteria also in ``docs/phases.md`` and in the
``phase`` variable's attributes):

=================  ==================================================================
``status``         phase
=================  ==================================================================
``diverged``       ``divergent``
``trivial``        ``trivial`` (converged to a dead network, docs/theory.md §1)
``converged``      ``catapult`` if ``max_t L_t >= catapult_factor * L_0``, else ``lazy``
``max_steps``      ``undetermined`` (neither converged nor diverged within max_steps)
``pending``        ``pending`` (not run)
=================  ==================================================================

``L_0`` is the loss at initialisation (step 0) and ``max_t L_t`` the largest
loss among the recorded steps ``t >= 1`` and the loss at the stop
(``final_loss``).  The default ``catapult_factor`` is 2: in the lazy phase
(``c < 2``) the loss of a wide model decays monotonically, so it never
doubles, whereas a catapult grows the loss exponentially, by a factor of
order the width, before it falls (docs/theory.md §1; paper Appendix A).

Critical learning rates per ``(*axes, seed)`` on the stored grid of ``c``
(:func:`critical_rates`, Kalra & Barkeshli's early-training quantities, and
``c_max``): ``c_loss`` where the loss first rises above ``L_0`` within the
first ``early_window`` steps, ``c_sharp`` where the sharpness first drops
below ``(1 - sharpness_drop)`` times its initial value in that window,
``c_max`` the largest converged ``c`` below the first failure and
``c_trivial`` the first ``c`` that ends trivial (``docs/phases.md``).
"""

from __future__ import annotations

import tomllib
import warnings

import numpy as np
import xarray as xr

from phasekit.errors import ConfigError, SweepFileError

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


def sweep_axes(ds: xr.Dataset) -> list[str]:
    """The sweep's axis dimensions still present in ``ds``, in config order.

    Read from the ``axes`` attribute (space-separated; absent or empty for a
    sweep without axes).  An axis removed by a selection such as
    ``ds.sel(width=512)`` is no longer a dimension and is left out.
    """
    names = str(ds.attrs.get("axes", "") or "").split()
    return [n for n in names if n in ds.dims]


def require(ds: xr.Dataset, *names: str, purpose: str) -> None:
    """Raise :class:`SweepFileError` unless ``ds`` is a phasekit sweep holding ``names``."""
    if not isinstance(ds, xr.Dataset):
        raise SweepFileError(f"{purpose} needs an xarray Dataset of a phasekit sweep, got "
                             f"{type(ds).__name__}")
    if "phasekit_version" not in ds.attrs or "config" not in ds.attrs:
        raise SweepFileError(f"{purpose}: this dataset is not a phasekit sweep (no "
                             f"phasekit_version/config attributes)")
    config = ds.attrs["config"]
    if not isinstance(config, str):
        raise SweepFileError(f"{purpose}: the config attribute of this dataset is not text "
                             f"(it holds a {type(config).__name__}); a phasekit sweep stores its "
                             f"resolved config there as TOML text")
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise SweepFileError(f"{purpose} needs the variable(s) {', '.join(missing)}, which this "
                             f"sweep lacks")
    if "eta_lambda0" in ds.variables:
        cs = ds["eta_lambda0"].values
        bad = np.flatnonzero(~np.isfinite(cs)) if cs.dtype.kind in "iuf" else [None]
        if len(bad):
            where = "" if bad[0] is None else f" at position(s) {', '.join(map(str, bad[:5]))}"
            raise SweepFileError(f"{purpose}: the learning-rate coordinate eta_lambda0 holds "
                                 f"values that are not finite numbers{where}; every c = eta "
                                 f"lambda_0 of a sweep must be a finite number")


def checked_status(ds: xr.Dataset, purpose: str) -> xr.DataArray:
    """``status`` as strings, checked for values phasekit does not know."""
    status = ds["status"].astype(str)
    unknown = sorted(set(np.unique(status.values)) - set(STATUS_TO_PHASE) - {CONVERGED})
    if unknown:
        raise SweepFileError(f"{purpose}: unknown status value(s) {unknown}")
    return status


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
    """The phase of every run, ``phase(*axes, seed, eta_lambda0)`` (module docstring)."""
    if not (np.isfinite(catapult_factor) and catapult_factor > 1):
        raise ValueError(f"catapult_factor must be a number above 1, got {catapult_factor!r}")
    require(ds, "status", "loss", "final_loss", purpose="phase classification")
    status = checked_status(ds, "phase classification")
    ratio = loss_peak_ratio(ds).transpose(*status.dims)
    phase = np.empty(status.shape, dtype=object)
    for stat, ph in STATUS_TO_PHASE.items():
        phase[status.values == stat] = ph
    conv = status.values == CONVERGED
    catapult = np.asarray(ratio.values >= catapult_factor)
    phase[conv & catapult] = "catapult"
    phase[conv & ~catapult] = "lazy"
    out = xr.DataArray(phase.astype(str), dims=status.dims, coords=status.coords, name="phase")
    out.attrs = {"long_name": "phase of the run", "flag_values": list(PHASES),
                 "flag_meanings": " ".join(PHASES),
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


# -- majority phase over runs ---------------------------------------------------------

#: the phases a majority is taken over (``pending`` runs have no phase and do not vote)
VOTING = PHASES[:-1]


def phase_counts(phase: xr.DataArray, dims: str | list[str] = "seed") -> xr.DataArray:
    """How many runs are in each phase, summed over ``dims``: a new leading dim ``phase``
    with the values of :data:`VOTING` (``pending`` is not counted)."""
    counts = xr.concat([(phase == p).sum(dims) for p in VOTING], dim="phase")
    return counts.assign_coords(phase=list(VOTING))


def majority(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(phase, disagree)`` from counts whose first axis follows :data:`VOTING`.

    The majority phase wins; a tie goes to the phase listed first in
    :data:`PHASES`; ``pending`` where no run voted.  ``disagree`` is true where
    the runs fall into more than one phase.
    """
    counts = np.asarray(counts)
    names = np.asarray(VOTING)[np.argmax(counts, axis=0)]
    names = np.where(counts.sum(axis=0) > 0, names, "pending")
    return names, (counts > 0).sum(axis=0) > 1


def tied(counts: np.ndarray) -> np.ndarray:
    """Where no phase has a majority: the largest count of ``counts`` (first axis
    following :data:`VOTING`) is shared by two or more phases, e.g. 4 lazy and 4
    catapult seeds (:func:`majority` then names the phase listed first)."""
    counts = np.asarray(counts)
    top = counts.max(axis=0)
    return (top > 0) & ((counts == top).sum(axis=0) > 1)


# -- critical learning rates from a stored grid --------------------------------------

#: thresholds of the early-training criteria for files whose stored config has none
#: (written before phasekit stored them); phasekit's choices, docs/phases.md
EARLY_DEFAULTS = {"early_window": 10, "sharpness_drop": 0.05, "loss_rise": 0.0}
#: the critical learning rates of :func:`critical_rates`, each with its bracket variable
#: the early-window onsets: critical rate -> the per-run flag of :func:`early_flags`
EARLY = {"c_loss": "loss_rose", "c_sharp": "sharpness_fell"}
BRACKETS = {"c_loss": "c_loss_below", "c_sharp": "c_sharp_below", "c_max": "c_fail",
            "c_trivial": "c_trivial_below"}


def early_thresholds(ds: xr.Dataset, early_window: int | None = None,
                     sharpness_drop: float | None = None, loss_rise: float | None = None
                     ) -> dict[str, float]:
    """The thresholds of ``c_loss`` and ``c_sharp``: the arguments given, else the stored
    config's ``[sweep]`` values, else :data:`EARLY_DEFAULTS`.  Raises ConfigError for
    a window that is not a positive integer, a drop outside [0, 1) or a negative rise."""
    try:
        stored = tomllib.loads(str(ds.attrs.get("config", ""))).get("sweep", {})
    except tomllib.TOMLDecodeError as exc:
        raise SweepFileError(f"the stored config is not valid TOML ({exc})") from None
    given = {"early_window": early_window, "sharpness_drop": sharpness_drop,
             "loss_rise": loss_rise}
    out = {k: given[k] if given[k] is not None else stored.get(k, default)
           for k, default in EARLY_DEFAULTS.items()}
    window = out["early_window"]
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ConfigError(f"early_window must be a positive whole number of steps, got "
                          f"{window!r}")
    drop, rise = out["sharpness_drop"], out["loss_rise"]
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop < 1:
        raise ConfigError(f"sharpness_drop must be a number in [0, 1), got {drop!r}")
    if (isinstance(rise, bool) or not isinstance(rise, int | float) or not np.isfinite(rise)
            or rise < 0):
        raise ConfigError(f"loss_rise must be a finite number >= 0, got {rise!r}")
    return {"early_window": int(window), "sharpness_drop": float(drop),
            "loss_rise": float(rise)}


def onset(hit: xr.DataArray, ran: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """``(first, below)`` over ``eta_lambda0``: the smallest evaluated ``c`` where ``hit``
    holds, and the largest evaluated ``c`` below it (NaN where there is none).

    With ``hit`` = "did not converge" this is the bracket rule of ``phasekit
    boundary`` (``phasekit.analysis.boundary.bracket``): ``below`` = ``c_max``, ``first`` =
    ``c_fail``; every evaluated ``c`` below ``first`` lacks the property.
    """
    c = ran["eta_lambda0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN: nothing qualifies
        first = xr.where(hit & ran, c, np.nan).min("eta_lambda0")
        below = xr.where(ran & (c < first), c, np.nan).max("eta_lambda0")
    return first, below


def _early(ds: xr.Dataset, name: str, window: int) -> tuple[xr.DataArray, xr.DataArray] | None:
    """``(x_0, x_t)`` of trajectory ``name``: the value at initialisation and the values
    at the recorded steps ``1 <= t <= window``, NaN where the run had stopped
    (``t > steps``); None when no step of the window is recorded."""
    t = ds["step"].values
    if not (t == 0).any():
        raise SweepFileError(f"'{name}' has no value at step 0 (the initialisation)")
    inside = np.flatnonzero((t >= 1) & (t <= window))
    if not inside.size:
        return None
    traj = ds[name]
    values = traj.isel(step=inside)
    return traj.sel(step=0, drop=True), values.where(values["step"] <= ds["steps"])


def early_flags(ds: xr.Dataset, early_window: int | None = None,
                sharpness_drop: float | None = None, loss_rise: float | None = None
                ) -> xr.Dataset:
    """Per run, over ``(*axes, seed, eta_lambda0)``: ``loss_rose`` (``L_t > (1 + r) L_0``
    at a recorded step ``1 <= t <= W`` while the run was running, or divergence at a
    step ``1 <= steps <= W``) and ``sharpness_fell`` (``eta lambda_max(H_t) < (1 -
    delta) eta lambda_max(H_0)`` at such a step); the flags whose ``c`` onsets are
    ``c_loss`` and ``c_sharp`` (thresholds as in :func:`critical_rates`)."""
    th = early_thresholds(ds, early_window, sharpness_drop, loss_rise)
    window = th["early_window"]
    status = checked_status(ds, "the early-training criteria")
    out = {}
    early = _early(ds, "loss", window) if "loss" in ds.variables else None
    if early is not None:
        L0, Lt = early
        rose = Lt > (1 + th["loss_rise"]) * L0
        rose = rose.any([d for d in rose.dims if d not in status.dims])
        steps = ds["steps"]
        out["loss_rose"] = rose | ((status == "diverged") & (steps >= 1) & (steps <= window))
    early = _early(ds, "sharpness", window) if "sharpness" in ds.variables else None
    if early is not None:
        S0, St = early
        fell = St < (1 - th["sharpness_drop"]) * S0
        out["sharpness_fell"] = fell.any([d for d in fell.dims if d not in status.dims])
    return xr.Dataset({k: v.transpose(*status.dims) for k, v in out.items()}, attrs=th)


def _grid_attrs(long_name: str, definition: str, bracket: str,
                th: dict[str, float] | None = None) -> dict:
    attrs = {"long_name": long_name, "definition": definition, "units": "1",
             "resolution": bracket, "documentation": "docs/phases.md"}
    return {**attrs, **(th or {})}


def critical_rates(ds: xr.Dataset, early_window: int | None = None,
                   sharpness_drop: float | None = None, loss_rise: float | None = None
                   ) -> xr.Dataset:
    """Critical learning rates on the stored grid, over ``(*axes, seed)``.

    Only evaluated runs (status not ``pending``) count; NaN where no evaluated
    ``c`` qualifies.  With ``W`` = ``early_window``, ``r`` = ``loss_rise`` and
    ``delta`` = ``sharpness_drop`` (defaults: the stored config's ``[sweep]``,
    else 10, 0.05 and 0):

    * ``c_loss``: the smallest ``c`` with ``L_t > (1 + r) L_0`` at some recorded
      step ``1 <= t <= W`` at which the run was still running (``t <= steps``),
      or whose run diverged at a step ``1 <= steps <= W``;
    * ``c_sharp``: the smallest ``c`` with ``eta lambda_max(H_t) < (1 - delta)``
      times its step-0 value at such a step;
    * ``c_max``, ``c_fail``: the bracket of ``phasekit boundary`` on the grid:
      ``c_fail`` the smallest ``c`` whose run did not converge (diverged, trivial
      or max_steps), ``c_max`` the largest ``c`` below it (which converged); both
      NaN where nothing failed (the grid does not reach ``c_max``);
    * ``c_trivial``: the smallest ``c`` whose run ended trivial.

    ``c_loss_below``, ``c_sharp_below`` and ``c_trivial_below`` hold the largest
    evaluated ``c`` below each (the true onset lies in ``(below, c]``; NaN when
    ``c`` is the smallest evaluated one), ``c_fail`` the upper end of ``c_max``'s
    bracket ``[c_max, c_fail)``.  ``c_loss`` needs ``loss`` and ``c_sharp`` needs
    ``sharpness``: each is absent when its trajectory is missing or no step of the
    window was recorded.
    """
    purpose = "the critical learning rates"
    require(ds, "status", "steps", purpose=purpose)
    th = early_thresholds(ds, early_window, sharpness_drop, loss_rise)
    axes = sweep_axes(ds)
    status = checked_status(ds, purpose).transpose(*axes, "seed", "eta_lambda0")
    ran = status != "pending"
    flags = early_flags(ds, th["early_window"], th["sharpness_drop"], th["loss_rise"])
    out = {**_early_onsets(flags, ran, th), **_status_onsets(status, ran)}
    res = xr.Dataset({name: da.transpose(*axes, "seed").astype(float).assign_attrs(attrs)
                      for name, (da, attrs) in out.items()})
    res.attrs.update({**th, "documentation": "docs/phases.md"})
    return res


#: the resolution of an onset found on the grid
_BRACKET = ("grid resolution: the onset lies in ({0}_below, {0}]; {0}_below is the largest "
            "evaluated c below {0} (NaN when {0} is the smallest evaluated c)")


def _early_onsets(flags: xr.Dataset, ran: xr.DataArray, th: dict
                  ) -> dict[str, tuple[xr.DataArray, dict]]:
    """``c_loss`` and ``c_sharp`` with their brackets, where ``flags`` has them
    (:func:`critical_rates`), and their attributes."""
    window, drop, rise = th["early_window"], th["sharpness_drop"], th["loss_rise"]
    where = (f"at a recorded step t in 1..{window} at which the run was still running "
             f"(t <= steps)")
    out: dict[str, tuple[xr.DataArray, dict]] = {}
    if "loss_rose" in flags:
        first, below = onset(flags["loss_rose"], ran)
        loss_th = {"early_window": window, "loss_rise": rise}
        out["c_loss"] = (first, _grid_attrs(
            "smallest c at which the training loss rises above its initial value "
            "in early training",
            f"smallest evaluated c with L_t > (1 + {rise:g}) L_0 {where}, or whose run "
            f"diverged at a step in 1..{window}", _BRACKET.format("c_loss"), loss_th))
        out["c_loss_below"] = (below, {"long_name": "largest evaluated c below c_loss (lower "
                                       "end of its bracket)", "units": "1"})
    if "sharpness_fell" in flags:
        first, below = onset(flags["sharpness_fell"], ran)
        out["c_sharp"] = (first, _grid_attrs(
            "smallest c at which the sharpness eta lambda_max(H_t) decreases in "
            "early training",
            f"smallest evaluated c with eta lambda_max(H_t) < (1 - {drop:g}) eta "
            f"lambda_max(H_0) {where}", _BRACKET.format("c_sharp"),
            {"early_window": window, "sharpness_drop": drop}))
        out["c_sharp_below"] = (below, {"long_name": "largest evaluated c below c_sharp "
                                        "(lower end of its bracket)", "units": "1"})
    return out


def _status_onsets(status: xr.DataArray, ran: xr.DataArray
                   ) -> dict[str, tuple[xr.DataArray, dict]]:
    """``c_max`` with ``c_fail``, and ``c_trivial`` with its bracket, from the statuses
    (:func:`critical_rates`), and their attributes."""
    out: dict[str, tuple[xr.DataArray, dict]] = {}
    fail, c_max = onset(status != CONVERGED, ran)
    out["c_max"] = (c_max, _grid_attrs(
        "largest c that converged, below the first c that did not converge",
        "c_fail = smallest evaluated c whose run did not converge (diverged, trivial or "
        "max_steps); c_max = largest evaluated c below c_fail (it converged); the bracket "
        "rule of phasekit boundary; NaN where no evaluated run failed or none below the "
        "first failure converged",
        "grid resolution: the largest convergent c lies in [c_max, c_fail)"))
    out["c_fail"] = (fail, {"long_name": "smallest evaluated c whose run did not converge "
                            "(upper end of the c_max bracket)", "units": "1"})
    first, below = onset(status == "trivial", ran)
    out["c_trivial"] = (first, _grid_attrs(
        "smallest c whose run ended trivial (dead network)",
        "smallest evaluated c with status trivial; NaN if none", _BRACKET.format("c_trivial")))
    out["c_trivial_below"] = (below, {"long_name": "largest evaluated c below c_trivial "
                                      "(lower end of its bracket)", "units": "1"})
    return out


def _refined(ds: xr.Dataset) -> list[str]:
    """The critical learning rates a ``phasekit boundary`` file stores, refined by its
    search beyond the grid (``c_max``, ``c_fail``, ``c_trivial``, and ``c_loss``,
    ``c_sharp`` with their brackets when it searched them); none for other files."""
    if "boundary_tol" not in ds.attrs:
        return []
    return [n for pair in BRACKETS.items() for n in pair if n in ds.variables]


def add_critical(ds: xr.Dataset, early_window: int | None = None,
                 sharpness_drop: float | None = None, loss_rise: float | None = None
                 ) -> xr.Dataset:
    """A copy of ``ds`` with the variables of :func:`critical_rates` added (or replaced).

    Cheap (only the first ``early_window`` steps of ``loss`` and ``sharpness`` are
    read).  A ``phasekit boundary`` file keeps the values its search refined
    (``c_max``, ``c_fail``, ``c_trivial``, ``c_loss``, ``c_sharp``, ... as stored).
    """
    rates = critical_rates(ds, early_window, sharpness_drop, loss_rise)
    keep = _refined(ds)
    out = ds.copy()
    for name, da in rates.data_vars.items():
        if name not in keep:
            out[name] = da.variable          # keep the coordinates (and their attrs) of ds
    return out


def stored_critical(ds: xr.Dataset) -> xr.Dataset:
    """The critical learning rates as the file holds them, over ``(*axes, seed)``: every
    variable of :func:`critical_rates` that ``ds`` stores (a ``phasekit boundary``
    file's refined values, or what ``phasekit run``/``analyze`` wrote with their
    thresholds) is read as stored; only the missing ones are computed from the grid.
    Figures draw these, so that they show what the file holds."""
    rates = critical_rates(ds)
    axes = sweep_axes(ds)
    for name in rates.data_vars:
        if name in ds.data_vars:
            rates[name] = ds[name].astype(float).transpose(*axes, "seed")
    return rates


def bound_names(ds: xr.Dataset) -> list[str]:
    """Names of the stored bounds (``bound_<name>`` variables), sorted."""
    return sorted(str(v)[len("bound_"):] for v in ds.data_vars if str(v).startswith("bound_"))


# -- the printed report ----------------------------------------------------------------


def critical_summary(ds: xr.Dataset, catapult_factor: float = DEFAULT_CATAPULT_FACTOR, *,
                     early_window: int | None = None, sharpness_drop: float | None = None,
                     loss_rise: float | None = None) -> xr.Dataset:
    """The critical learning rates visible on the stored grid, over ``(*axes, seed)``.

    Everything of :func:`critical_rates` (``c_loss``, ``c_sharp``, ``c_max``,
    ``c_fail``, ``c_trivial`` and their brackets) plus

    * ``c_catapult``: the smallest ``c`` classified ``catapult``;
    * ``converged_above``: converged runs above ``c_fail`` (non-monotone, chaotic
      dynamics near the boundary);
    * ``gap_<bound>``: ``c_max - bound_<bound>``, how far each stored bound sits
      below ``c_max``.

    A ``phasekit boundary`` file's refined values (``c_max``, ``c_fail``,
    ``c_trivial``, and ``c_loss``, ``c_sharp`` where it searched them) are used
    instead of the grid values.
    """
    phase = classify(ds, catapult_factor)
    res = critical_rates(ds, early_window, sharpness_drop, loss_rise)
    axes = sweep_axes(ds)
    for name in _refined(ds):
        res[name] = ds[name].astype(float).transpose(*axes, "seed")
    cat, _ = onset(phase == "catapult", phase != "pending")
    res["c_catapult"] = cat.transpose(*axes, "seed").assign_attrs(
        long_name="smallest c whose run was classified catapult", units="1",
        catapult_factor=catapult_factor)
    status = ds["status"].astype(str)
    above = ((status == CONVERGED) & (ds["eta_lambda0"] > res["c_fail"])).sum("eta_lambda0")
    res["converged_above"] = above.transpose(*axes, "seed").assign_attrs(
        long_name="converged runs above c_fail (non-monotone boundary)")
    for b in bound_names(ds):
        eq = ds[f"bound_{b}"].attrs.get("equation", b)
        res[f"gap_{b}"] = (res["c_max"] - ds[f"bound_{b}"]).transpose(*axes, "seed")
        res[f"gap_{b}"].attrs = {"long_name": f"c_max - bound_{b}: how far the {eq} bound "
                                              f"sits below c_max", "units": "1"}
    res.attrs["catapult_window"] = "(2, c_max)"
    return res
