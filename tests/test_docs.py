"""The docs stay true: generated reference, documented hooks, tested example."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

from phasekit import hookimpl, hookspecs
from phasekit.config.reference import config_reference
from phasekit.config.registry import PluginManager
from phasekit.dataset import DatasetPlugin
from phasekit.model import Model
from phasekit.observables import Observable

DOCS = Path(__file__).parents[1] / "docs"


def builtin_manager(monkeypatch) -> PluginManager:
    monkeypatch.setenv("PHASEKIT_PLUGINS", "")          # built-ins only
    monkeypatch.delenv("PHASEKIT_DISABLE_PLUGINS", raising=False)
    return PluginManager()


def test_config_reference_is_generated_from_the_schema(monkeypatch):
    expected = config_reference(builtin_manager(monkeypatch))
    assert (DOCS / "config.md").read_text() == expected, (
        "docs/config.md is stale: run `python -m phasekit.config.reference > docs/config.md`")


class _ProbeModel(Model):
    name = "probe_model"


class _ProbeDataset(DatasetPlugin):
    name = "probe_dataset"


#: per hook: the kind of thing it registers, and what a plugin hands ``register``
PROBES = {
    "phasekit_register_models": ("model", (_ProbeModel,)),
    "phasekit_register_datasets": ("dataset", (_ProbeDataset,)),
    "phasekit_register_observables": (
        "observable", (Observable("probe_observable", "a probe", lambda snap: snap.loss),)),
    "phasekit_register_presets": ("preset", ("probe_preset", {"model": {}}, "a probe")),
}


def test_every_hook_is_documented_and_called():
    """Each hook of hookspecs is in the plugin guide with a docstring, and the plugin
    manager calls it: what a plugin registers through it is available by name."""
    guide = (DOCS / "plugins.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if n.startswith("phasekit_")]
    assert hooks
    for name in hooks:
        assert f"`{name}`" in guide, name
        assert getattr(hookspecs, name).__doc__.strip()
        assert name in PROBES, f"{name}: add a probe registration to this test"
        kind, args = PROBES[name]
        probe = types.ModuleType("probe")
        setattr(probe, name, hookimpl(lambda register, _args=args: register(*_args)))
        pm = PluginManager(load_entry_points=False)
        pm.register(probe, name="probe")
        [reg] = [r for r in pm.registrations(kind) if r.plugin == "probe"]
        assert reg.name == f"probe_{kind}", name


def test_every_builtin_plugin_appears_in_the_docs(monkeypatch):
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    for reg in builtin_manager(monkeypatch).registrations():
        assert f"`{reg.name}`" in text, f"{reg.kind} {reg.name} is not documented"


def test_guide_shows_the_tested_example_verbatim():
    guide = (DOCS / "plugins.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", guide, flags=re.S)
    example = DOCS / "examples" / "phasekit-tanh-net"
    for name in ("pyproject.toml", "phasekit_tanh_net.py"):
        assert (example / name).read_text() in blocks, name
