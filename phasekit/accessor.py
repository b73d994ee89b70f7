"""``ds.phasekit``: the analysis of a stored sweep, as an xarray Dataset accessor.

Registered on ``import phasekit``::

    ds = phasekit.load("sweep.nc")          # or xr.open_dataset(...)
    ds.phasekit.phases()                   # phase(*axes, seed, eta_lambda0)
    ds = ds.phasekit.add_phases()          # ... stored as variables
    print(ds.phasekit.summary())           # phase counts, critical rates, bounds
    ds.phasekit.critical()                 # c_loss, c_sharp, c_max, ... over (*axes, seed)
    ds.phasekit.critical(average="seeds")  # ... of the seed-averaged trajectories, (*axes)
    ds = ds.phasekit.add_critical()        # ... stored as variables
    fig = ds.phasekit.plot(panels="a,d,e", c_values=[2.5, 3.5])
    fig = ds.phasekit.plot(x="hidden_layers/width")   # 2-D diagram of a sweep with axes
    ds.phasekit.config()                   # the resolved config, as a dict
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import xarray as xr

# Imported lazily inside the methods: ``import phasekit`` registers this accessor
# and should stay light (no torch).
CATAPULT_FACTOR = 2.0   # phasekit.analysis.phases.DEFAULT_CATAPULT_FACTOR


@xr.register_dataset_accessor("phasekit")
class PhasekitAccessor:
    """Phase analysis of a phasekit sweep (see the module docstring)."""

    def __init__(self, ds: xr.Dataset):
        from phasekit.io.cf import decode

        self._ds = decode(ds)       # flags as strings, also for a plain xr.open_dataset

    def _check(self) -> xr.Dataset:
        from phasekit.analysis.phases import require

        require(self._ds, purpose="ds.phasekit")
        return self._ds

    def config(self) -> dict:
        """The resolved config the sweep was run with (``[model]``, ``[dataset]``, ``[sweep]``)."""
        from phasekit.io.netcdf import stored_config

        return stored_config(self._check())

    def phases(self, catapult_factor: float = CATAPULT_FACTOR) -> xr.DataArray:
        """``phase(*axes, seed, eta_lambda0)``: lazy, catapult, divergent, trivial, undetermined
        or pending (``docs/phases.md``)."""
        from phasekit.analysis.phases import classify

        return classify(self._check(), catapult_factor)

    def add_phases(self, catapult_factor: float = CATAPULT_FACTOR
                   ) -> xr.Dataset:
        """A copy with the ``phase`` and ``loss_peak_ratio`` variables added."""
        from phasekit.analysis.phases import add_phases

        return add_phases(self._check(), catapult_factor)

    def critical(self, catapult_factor: float = CATAPULT_FACTOR, *,
                 early_window: int | None = None, sharpness_drop: float | None = None,
                 loss_rise: float | None = None, average: str | None = None) -> xr.Dataset:
        """Critical learning rates over ``(*axes, seed)``: ``c_loss``, ``c_sharp``,
        ``c_max``, ``c_fail``, ``c_trivial`` (with their brackets), ``c_catapult`` and
        ``gap_<bound>`` (:func:`phasekit.analysis.phases.critical_summary`, ``docs/phases.md``);
        the thresholds default to the stored config's.  ``average="seeds"``: ``c_loss``,
        ``c_sharp``, ``c_max`` (and brackets) of the seed-averaged trajectories over
        ``(*axes)`` instead (:func:`phasekit.analysis.averaged.seed_averaged_rates`)."""
        from phasekit.analysis.averaged import check_average, seed_averaged_rates
        from phasekit.analysis.phases import critical_summary

        check_average(average)
        if average == "seeds":
            return seed_averaged_rates(self._check(), early_window, sharpness_drop, loss_rise)

        return critical_summary(self._check(), catapult_factor, early_window=early_window,
                                sharpness_drop=sharpness_drop, loss_rise=loss_rise)

    def add_critical(self, *, early_window: int | None = None,
                     sharpness_drop: float | None = None, loss_rise: float | None = None,
                     average: str | None = None) -> xr.Dataset:
        """A copy with the variables of :func:`phasekit.analysis.phases.critical_rates` added;
        with ``average="seeds"`` also the seed-averaged ones, ``<name>_mean_traj``."""
        from phasekit.analysis.averaged import add_seed_averaged, check_average
        from phasekit.analysis.phases import add_critical

        check_average(average)
        out = add_critical(self._check(), early_window, sharpness_drop, loss_rise)
        if average == "seeds":
            out = add_seed_averaged(out, early_window, sharpness_drop, loss_rise)
        return out

    def summary(self, catapult_factor: float = CATAPULT_FACTOR, *,
                early_window: int | None = None, sharpness_drop: float | None = None,
                loss_rise: float | None = None) -> str:
        """A printable report: phases per learning rate, critical learning rates, bounds
        (and the boundary search's results for a ``phasekit boundary`` file)."""
        from phasekit.analysis.report import summary_text

        ds = self._check()
        text = summary_text(ds, catapult_factor, early_window=early_window,
                            sharpness_drop=sharpness_drop, loss_rise=loss_rise)
        if ("c_max" in ds.variables and "fail_status" in ds.variables
                or ds.attrs.get("boundary_average") == "seeds"):
            from phasekit.analysis.report import boundary_report

            text += "\n\n" + boundary_report(ds)
        return text

    def plot(self, panels: str | Sequence[str] | None = None,
             c_values: Sequence[float] | None = None, path: str | os.PathLike | None = None,
             *, x: str | None = None, select: Mapping | Sequence[str] | None = None,
             average: str | None = None, ylog: bool = False):
        """The paper's panels, or for a sweep with axes the 2-D phase diagram
        (``docs/plotting.md``); ``select={"width": 512}`` fixes axes, ``x="width"`` or
        ``x="hidden_layers/width"`` chooses the diagram's x axis, ``average="seeds"``
        draws it from the seed-averaged trajectories, ``ylog=True`` puts c on a log
        axis.  Returns a Figure."""
        from phasekit.plot.figure import plot_sweep

        return plot_sweep(self._check(), panels=panels, c_values=c_values, path=path, x=x,
                          select=select, average=average, ylog=ylog)
