"""Helpers shared by the tests."""

from __future__ import annotations

from phasekit.config import merge, resolve_config
from phasekit.manager import get_plugin_manager
from phasekit.sweep import run_sweep


def sweep(raw: dict, manager=None, **sweep_overrides):
    """Resolve and run a config mapping; ``sweep_overrides`` go into [sweep]."""
    manager = manager or get_plugin_manager()
    raw = merge(raw, {"sweep": sweep_overrides}) if sweep_overrides else raw
    config, data = resolve_config(raw, manager)
    return run_sweep(config, data, manager)


def toy_quadratic(width=100, low=1.0, high=2.0, zeta=None, activation="identity", **sweep_kw):
    model = {"name": "quadratic", "width": width, "eigen_low": low, "eigen_high": high,
             "activation": activation}
    if zeta is not None:
        model["zeta"] = zeta
    return {"model": model, "dataset": {"name": "toy"}, "sweep": sweep_kw}
