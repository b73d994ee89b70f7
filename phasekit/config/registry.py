"""The plugin manager: finds plugins through entry points and collects what they register.

Built-in and third-party plugins are found the same way, through the
``phasekit`` entry-point group.  Two environment variables control loading;
each holds comma-separated entries, either an entry-point name (``tanh_net``,
every plugin of that name) or ``distribution:name`` (``phasekit-tanh-net:tanh_net``,
that distribution's plugin only; distribution names compare as pip compares
them, so ``phasekit_tanh_net`` works too):

``PHASEKIT_DISABLE_PLUGINS``
    never load these plugins (built-in or third-party).
``PHASEKIT_PLUGINS``
    if set, load only these *third-party* plugins (built-ins always load);
    set it to an empty string to load no third-party plugin at all.

An entry matching no installed plugin is warned about.  When several
distributions provide plugins of the same name, one is loaded and a warning
names them all and says how to choose another: a built-in plugin wins,
otherwise the distribution whose name sorts first.  A plugin whose import
raises anything but ``KeyboardInterrupt`` (``SystemExit`` included), or whose
hook raises, is reported as a warning naming it and the distribution it came
from, and listed in :attr:`PluginManager.failures`; everything else keeps
working.  What a failing hook registered before raising is discarded.

``PluginManager(distributions=[...])`` looks only at the entry points of the
named distributions (names compared as pip compares them; ``"phasekit"`` for the
built-ins), as if nothing else were installed; the two variables then apply to
those.  Tests use it so that whatever else is installed cannot change what they
see; ``phasekit`` itself always looks at every installed distribution.

Warnings are :class:`PluginWarning`, a :class:`phasekit.errors.PhasekitWarning`.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from phasekit import hookspecs
from phasekit.errors import ConfigError, PluginWarning, describe, suggest

ENTRY_POINT_GROUP = "phasekit"
ENV_DISABLE = "PHASEKIT_DISABLE_PLUGINS"
ENV_ALLOW = "PHASEKIT_PLUGINS"
BUILTIN_DISTRIBUTION = "phasekit"

KINDS = ("model", "dataset", "observable", "preset")


HOOK_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT_NAME}_"))


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


def _entries(var: str) -> list[str] | None:
    """The comma-separated entries of an environment variable (``None`` if unset)."""
    raw = os.environ.get(var)
    if raw is None:
        return None
    return list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))


def normalize_distribution(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Tanh_Net`` -> ``tanh-net``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def entry_matches(entry: str, name: str, distribution: str) -> bool:
    """Whether an environment entry (``name`` or ``distribution:name``) selects a plugin."""
    if entry == name:
        return True
    dist, sep, ep_name = entry.partition(":")
    return bool(sep) and ep_name.strip() == name and (
        normalize_distribution(dist.strip()) == normalize_distribution(distribution))


@dataclass(frozen=True)
class _Candidate:
    ep: md.EntryPoint
    distribution: str
    version: str

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}".strip()


def _selector(distribution: str, name: str) -> str:
    """The environment entry that selects exactly this plugin, where one can."""
    return name if distribution in ("(unknown)", "(local)") else f"{distribution}:{name}"


def _origin_text(distribution: str, version: str) -> str:
    if distribution == "(local)":
        return "registered directly"
    return f"distribution {distribution} {version}".strip()


class PluginManager:
    """A typed wrapper around :class:`pluggy.PluginManager` (one method per hook)."""

    def __init__(self, load_entry_points: bool = True,
                 distributions: Iterable[str] | None = None):
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str, str]] = {}
        self._from_entry_points: set[str] = set()
        self.failures: list[PluginFailure] = []
        self._registry: dict[str, dict[str, Registration]] | None = None
        if isinstance(distributions, str):
            raise TypeError("distributions must be a list of distribution names, not one "
                            "string")
        only = (None if distributions is None
                else {normalize_distribution(d) for d in distributions})
        if load_entry_points:
            self._load_entry_points(only)

    # -- loading ------------------------------------------------------------------
    def _load_entry_points(self, only: set[str] | None = None) -> None:
        disabled = _entries(ENV_DISABLE) or []
        allowed = _entries(ENV_ALLOW)
        used: set[str] = set()
        installed: list[_Candidate] = []
        by_name: dict[str, list[_Candidate]] = {}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            cand = _Candidate(ep, _dist_name(ep), _dist_version(ep))
            if only is not None and normalize_distribution(cand.distribution) not in only:
                continue                        # not looked at: as if not installed
            installed.append(cand)
            hits = {e for e in disabled if entry_matches(e, ep.name, cand.distribution)}
            used |= hits
            if hits:
                continue
            if allowed is not None:
                hits = {e for e in allowed if entry_matches(e, ep.name, cand.distribution)}
                used |= hits
                if not hits and not cand.builtin:
                    continue
            by_name.setdefault(ep.name, []).append(cand)
        for var, entries in ((ENV_DISABLE, disabled), (ENV_ALLOW, allowed or [])):
            for entry in entries:
                if entry not in used:
                    self._warn_unmatched(var, entry, installed)
        # Built-ins first (they win name clashes, here and between registered
        # things in _collect), then third-party plugins by name.
        chosen = [self._choose(name, cands) for name, cands in by_name.items()]
        for cand in sorted(chosen, key=lambda c: (not c.builtin, c.ep.name)):
            self._load(cand)

    @staticmethod
    def _choose(name: str, cands: list[_Candidate]) -> _Candidate:
        """The one of several same-named plugins that is loaded; warns about the others."""
        cands = sorted(cands, key=lambda c: (not c.builtin,
                                             normalize_distribution(c.distribution), c.version))
        if len(cands) > 1:
            winner, runner_up = cands[0], cands[1]
            why = ("built-in plugins win" if winner.builtin
                   else "the distribution whose name sorts first wins")
            others = ", ".join(c.origin for c in cands[1:])
            warnings.warn(
                f"{len(cands)} installed distributions provide a phasekit plugin named '{name}': "
                f"{winner.origin} and {others}; loading the one from {winner.distribution} "
                f"({why}). To load the one from {runner_up.distribution} instead, set "
                f"{ENV_DISABLE}={_selector(winner.distribution, name)}.", PluginWarning,
                stacklevel=4)
        return cands[0]

    @staticmethod
    def _warn_unmatched(var: str, entry: str, installed: list[_Candidate]) -> None:
        names = sorted({c.ep.name for c in installed})
        dist, sep, ep_name = entry.partition(":")
        if sep and ep_name.strip() in names:
            dists = sorted({c.distribution for c in installed if c.ep.name == ep_name.strip()})
            hint = f" '{ep_name.strip()}' comes from {', '.join(dists)}."
        else:
            close = suggest(ep_name.strip() if sep else entry, names)
            hint = f" Did you mean '{close}'?" if close else ""
        warnings.warn(f"{var} names '{entry}', which matches no installed phasekit plugin."
                      f"{hint} Installed: {', '.join(names) or '(none)'} (see 'phasekit "
                      f"plugins'; an entry is a name or distribution:name).",
                      PluginWarning, stacklevel=4)

    def _load(self, cand: _Candidate) -> None:
        ep, dist, version = cand.ep, cand.distribution, cand.version
        try:
            plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: a plugin must not end phasekit
            self._fail(ep.name, dist, version, f"importing '{ep.value}' raised {describe(exc)}",
                       "it was not loaded", entry_point=True, stacklevel=5)
            return
        try:
            self.register(plugin, name=ep.name, distribution=dist, version=version)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            if self._pm.has_plugin(ep.name):      # older pluggy registers before validating
                self._pm.unregister(name=ep.name)
            self._origin.pop(ep.name, None)
            self._fail(ep.name, dist, version, f"'{ep.value}' is not a valid phasekit plugin: "
                       f"{describe(exc)}", "it was not loaded", entry_point=True, stacklevel=5)
            return
        self._from_entry_points.add(ep.name)

    def register(self, plugin: Any, name: str | None = None, distribution: str = "(local)",
                 version: str = "") -> None:
        """Register a plugin module or object directly (tests, notebooks)."""
        name = self._pm.register(plugin, name=name)
        self._origin[name] = (distribution, version)
        self._registry = None
        self._check_hook_names(plugin, name, distribution, version)

    def _check_hook_names(self, plugin: Any, name: str, dist: str, version: str) -> None:
        """Warn about functions marked as hooks whose name is no phasekit hook."""
        for attr in dir(plugin):
            try:
                opts = self._pm.parse_hookimpl_opts(plugin, attr)
            except Exception:  # noqa: BLE001 - an attribute that cannot be read is no hook
                continue
            hook = (opts or {}).get("specname") or attr
            if opts is not None and hook not in HOOK_NAMES:
                close = suggest(hook, HOOK_NAMES)
                hint = f" Did you mean '{close}'?" if close else ""
                origin = _origin_text(dist, version)
                warnings.warn(f"phasekit plugin '{name}' ({origin}) implements '{hook}', which "
                              f"is not a phasekit hook, so phasekit never calls it.{hint} "
                              f"Hooks: {', '.join(sorted(HOOK_NAMES))}.",
                              PluginWarning, stacklevel=4)

    def _fail(self, plugin: str, dist: str, version: str, error: str, consequence: str,
              entry_point: bool = False, stacklevel: int = 4) -> None:
        """Record a broken plugin and warn: what failed, what that costs, how to skip it."""
        self.failures.append(PluginFailure(plugin, dist, version, error))
        hint = ""
        if entry_point or plugin in self._from_entry_points:
            hint = (f" Set {ENV_DISABLE}={_selector(dist, plugin)} to skip it without this "
                    f"warning.")
        warnings.warn(f"phasekit plugin '{plugin}' ({_origin_text(dist, version)}) is broken: "
                      f"{error.rstrip('.')}; {consequence}.{hint}", PluginWarning,
                      stacklevel=stacklevel)

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
            # cannot take the others down; what it registered is kept only if
            # the hook returns.  pluggy lists them in registration order, so
            # built-ins (loaded first) win name clashes.
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name
                dist, version = self._origin.get(plugin_name, ("(local)", ""))
                pending: list[Registration] = []

                def register(*args, _kind=kind, _plugin=plugin_name, _dist=dist,
                             _ver=version, _pending=pending, **kwargs):
                    _pending.append(_make_registration(_kind, _plugin, _dist, _ver,
                                                       *args, **kwargs))

                try:
                    impl.function(register=register)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - SystemExit too
                    self._fail(plugin_name, dist, version,
                               f"its hook {hook.name} raised {describe(exc)}",
                               f"none of its {kind}s are registered (its other hooks still "
                               f"count)")
                    continue
                table = registry[kind]
                for reg in pending:
                    if reg.name in table:
                        old = table[reg.name]
                        warnings.warn(f"phasekit plugin '{plugin_name}' registers {kind} "
                                      f"'{reg.name}', already provided by '{old.plugin}' "
                                      f"({old.distribution}); keeping the first.",
                                      PluginWarning, stacklevel=3)
                        continue
                    table[reg.name] = reg
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

    def describe(self, kind: str, name: str) -> str:
        """``observable 'x' (plugin 'p', distribution d 1.0)``: who registered a thing,
        for the border checks' messages."""
        reg = self._collect()[kind].get(name)
        if reg is None:
            return f"{kind} '{name}'"
        return (f"{kind} '{name}' (plugin '{reg.plugin}', "
                f"{_origin_text(reg.distribution, reg.version)})")

    def models(self) -> dict[str, Any]:
        return {n: r.obj for n, r in self._collect()["model"].items()}

    def datasets(self) -> dict[str, Any]:
        return {n: r.obj for n, r in self._collect()["dataset"].items()}

    def observables(self) -> dict[str, Any]:
        return {n: r.obj for n, r in self._collect()["observable"].items()}

    def presets(self) -> dict[str, Preset]:
        return {n: r.obj for n, r in self._collect()["preset"].items()}


#: what ``register(...)`` takes for each kind, for the border checks' messages
_EXPECTED = {"model": "a Model subclass (phasekit.model.Model)",
             "dataset": "a DatasetPlugin subclass (phasekit.dataset.DatasetPlugin)",
             "observable": "an Observable (phasekit.observables.Observable)"}


def _make_registration(kind, plugin, dist, version, *args, **kwargs) -> Registration:
    """One ``register(...)`` call of a plugin's hook, checked at the border: a
    ``TypeError`` saying what was expected (the caller reports the plugin as broken)."""
    if kind == "preset":
        preset = _checked_preset(*args, **kwargs)
        return Registration(kind, preset.name, preset, plugin, dist, version,
                            preset.description)
    if len(args) != 1 or kwargs:
        raise TypeError(f"register() for a {kind} takes exactly one object, "
                        f"{_EXPECTED[kind]}; got {len(args)} positional and "
                        f"{len(kwargs)} keyword arguments")
    obj = args[0]
    if not _is_kind(kind, obj):
        raise TypeError(f"register() for a {kind} takes {_EXPECTED[kind]}, got "
                        f"{type(obj).__name__} {obj!r:.60}")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"a registered {kind} needs a non-empty string 'name'")
    description = getattr(obj, "description", "") or getattr(obj, "long_name", "")
    return Registration(kind, name, obj, plugin, dist, version, str(description))


def _is_kind(kind: str, obj: Any) -> bool:
    """Whether ``obj`` is what a plugin may register as ``kind`` (imports the base
    classes only when asked: they import torch)."""
    if kind == "observable":
        from phasekit.observables import Observable

        return isinstance(obj, Observable) and callable(obj.compute)
    if kind == "model":
        from phasekit.model import Model as base
    else:
        from phasekit.dataset import DatasetPlugin as base
    return isinstance(obj, type) and issubclass(obj, base)


def _checked_preset(*args, **kwargs) -> Preset:
    """``register(name, config, description)`` of a preset hook, checked."""
    try:
        preset = Preset(*args, **kwargs)
    except TypeError:
        raise TypeError("register() for a preset takes (name, config, description): a "
                        f"string, a mapping of [model]/[dataset]/[sweep] tables and a "
                        f"string; got {len(args)} positional arguments and keywords "
                        f"{sorted(kwargs)}") from None
    if not isinstance(preset.name, str) or not preset.name.strip():
        raise TypeError(f"a preset's name must be a non-empty string, got {preset.name!r}")
    if not isinstance(preset.description, str):
        raise TypeError(f"preset {preset.name!r}: its description must be a string, got "
                        f"{type(preset.description).__name__}")
    config = preset.config
    if not isinstance(config, Mapping) or not all(
            isinstance(v, Mapping) for v in config.values()):
        raise TypeError(f"preset {preset.name!r}: its config must be a mapping of tables "
                        f"([model], [dataset], [sweep]), got {type(config).__name__}")
    return preset


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    try:
        name = dist.metadata["Name"] if dist is not None else None
    except Exception:  # noqa: BLE001 - unreadable metadata
        name = None
    return name or "(unknown)"


def _dist_version(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    try:
        return (dist.version if dist is not None else "") or ""
    except Exception:  # noqa: BLE001
        return ""


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, loading entry points on first use."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default
