"""``ds.phasekit``: the analysis of a stored sweep, as an xarray Dataset accessor.

Registered on ``import phasekit``::

    ds = phasekit.load("sweep.nc")          # or xr.open_dataset(...)
    ds.phasekit.phases()                   # phase(seed, eta_lambda0)
    ds = ds.phasekit.add_phases()          # ... stored as variables
    print(ds.phasekit.summary())           # phase counts, c_max, bounds
    ds.phasekit.critical()                 # per-seed critical learning rates
    fig = ds.phasekit.plot(panels="a,d,e", c_values=[2.5, 3.5])
    ds.phasekit.config()                   # the resolved config, as a dict
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import xarray as xr

# Imported lazily inside the methods: ``import phasekit`` registers this accessor
# and should stay light (no torch).
CATAPULT_FACTOR = 2.0   # phasekit.phases.DEFAULT_CATAPULT_FACTOR


@xr.register_dataset_accessor("phasekit")
class PhasekitAccessor:
    """Phase analysis of a phasekit sweep (see the module docstring)."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def _check(self) -> xr.Dataset:
        from .phases import require

        require(self._ds, purpose="ds.phasekit")
        return self._ds

    def config(self) -> dict:
        """The resolved config the sweep was run with (``[model]``, ``[dataset]``, ``[sweep]``)."""
        from .storage import stored_config

        return stored_config(self._check())

    def phases(self, catapult_factor: float = CATAPULT_FACTOR) -> xr.DataArray:
        """``phase(seed, eta_lambda0)``: lazy, catapult, divergent, trivial, undetermined
        or pending (``docs/phases.md``)."""
        from .phases import classify

        return classify(self._check(), catapult_factor)

    def add_phases(self, catapult_factor: float = CATAPULT_FACTOR
                   ) -> xr.Dataset:
        """A copy with the ``phase`` and ``loss_peak_ratio`` variables added."""
        from .phases import add_phases

        return add_phases(self._check(), catapult_factor)

    def critical(self, catapult_factor: float = CATAPULT_FACTOR
                 ) -> xr.Dataset:
        """Per-seed critical learning rates: ``c_max``, ``c_fail``, ``c_catapult``,
        ``c_trivial`` and ``gap_<bound>`` (see :func:`phasekit.phases.critical_summary`)."""
        from .phases import critical_summary

        return critical_summary(self._check(), catapult_factor)

    def summary(self, catapult_factor: float = CATAPULT_FACTOR) -> str:
        """A printable report: phases per learning rate, critical learning rates, bounds
        (and the boundary search's results for a ``phasekit boundary`` file)."""
        from .phases import summary_text

        ds = self._check()
        text = summary_text(ds, catapult_factor)
        if "c_max" in ds.variables and "fail_status" in ds.variables:
            from .boundary import boundary_report

            text += "\n\n" + boundary_report(ds)
        return text

    def plot(self, panels: str | Sequence[str] | None = None,
             c_values: Sequence[float] | None = None, path: str | os.PathLike | None = None):
        """The paper's panels (``docs/plotting.md``); returns a matplotlib Figure."""
        from .plot import plot_sweep

        return plot_sweep(self._check(), panels=panels, c_values=c_values, path=path)
