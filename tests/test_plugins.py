"""The plugin system: entry points, third-party models, broken plugins, env controls."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from phasekit import hookimpl
from phasekit.config import resolve_config
from phasekit.manager import PluginManager, PluginWarning
from phasekit.model import autograd_ntk
from phasekit.options import ConfigError
from phasekit.sweep import Engine, run_sweep

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "phasekit-tanh-net"
BROKEN = Path(__file__).parent / "plugin_example"


def install_fake_distribution(root: Path, name: str, version: str, entry_points: dict) -> Path:
    """Write a ``*.dist-info`` folder the way pip would, so importlib.metadata finds it."""
    site = root / "site"
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[phasekit]\n{lines}\n")
    return site


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    # The example distribution of docs/plugins.md, "installed" with its own metadata.
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = install_fake_distribution(tmp_path, project["name"], project["version"],
                                     project["entry-points"]["phasekit"])
    broken = install_fake_distribution(tmp_path / "b", "phasekit-broken", "1.0",
                                       {"broken": "broken_plugin"})
    for path in (site, broken, EXAMPLE, BROKEN):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("PHASEKIT_PLUGINS", raising=False)
    monkeypatch.delenv("PHASEKIT_DISABLE_PLUGINS", raising=False)
    return os.pathsep.join(str(p) for p in (site, broken, EXAMPLE, BROKEN))


def test_builtins_come_from_entry_points():
    pm = PluginManager()
    regs = pm.registrations()
    assert {r.distribution for r in regs} == {"phasekit"}
    assert {"quadratic", "quadratic_bias"} <= set(pm.models())
    assert {"toy", "random", "teacher_student"} <= set(pm.datasets())
    assert {"fig1", "fig4", "fig5", "fig6", "fig7", "default"} <= set(pm.presets())


def test_third_party_model_runs_without_touching_core(third_party):
    with pytest.warns(PluginWarning, match="'broken' .*phasekit-broken.*broken on purpose"):
        pm = PluginManager()
    reg = {r.name: r for r in pm.registrations("model")}["tanh_net"]
    assert (reg.distribution, reg.version, reg.plugin) == ("phasekit-tanh-net", "0.3",
                                                           "tanh_net")
    assert [f.plugin for f in pm.failures] == ["broken"]
    assert "quadratic" in pm.models()                      # everything else still works
    config, data = resolve_config({"model": {"name": "tanh_net", "width": 16},
                                   "dataset": {"name": "random", "num_train": 4,
                                               "num_test": 8},
                                   "sweep": {"eta_lambda0": [0.5, 1.5, 3.0],
                                             "max_steps": 500}}, pm)
    ds = run_sweep(config, data, pm)
    assert ds.attrs["model"] == "tanh_net"
    assert set(ds.status.values.ravel()) <= {"converged", "diverged", "max_steps"}
    assert "test_loss" in ds                               # built-in observables apply too
    # its NTK is the autograd Gram (eq. 4) and sharpness at step 0 is c
    engine = Engine(config, data, pm)
    feats, theta0 = engine.model.setup(0, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(engine.model.ntk(feats, theta0[None], None),
                               autograd_ntk(engine.model, feats, theta0[None]))
    assert ds.sharpness.isel(step=0).values[0] == pytest.approx([0.5, 1.5, 3.0], rel=1e-10)


def test_allow_list_and_disable(third_party, monkeypatch):
    monkeypatch.setenv("PHASEKIT_PLUGINS", "")
    pm = PluginManager()
    assert "tanh_net" not in pm.models() and "quadratic" in pm.models()
    assert not pm.failures
    monkeypatch.setenv("PHASEKIT_PLUGINS", "tanh_net")
    assert "tanh_net" in PluginManager().models()
    monkeypatch.delenv("PHASEKIT_PLUGINS")
    monkeypatch.setenv("PHASEKIT_DISABLE_PLUGINS", "tanh_net,broken")
    pm = PluginManager()
    assert "tanh_net" not in pm.models() and not pm.failures


def test_failing_hook_and_name_clash_are_reported():
    class Bad:
        @hookimpl
        def phasekit_register_datasets(self, register):
            raise RuntimeError("boom")

    class Clash:
        @hookimpl
        def phasekit_register_models(self, register):
            from phasekit_plugins.quadratic import Quadratic

            class Fake(Quadratic):
                description = "an impostor"

            register(Fake)

    pm = PluginManager()
    pm.register(Bad(), name="bad")
    pm.register(Clash(), name="clash")
    with pytest.warns(PluginWarning) as record:
        datasets, models = pm.datasets(), pm.models()
    messages = " ".join(str(w.message) for w in record)
    assert "'bad'" in messages and "boom" in messages
    assert "'clash' registers model 'quadratic', already provided by 'quadratic'" in messages
    assert "toy" in datasets and models["quadratic"].description != "an impostor"


def test_unknown_plugin_lists_available():
    with pytest.raises(ConfigError, match="unknown model 'x'. Available: .*quadratic"):
        PluginManager().get("model", "x")


def test_cli_lists_third_party_and_failures(third_party):
    env = {**os.environ, "PYTHONPATH": third_party}
    exe = os.path.join(os.path.dirname(sys.executable), "phasekit")
    proc = subprocess.run([exe, "plugins"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["model", "tanh_net", "phasekit-tanh-net", "0.3", "tanh_net"] in rows
    assert ["model", "quadratic", "phasekit"] == rows[1][:3] or any(
        r[:3] == ["model", "quadratic", "phasekit"] for r in rows)
    assert "FAILED  broken (phasekit-broken 1.0)" in proc.stdout
    assert "broken on purpose" in proc.stderr               # the warning names it
