"""The plugin system: entry points, third-party models, broken plugins, env controls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

from phasekit import errors, hookimpl
from phasekit.analysis.phases import add_critical
from phasekit.config.registry import BUILTIN_DISTRIBUTION, PluginManager
from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine
from phasekit.errors import ConfigError, PluginWarning
from phasekit.model import autograd_ntk
from phasekit.runner.execute import execute

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "phasekit-tanh-net"
BROKEN = Path(__file__).parent / "plugin_example"
#: what the third_party fixture installs, with the built-ins: the managers of its tests
#: look at these distributions only, whatever else is installed (tests/test_installed_plugin.py)
THIRD_PARTY = (BUILTIN_DISTRIBUTION, "phasekit-tanh-net", "phasekit-broken")


def builtin_manager() -> PluginManager:
    """A manager of the built-in plugins only, whatever else is installed."""
    return PluginManager(distributions=[BUILTIN_DISTRIBUTION])


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
    # every entry point of phasekit's pyproject registers something under the built-in
    # distribution, in the manager phasekit uses (other plugins may be installed too)
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "entry-points"]["phasekit"]
    regs = [r for r in PluginManager().registrations() if r.distribution == "phasekit"]
    assert {r.plugin for r in regs} == set(entry_points)
    by_kind = {kind: {r.name for r in regs if r.kind == kind}
               for kind in ("model", "dataset", "preset")}
    assert {"quadratic", "quadratic_bias"} <= by_kind["model"]
    assert {"toy", "random", "teacher_student"} <= by_kind["dataset"]
    assert {"fig1", "fig4", "fig5", "fig6", "fig7", "default"} <= by_kind["preset"]
    # a manager restricted to the built-in distribution registers exactly these
    assert builtin_manager().registrations() == regs


def test_a_manager_can_look_at_some_distributions_only(fake):
    fake("phasekit-dup-a", "1.0", {"dup": model_plugin("model_a")})
    fake("phasekit-more", "1.0", {"more": model_plugin("model_more")})
    models = set(PluginManager(distributions=["phasekit", "Phasekit_Dup.A"]).models())
    assert {"model_a", "quadratic"} <= models and "model_more" not in models
    assert set(PluginManager(distributions=["phasekit-more"]).models()) == {"model_more"}
    everything = set(PluginManager().models())
    assert {"model_a", "model_more", "quadratic"} <= everything
    with pytest.raises(TypeError, match="a list of distribution names, not one string"):
        PluginManager(distributions="phasekit")


def test_third_party_model_runs_without_touching_core(third_party):
    with pytest.warns(PluginWarning, match="'broken' .*phasekit-broken.*broken on purpose"):
        pm = PluginManager(distributions=THIRD_PARTY)
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
    ds = execute(config, data, pm, derive=add_critical)
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
    pm = PluginManager(distributions=THIRD_PARTY)
    assert "tanh_net" not in pm.models() and "quadratic" in pm.models()
    assert not pm.failures
    monkeypatch.setenv("PHASEKIT_PLUGINS", "tanh_net")
    assert "tanh_net" in PluginManager(distributions=THIRD_PARTY).models()
    monkeypatch.delenv("PHASEKIT_PLUGINS")
    monkeypatch.setenv("PHASEKIT_DISABLE_PLUGINS", "tanh_net,broken")
    pm = PluginManager(distributions=THIRD_PARTY)
    assert "tanh_net" not in pm.models() and not pm.failures


def test_a_broken_plugin_is_one_warning_line_on_the_command_line(monkeypatch, capsys):
    """With the command line's warning display (errors.install), a plugin whose hook
    raises is reported as exactly one 'phasekit: warning:' line, not a Python warning
    with file and line."""
    class Bad:
        @hookimpl
        def phasekit_register_models(self, register):
            raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    pm = PluginManager(load_entry_points=False)
    pm.register(Bad(), name="bad")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        errors.install()
        assert pm.models() == {}
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("phasekit: warning: phasekit plugin 'bad' (registered directly) is "
                           "broken: "
                           "its hook phasekit_register_models raised RuntimeError: boom; "
                           "with a second line"), line


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

    pm = builtin_manager()
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
        builtin_manager().get("model", "x")


@pytest.mark.slow
def test_cli_lists_third_party_and_failures(third_party):
    # phasekit looks at everything installed; the allow-list keeps other installed
    # third-party plugins (and their warnings) out of this listing
    env = {**os.environ, "PYTHONPATH": third_party,
           "PHASEKIT_PLUGINS": "phasekit-tanh-net:tanh_net,phasekit-broken:broken"}
    exe = os.path.join(os.path.dirname(sys.executable), "phasekit")
    proc = subprocess.run([exe, "plugins"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["model", "tanh_net", "phasekit-tanh-net", "0.3", "tanh_net"] in rows
    assert ["model", "quadratic", "phasekit"] == rows[1][:3] or any(
        r[:3] == ["model", "quadratic", "phasekit"] for r in rows)
    assert "FAILED  broken (phasekit-broken 1.0)" in proc.stdout
    # the warning names it, on one line: no file name, line number or source line
    assert [line for line in proc.stderr.splitlines() if "broken" in line] == [
        "phasekit: warning: phasekit plugin 'broken' (distribution phasekit-broken 1.0) is "
        "broken: importing 'broken_plugin' raised ImportError: this plugin is broken on "
        "purpose; it was not loaded. Set PHASEKIT_DISABLE_PLUGINS=phasekit-broken:broken to "
        "skip it without this warning."]
    assert "manager.py" not in proc.stderr and "warnings.warn(" not in proc.stderr


# -- loading rules: same-named plugins, distribution:name, broken plugins ----------------

def model_plugin(model: str, before: str = "") -> str:
    """Source of a plugin module registering a (registry-only) model called ``model``."""
    return textwrap.dedent(f"""
        from phasekit import hookimpl
        from phasekit.model import Model
        {before}

        class M(Model):
            name = {model!r}
            description = "fake"

        @hookimpl
        def phasekit_register_models(register):
            register(M)
        """)


def plugin_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


class FakeSite:
    """``fake(dist, version, {entry-point name: module source})`` installs a distribution.

    Each module is written as ``<dist>_<entry-point name>.py`` (unique per test run)
    next to a ``*.dist-info`` folder naming it in the ``phasekit`` group.  The managers
    of :meth:`manager` and :meth:`load` look at the built-ins and these distributions
    only, so other installed plugins cannot change what a test sees.
    """

    def __init__(self, tmp_path: Path, monkeypatch):
        self.root, self.monkeypatch = tmp_path, monkeypatch
        self.tag = tmp_path.name.replace("-", "_")
        self.distributions = [BUILTIN_DISTRIBUTION]

    def __call__(self, dist: str, version: str, plugins: dict[str, str]) -> None:
        modules = {}
        for ep_name, source in plugins.items():
            module = f"{dist.replace('-', '_')}_{ep_name}_{self.tag}"
            modules[ep_name] = module
            (self.root / dist).mkdir(exist_ok=True)
            (self.root / dist / f"{module}.py").write_text(source)
        site = install_fake_distribution(self.root / dist, dist, version, modules)
        self.monkeypatch.syspath_prepend(str(self.root / dist))
        self.monkeypatch.syspath_prepend(str(site))
        self.distributions.append(dist)

    def manager(self) -> PluginManager:
        return PluginManager(distributions=self.distributions)

    def load(self, **env) -> tuple[PluginManager, list[str]]:
        """A fresh manager under the given environment, with the plugin warnings it gave."""
        for var, value in env.items():
            os.environ[var] = value
        try:
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                pm = self.manager()
                pm.models()
        finally:
            for var in env:
                del os.environ[var]
        return pm, plugin_warnings(record)


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSite:
    monkeypatch.delenv("PHASEKIT_PLUGINS", raising=False)
    monkeypatch.delenv("PHASEKIT_DISABLE_PLUGINS", raising=False)
    return FakeSite(tmp_path, monkeypatch)


def test_two_distributions_with_one_plugin_name_warn_and_can_be_chosen(fake):
    fake("phasekit-dup-b", "2.0", {"dup": model_plugin("model_b")})
    fake("phasekit-dup-a", "1.0", {"dup": model_plugin("model_a")})
    pm, messages = fake.load()
    assert "model_a" in pm.models() and "model_b" not in pm.models()
    [message] = messages
    assert ("2 installed distributions provide a phasekit plugin named 'dup': phasekit-dup-a "
            "1.0 and phasekit-dup-b 2.0; loading the one from phasekit-dup-a") in message
    assert ("To load the one from phasekit-dup-b instead, set "
            "PHASEKIT_DISABLE_PLUGINS=phasekit-dup-a:dup.") in message
    # the advice works, and names compare as pip compares them
    for entry in ("phasekit-dup-a:dup", "Phasekit_Dup.A:dup"):
        pm, messages = fake.load(PHASEKIT_DISABLE_PLUGINS=entry)
        assert "model_b" in pm.models() and "model_a" not in pm.models() and not messages
    pm, messages = fake.load(PHASEKIT_DISABLE_PLUGINS="dup")           # a plain name: both
    assert not {"model_a", "model_b"} & set(pm.models()) and not messages


def test_allow_list_by_distribution_and_name(fake):
    fake("phasekit-dup-a", "1.0", {"dup": model_plugin("model_a")})
    fake("phasekit-dup-b", "2.0", {"dup": model_plugin("model_b"),
                                   "more": model_plugin("model_more")})
    pm, messages = fake.load(PHASEKIT_PLUGINS="phasekit-dup-b:dup")
    assert {"model_b", "quadratic"} <= set(pm.models()) and not messages
    assert not {"model_a", "model_more"} & set(pm.models())
    pm, messages = fake.load(PHASEKIT_PLUGINS="phasekit-dup-b:dup,more")
    assert {"model_b", "model_more"} <= set(pm.models()) and "model_a" not in pm.models()
    pm, messages = fake.load(PHASEKIT_PLUGINS="dup")                   # both: one wins, and says so
    assert "model_a" in pm.models() and "model_b" not in pm.models()
    assert len(messages) == 1 and "named 'dup'" in messages[0]


def test_a_third_party_plugin_named_like_a_builtin(fake):
    fake("phasekit-shadow", "0.1", {"quadratic": model_plugin("shadow")})
    pm, [message] = fake.load()
    assert pm.get("model", "quadratic").__module__ == "phasekit_plugins.quadratic"
    assert "shadow" not in pm.models()
    assert re.fullmatch(r"2 installed distributions provide a phasekit plugin named 'quadratic': "
                        r"phasekit \S+ and phasekit-shadow 0\.1; loading the one from phasekit "
                        r"\(built-in plugins win\)\. To load the one from phasekit-shadow "
                        r"instead, set PHASEKIT_DISABLE_PLUGINS=phasekit:quadratic\.", message)
    pm, messages = fake.load(PHASEKIT_DISABLE_PLUGINS="phasekit:quadratic")
    assert "shadow" in pm.models() and "quadratic" not in pm.models() and not messages


def test_an_entry_matching_no_plugin_is_named(fake):
    fake("phasekit-dup-a", "1.0", {"dup": model_plugin("model_a")})
    pm, [message] = fake.load(PHASEKIT_DISABLE_PLUGINS="dpu")
    assert "model_a" in pm.models()
    assert message.startswith("PHASEKIT_DISABLE_PLUGINS names 'dpu', which matches no "
                              "installed phasekit plugin. Did you mean 'dup'? Installed: ")
    pm, [message] = fake.load(PHASEKIT_PLUGINS="phasekit-dup-z:dup")
    assert "model_a" not in pm.models()
    assert "'dup' comes from phasekit-dup-a." in message


@pytest.mark.parametrize("raises", ["SystemExit(3)", "SystemExit('bye')", "GeneratorExit()",
                                    "MemoryError('no room')"])
def test_a_plugin_raising_any_base_exception_at_import_is_reported(fake, raises):
    fake("phasekit-quits", "1.0", {"quits": f"raise {raises}\n"})
    fake("phasekit-dup-a", "1.0", {"dup": model_plugin("model_a")})
    pm, [message] = fake.load()
    assert "model_a" in pm.models() and "quadratic" in pm.models()      # the rest loads
    assert message.startswith("phasekit plugin 'quits' (distribution phasekit-quits 1.0) is "
                              "broken: importing 'phasekit_quits_quits_")
    assert f"' raised {raises.split('(')[0]}" in message
    assert message.endswith("; it was not loaded. Set "
                            "PHASEKIT_DISABLE_PLUGINS=phasekit-quits:quits to skip it without "
                            "this warning.")
    assert [(f.plugin, f.distribution) for f in pm.failures] == [("quits", "phasekit-quits")]


def test_ctrl_c_during_a_plugin_import_is_not_swallowed(fake):
    fake("phasekit-slow", "1.0", {"slow": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        fake.manager()


def test_a_module_that_is_no_valid_plugin_is_reported(fake):
    bad_signature = textwrap.dedent("""
        from phasekit import hookimpl

        @hookimpl
        def phasekit_register_models(reg, extra):
            pass
        """)
    fake("phasekit-odd", "1.0", {"odd": bad_signature})
    pm, [message] = fake.load()
    assert "phasekit plugin 'odd' (distribution phasekit-odd 1.0) is broken: " in message
    assert "is not a valid phasekit plugin: PluginValidationError" in message
    assert [f.plugin for f in pm.failures] == ["odd"] and "quadratic" in pm.models()


def test_a_misnamed_hook_is_named_with_the_hook_meant(fake):
    misnamed = model_plugin("never").replace("def phasekit_register_models",
                                             "def phasekit_register_model")
    fake("phasekit-typo", "1.0", {"typo": misnamed})
    pm, [message] = fake.load()
    assert "never" not in pm.models()
    assert message.startswith("phasekit plugin 'typo' (distribution phasekit-typo 1.0) "
                              "implements 'phasekit_register_model', which is not a phasekit "
                              "hook, so phasekit never calls it. Did you mean "
                              "'phasekit_register_models'?")


@pytest.mark.parametrize("raises", [SystemExit(1), RuntimeError("boom"), GeneratorExit()])
def test_a_hook_raising_anything_keeps_nothing_it_registered(raises):
    class HalfDone:
        @hookimpl
        def phasekit_register_models(self, register):
            from phasekit_plugins.quadratic import Quadratic

            class Early(Quadratic):
                name = "early"

            register(Early)
            raise raises

        @hookimpl
        def phasekit_register_presets(self, register):
            register("half_done", {"model": {"name": "quadratic"}}, "still here")

    pm = builtin_manager()
    pm.register(HalfDone(), name="half", distribution="phasekit-half", version="2.1")
    with pytest.warns(PluginWarning) as record:
        models, presets = pm.models(), pm.presets()
    [message] = plugin_warnings(record)
    assert message == (f"phasekit plugin 'half' (distribution phasekit-half 2.1) is broken: "
                       f"its hook phasekit_register_models raised "
                       f"{type(raises).__name__}{': ' + str(raises) if str(raises) else ''}; "
                       f"none of its models are registered (its other hooks still count).")
    assert "early" not in models and "quadratic" in models
    assert "half_done" in presets                                   # its other hook counts
    assert [(f.plugin, f.distribution) for f in pm.failures] == [("half", "phasekit-half")]


def test_ctrl_c_inside_a_hook_is_not_swallowed():
    class Interrupted:
        @hookimpl
        def phasekit_register_datasets(self, register):
            raise KeyboardInterrupt

    pm = builtin_manager()
    pm.register(Interrupted(), name="interrupted")
    with pytest.raises(KeyboardInterrupt):
        pm.datasets()
