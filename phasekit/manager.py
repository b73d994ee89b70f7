"""The plugin manager: finds plugins through entry points and collects what they register.

Built-in and third-party plugins are found the same way, through the
``phasekit`` entry-point group.  Two environment variables control loading
(comma-separated entry-point names):

``PHASEKIT_DISABLE_PLUGINS``
    never load these plugins (built-in or third-party).
``PHASEKIT_PLUGINS``
    if set, load only these *third-party* plugins (built-ins always load);
    set it to an empty string to load no third-party plugin at all.

A plugin that fails to import, or whose hook raises, is reported as a warning
naming it and the distribution it came from; everything else keeps working.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .options import ConfigError

ENTRY_POINT_GROUP = "phasekit"
ENV_DISABLE = "PHASEKIT_DISABLE_PLUGINS"
ENV_ALLOW = "PHASEKIT_PLUGINS"
BUILTIN_DISTRIBUTION = "phasekit"

KINDS = ("model", "dataset", "observable", "preset")


class PluginWarning(UserWarning):
    """A plugin could not be loaded or failed inside a hook."""


@dataclass(frozen=True)
class Registration:
    """One thing a plugin registered."""

    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str
    version: str
    description: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict
    description: str


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    distribution: str
    version: str
    error: str


def _names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


class PluginManager:
    """A typed wrapper around :class:`pluggy.PluginManager` (one method per hook)."""

    def __init__(self, load_entry_points: bool = True):
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str, str]] = {}
        self.failures: list[PluginFailure] = []
        self._registry: dict[str, dict[str, Registration]] | None = None
        if load_entry_points:
            self._load_entry_points()

    # -- loading ------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        disabled = _names(ENV_DISABLE) or set()
        allowed = _names(ENV_ALLOW)
        eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda ep: (_dist_name(ep) != BUILTIN_DISTRIBUTION, ep.name))
        for ep in eps:
            dist, version = _dist_name(ep), _dist_version(ep)
            if ep.name in disabled:
                continue
            if allowed is not None and dist != BUILTIN_DISTRIBUTION and ep.name not in allowed:
                continue
            if self._pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported
                self._fail(ep.name, dist, version, f"failed to import {ep.value!r}: {exc!r}")
                continue
            self.register(plugin, name=ep.name, distribution=dist, version=version)

    def register(self, plugin: Any, name: str | None = None, distribution: str = "(local)",
                 version: str = "") -> None:
        """Register a plugin module or object directly (tests, notebooks)."""
        name = self._pm.register(plugin, name=name)
        self._origin[name] = (distribution, version)
        self._registry = None

    def _fail(self, plugin: str, dist: str, version: str, error: str) -> None:
        self.failures.append(PluginFailure(plugin, dist, version, error))
        warnings.warn(f"phasekit plugin '{plugin}' (distribution {dist} {version}) was skipped: "
                      f"{error}. Disable it with {ENV_DISABLE}={plugin}.",
                      PluginWarning, stacklevel=3)

    # -- collection -------------------------------------------------------------
    def _collect(self) -> dict[str, dict[str, Registration]]:
        if self._registry is not None:
            return self._registry
        registry: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
        hooks = {
            "model": self._pm.hook.phasekit_register_models,
            "dataset": self._pm.hook.phasekit_register_datasets,
            "observable": self._pm.hook.phasekit_register_observables,
            "preset": self._pm.hook.phasekit_register_presets,
        }
        for kind, hook in hooks.items():
            # Each implementation is called on its own so one failing plugin
            # cannot take the others down.  pluggy lists them in registration
            # order, so built-ins (loaded first) win name clashes.
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name
                dist, version = self._origin.get(plugin_name, ("(local)", ""))

                def register(*args, _kind=kind, _plugin=plugin_name, _dist=dist,
                             _ver=version, **kwargs):
                    reg = _make_registration(_kind, _plugin, _dist, _ver, *args, **kwargs)
                    table = registry[_kind]
                    if reg.name in table:
                        old = table[reg.name]
                        warnings.warn(f"phasekit plugin '{_plugin}' registers {_kind} "
                                      f"'{reg.name}', already provided by '{old.plugin}' "
                                      f"({old.distribution}); keeping the first.",
                                      PluginWarning, stacklevel=2)
                        return
                    table[reg.name] = reg

                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001
                    self._fail(plugin_name, dist, version,
                               f"hook {hook.name} raised {exc!r}")
        self._registry = registry
        return registry

    # -- queries ----------------------------------------------------------------
    def registrations(self, kind: str | None = None) -> list[Registration]:
        reg = self._collect()
        kinds = KINDS if kind is None else (kind,)
        return [r for k in kinds for r in sorted(reg[k].values(), key=lambda r: r.name)]

    def get(self, kind: str, name: str) -> Any:
        """The registered object of ``kind`` called ``name``, or a ConfigError listing them."""
        table = self._collect()[kind]
        if name not in table:
            available = ", ".join(sorted(table)) or "(none)"
            key = {"preset": "--preset"}.get(kind, f"{kind}.name")
            raise ConfigError(f"{key}: unknown {kind} '{name}'. Available: {available}.")
        return table[name].obj

    def models(self) -> dict[str, Any]:
        return {n: r.obj for n, r in self._collect()["model"].items()}

    def datasets(self) -> dict[str, Any]:
        return {n: r.obj for n, r in self._collect()["dataset"].items()}

    def observables(self) -> dict[str, Any]:
        return {n: r.obj for n, r in self._collect()["observable"].items()}

    def presets(self) -> dict[str, Preset]:
        return {n: r.obj for n, r in self._collect()["preset"].items()}


def _make_registration(kind, plugin, dist, version, *args, **kwargs) -> Registration:
    if kind == "preset":
        preset = Preset(*args, **kwargs)
        return Registration(kind, preset.name, preset, plugin, dist, version,
                            preset.description)
    if len(args) != 1 or kwargs:
        raise TypeError(f"register() for a {kind} takes exactly one object")
    obj = args[0]
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"a registered {kind} needs a non-empty string 'name'")
    description = getattr(obj, "description", "") or getattr(obj, "long_name", "")
    return Registration(kind, name, obj, plugin, dist, version, description)


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "(unknown)"


def _dist_version(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else ""


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, loading entry points on first use."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default
