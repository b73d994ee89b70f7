"""The docs stay true: generated reference, documented hooks, tested example."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from phasekit import hookspecs
from phasekit.config.reference import config_reference
from phasekit.config.registry import PluginManager

DOCS = Path(__file__).parents[1] / "docs"


def builtin_manager(monkeypatch) -> PluginManager:
    monkeypatch.setenv("PHASEKIT_PLUGINS", "")          # built-ins only
    monkeypatch.delenv("PHASEKIT_DISABLE_PLUGINS", raising=False)
    return PluginManager()


def test_config_reference_is_generated_from_the_schema(monkeypatch):
    expected = config_reference(builtin_manager(monkeypatch))
    assert (DOCS / "config.md").read_text() == expected, (
        "docs/config.md is stale: run `python -m phasekit.config.reference > docs/config.md`")


def test_every_hook_is_documented():
    guide = (DOCS / "plugins.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if n.startswith("phasekit_")]
    assert len(hooks) == 4
    for name in hooks:
        assert f"`{name}`" in guide, name
        assert getattr(hookspecs, name).__doc__.strip()


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
