"""Critical learning rates of seed-averaged trajectories (Kalra & Barkeshli's convention,
docs/theory.md §6; criteria in docs/phases.md, "Seed-averaged critical rates").

:func:`phasekit.analysis.phases.critical_rates` thresholds every run's own trajectory;
here the thresholds are applied, per axis point and ``c``, to the mean over seeds of

    m_L(t) = < L_t / L_0 >_seeds,        m_S(t) = < lambda_max(H_t) / lambda_max(H_0) >_seeds

(``lambda_t / lambda_0`` is the sharpness ratio, eta being fixed per run), at the
recorded steps ``1 <= t <= W``.  A run that stopped before ``t`` contributes its value
at the stop (converged runs stay where they converged), except that a run that
diverged by ``t`` contributes ``+inf`` to ``m_L`` (the mean loss diverges with it) and
nothing to ``m_S`` (its sharpness is no longer defined).  Pending runs and runs with
``L_0 = 0`` contribute nothing.

* ``c_loss``: the smallest evaluated ``c`` with ``m_L(t) > 1 + r`` at some such step;
* ``c_sharp``: the smallest evaluated ``c`` with ``m_S(t) < 1 - delta`` at some such step;
* ``c_max``: the largest evaluated ``c`` below ``c_fail``, the smallest ``c`` at which a
  seed diverged -- the largest ``c`` at which the mean trajectory stays finite.  Unlike
  the per-seed ``c_max``, trivial and max_steps runs do not end it: their trajectories,
  and so the mean, stay finite.

Each comes with its bracket (``*_below``, ``c_fail``) as in ``critical_rates``.  Stored
beside the per-seed values with the suffix ``_mean_traj`` and ``average = "seeds"``.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from phasekit.analysis.phases import checked_status, early_thresholds, onset, require, sweep_axes
from phasekit.errors import ConfigError, SweepFileError

#: the values ``average`` takes (``None``: per seed, :func:`critical_rates`)
AVERAGES = ("seeds",)
#: suffix of the stored seed-averaged variables
SUFFIX = "_mean_traj"


def check_average(average: str | None, key: str = "average") -> None:
    """Refuse (:class:`ConfigError`, naming ``key``) an ``average`` other than ``"seeds"``
    or ``None``."""
    if average is not None and average not in AVERAGES:
        raise ConfigError(f"{key} must be \"seeds\" (thresholds on seed-averaged "
                          f"trajectories) or left out (per seed), got {average!r}")


def _window(ds: xr.Dataset, window: int) -> np.ndarray:
    t = ds["step"].values
    if not (t == 0).any():
        raise SweepFileError("the seed-averaged critical rates need the values at step 0")
    return np.flatnonzero((t >= 1) & (t <= window))


def _mean_ratio(ds: xr.Dataset, name: str, inside: np.ndarray, diverged_value: float
                ) -> xr.DataArray:
    """``< x_t / x_0 >_seeds`` over ``(*axes, eta_lambda0, step)`` at the steps ``inside``
    (module docstring: stopped runs hold their stop value; diverged ones give
    ``diverged_value`` from their divergence on, NaN leaves them out of the mean)."""
    traj = ds[name]
    x0 = traj.isel(step=0, drop=True)
    xt = traj.isel(step=inside)
    t, steps = xt["step"], ds["steps"]
    xt = xt.where(t <= steps, ds[f"final_{name}"])                   # held at the stop
    status = ds["status"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = xr.where(x0 > 0, xt / x0, np.nan)
        ratio = xr.where((status == "diverged") & (t >= steps), diverged_value, ratio)
        ratio = ratio.where(status != "pending")
        return ratio.mean("seed", skipna=True)


#: the seed-averaged critical rate -> the flag of :func:`mean_flags` whose onset it is
#: (``c_max`` is the largest evaluated ``c`` below the onset of ``diverged``)
MEAN_FLAGS = {"c_loss": "loss_rose", "c_sharp": "sharpness_fell", "c_max": "diverged"}


def mean_flags(ds: xr.Dataset, thresholds: dict) -> xr.Dataset:
    """Per ``(*axes, eta_lambda0)``, the properties whose onsets are the seed-averaged
    rates (module docstring): ``loss_rose`` (``m_L(t) > 1 + r`` at a recorded step
    ``1 <= t <= W``), ``sharpness_fell`` (``m_S(t) < 1 - delta`` at such a step) and
    ``diverged`` (some seed diverged); the first two only where ``ds`` records the
    trajectory and the window.  ``thresholds`` as :func:`early_thresholds` returns them.
    ``phasekit boundary --average seeds`` bisects on these flags."""
    status = checked_status(ds, "the seed-averaged critical learning rates")
    out = {"diverged": (status == "diverged").any("seed")}
    rise, drop = thresholds["loss_rise"], thresholds["sharpness_drop"]
    for flag, var, hit in (("loss_rose", "loss", lambda m: m > 1 + rise),
                           ("sharpness_fell", "sharpness", lambda m: m < 1 - drop)):
        if var not in ds.variables:
            continue
        inside = _window(ds, thresholds["early_window"])
        if inside.size:
            mean = _mean_ratio(ds, var, inside, np.inf if var == "loss" else np.nan)
            out[flag] = hit(mean).any("step")
    return xr.Dataset(out)


def seed_averaged_rates(ds: xr.Dataset, early_window: int | None = None,
                        sharpness_drop: float | None = None, loss_rise: float | None = None
                        ) -> xr.Dataset:
    """``c_loss``, ``c_sharp``, ``c_max`` and their brackets of the seed-averaged
    trajectories, over ``(*axes)`` (module docstring): the onsets of
    :func:`mean_flags`; the thresholds as in
    :func:`phasekit.analysis.phases.critical_rates`."""
    require(ds, "status", "steps", purpose="the seed-averaged critical learning rates")
    th = early_thresholds(ds, early_window, sharpness_drop, loss_rise)
    window, drop, rise = th["early_window"], th["sharpness_drop"], th["loss_rise"]
    axes = sweep_axes(ds)
    ran = (ds["status"].astype(str) != "pending").any("seed")
    flags = mean_flags(ds, th)
    common = {"units": "1", "average": "seeds", "documentation": "docs/phases.md"}
    out: dict[str, tuple[xr.DataArray, dict]] = {}
    for name, text in (
            ("c_loss", f"smallest evaluated c with <L_t/L_0>_seeds > 1 + {rise:g} at a "
                       f"recorded step t in 1..{window} (a diverged seed makes the mean "
                       f"infinite)"),
            ("c_sharp", f"smallest evaluated c with <lambda_t/lambda_0>_seeds < 1 - {drop:g} "
                        f"at a recorded step t in 1..{window} (over the seeds not diverged "
                        f"by t)")):
        if MEAN_FLAGS[name] not in flags:
            continue
        first, below = onset(flags[MEAN_FLAGS[name]], ran)
        out[name] = (first, {"long_name": f"{name} of the seed-averaged trajectories",
                             "definition": text, **common, **th})
        out[f"{name}_below"] = (below, {"long_name": f"largest evaluated c below {name} of "
                                        f"the seed-averaged trajectories", **common})
    fail, c_max = onset(flags[MEAN_FLAGS["c_max"]], ran)
    out["c_max"] = (c_max, {
        "long_name": "largest c at which the seed-averaged trajectory stays finite",
        "definition": "largest evaluated c below c_fail, the smallest evaluated c at which "
                      "some seed diverged (trivial and max_steps runs stay finite)", **common})
    out["c_fail"] = (fail, {"long_name": "smallest evaluated c at which some seed diverged "
                            "(upper end of the seed-averaged c_max bracket)", **common})
    res = xr.Dataset({name: da.transpose(*axes).astype(float).assign_attrs(attrs)
                      for name, (da, attrs) in out.items()})
    res.attrs.update({**th, "average": "seeds", "documentation": "docs/phases.md"})
    return res


def add_seed_averaged(ds: xr.Dataset, early_window: int | None = None,
                      sharpness_drop: float | None = None, loss_rise: float | None = None
                      ) -> xr.Dataset:
    """A copy of ``ds`` with :func:`seed_averaged_rates` stored as ``<name>_mean_traj``
    (``c_loss_mean_traj``, ``c_max_mean_traj``, ...), added or replaced; a ``phasekit
    boundary --average seeds`` file keeps the values its search refined."""
    rates = seed_averaged_rates(ds, early_window, sharpness_drop, loss_rise)
    refined = "boundary_tol" in ds.attrs and ds.attrs.get("boundary_average") == "seeds"
    out = ds.copy()
    for name, da in rates.data_vars.items():
        if not (refined and f"{name}{SUFFIX}" in ds.variables):
            out[f"{name}{SUFFIX}"] = da.variable
    return out


#: the thresholds a stored ``_mean_traj`` variable records (:func:`early_thresholds`)
THRESHOLDS = ("early_window", "sharpness_drop", "loss_rise")


def stored_seed_averaged(ds: xr.Dataset) -> xr.Dataset:
    """The seed-averaged critical rates as the file holds them, over ``(*axes)``: every
    ``<name>_mean_traj`` variable of ``ds`` (what ``phasekit analyze --average seeds``
    wrote, or the values a ``phasekit boundary --average seeds`` search refined) is read
    as stored; only the missing ones are computed by :func:`seed_averaged_rates`, with
    the thresholds the stored variables record.  The attributes hold those thresholds.
    Figures draw these, as they draw :func:`phasekit.analysis.phases.stored_critical`."""
    stored = [str(v) for v in ds.data_vars if str(v).endswith(SUFFIX)]
    th = next(({k: ds[v].attrs[k] for k in THRESHOLDS} for v in stored
               if all(k in ds[v].attrs for k in THRESHOLDS)), {})
    rates = seed_averaged_rates(ds, **th)
    axes = sweep_axes(ds)
    for name in list(rates.data_vars):
        if f"{name}{SUFFIX}" in ds.data_vars:
            rates[name] = ds[f"{name}{SUFFIX}"].astype(float).transpose(*axes)
    return rates


def mean_phase(ds: xr.Dataset, thresholds: dict) -> xr.DataArray:
    """Per ``(*axes, eta_lambda0)``, the regime of the seed-averaged trajectory whose
    onsets :func:`seed_averaged_rates` locates (the flags of :func:`mean_flags`):
    ``divergent`` where some seed diverged (its mean loss diverges), else ``catapult``
    where the mean loss rose (``loss_rose``), else ``lazy``; ``undetermined`` (not
    divergent) where ``ds`` records no loss trajectory, ``pending`` where no seed ran.
    The cells of the seed-averaged phase diagram."""
    flags = mean_flags(ds, thresholds)
    ran = (ds["status"].astype(str) != "pending").any("seed")
    rest = (xr.where(flags["loss_rose"], "catapult", "lazy") if "loss_rose" in flags
            else "undetermined")
    return xr.where(flags["diverged"], "divergent", rest).where(ran, "pending")


def averaged_report(rates: xr.Dataset) -> str:
    """Lines of the seed-averaged critical rates, one per axis point."""
    names = [n for n in ("c_loss", "c_sharp", "c_max", "c_fail") if n in rates]
    lines = [f"critical learning rates of the seed-averaged trajectories (early window "
             f"{rates.attrs['early_window']} steps; docs/phases.md):"]
    flat = rates.stack(point=list(rates.dims)) if rates.dims else rates.expand_dims("point")
    for i in range(flat.sizes["point"]):
        cell = flat.isel(point=i)
        where = ", ".join(f"{d} = {cell[d].item()}" for d in rates.dims)
        values = "  ".join(f"{n} = {float(cell[n]):.4g}" for n in names)
        lines.append(f"  {where + ': ' if where else ''}{values}")
    return "\n".join(lines)
