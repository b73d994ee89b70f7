"""The Python API, mirroring the command line (for notebooks and tests)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import xarray as xr

from .config import load_toml, merge, parse_set, resolve_config
from .manager import PluginManager, get_plugin_manager
from .progress import Progress
from .storage import open_sweep, write_sweep


def build_config(config: Mapping | str | os.PathLike | None = None, *,
                 preset: str | None = None, overrides: Iterable[str] | Mapping = (),
                 manager: PluginManager | None = None) -> dict:
    """The raw config ``phasekit run`` would use: preset, then file or mapping, then
    overrides (``"sweep.max_steps=200"`` strings or a nested mapping)."""
    manager = manager or get_plugin_manager()
    raw: dict = {}
    if preset or config is None:
        raw = manager.get("preset", preset or "default").config
    if isinstance(config, str | os.PathLike):
        raw = merge(raw, load_toml(config))
    elif config is not None:
        raw = merge(raw, config)
    if isinstance(overrides, Mapping):
        raw = merge(raw, overrides)
    else:
        for assignment in overrides:
            raw = merge(raw, parse_set(assignment))
    return raw


def run(config: Mapping | str | os.PathLike | None = None, *, preset: str | None = None,
        overrides: Iterable[str] | Mapping = (), output: str | os.PathLike | None = None,
        progress: bool = False, manager: PluginManager | None = None) -> xr.Dataset:
    """Run a sweep and return its dataset (also written to ``output`` if given).

    >>> ds = run(preset="fig1", overrides=["sweep.seeds=2"])   # doctest: +SKIP
    """
    from .sweep import run_sweep

    manager = manager or get_plugin_manager()
    resolved, data = resolve_config(build_config(config, preset=preset, overrides=overrides,
                                                 manager=manager), manager)
    ds = run_sweep(resolved, data, manager, progress=Progress() if progress else None)
    if output is not None:
        write_sweep(ds, Path(output))
    return ds


def load(path: str | os.PathLike) -> xr.Dataset:
    """Open a stored sweep (checks that it is one)."""
    return open_sweep(path)
