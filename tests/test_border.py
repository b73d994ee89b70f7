"""What crosses from a plugin into the core is checked at the border: a broken observable,
model or preset ends in one line naming the plugin, the hook and what was expected,
never in a traceback from inside the engine (docs/reliability.md)."""

from __future__ import annotations

import types
import warnings

import pytest
import torch

from phasekit import hookimpl
from phasekit.config.registry import PluginManager
from phasekit.config.resolve import resolve_config
from phasekit.errors import PluginError, PluginWarning
from phasekit.observables import Observable
from phasekit.runner.execute import execute
from phasekit_plugins.quadratic import Quadratic

TOY = {"model": {"name": "quadratic", "width": 20}, "dataset": {"name": "toy"},
       "sweep": {"eta_lambda0": [0.5, 3.0], "max_steps": 50, "observables": ["bad"]}}


def manager_with(**hooks) -> PluginManager:
    """The built-ins plus one plugin 'evil' made of ``hooks`` (hook name -> function)."""
    pm = PluginManager()
    plugin = types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})
    pm.register(plugin, name="evil")
    return pm


def observable(**fields) -> PluginManager:
    obs = Observable(**{"name": "bad", "long_name": "a bad observable",
                        "compute": lambda snap: snap.loss, **fields})

    def phasekit_register_observables(register):
        register(obs)

    return manager_with(phasekit_register_observables=phasekit_register_observables)


def run(pm, raw=TOY):
    config, data = resolve_config(raw, pm)
    return execute(config, data, pm)


@pytest.mark.parametrize("fields, expected", [
    ({"compute": lambda snap: [1.0]}, "compute must return its value, a tensor of shape "
                                      "(any,); it returned list"),
    ({"compute": lambda snap: snap.loss[:, None, None]}, "compute must return its value "
                                                         "of shape (any,); it returned shape"),
    ({"compute": lambda snap: 1 / 0}, "compute raised ZeroDivisionError"),
    ({"applies": lambda model, data: [][1]}, "applies raised IndexError"),
])
def test_a_broken_observable_is_named(fields, expected):
    with pytest.raises(PluginError) as info:
        run(observable(**fields))
    message = str(info.value)
    assert message.startswith("observable 'bad' (plugin 'evil', registered directly): ")
    if "(any,)" in expected:
        head, tail = expected.split("(any,)")
        assert head in message and tail in message
    else:
        assert expected in message


class StringSetup(Quadratic):
    name = "string_setup"

    def setup(self, seed, device, dtype):
        return "features and theta"


class WrongOutputs(Quadratic):
    name = "wrong_outputs"

    def forward(self, features, theta, split="train"):
        z, cache = super().forward(features, theta, split)
        return z[:, :0], cache


class NotBounds(Quadratic):
    name = "not_bounds"

    def bounds(self, features, theta0, lambda0):
        return {"eq60": 1.0}


@pytest.mark.parametrize("cls, expected", [
    (StringSetup, "setup must return (features, theta0); it returned str"),
    (WrongOutputs, "forward must return the outputs z of shape (1, 1); it returned shape "
                   "(1, 0)"),
    (NotBounds, "bounds must return a list of phasekit.model.Bound; it returned dict"),
])
def test_a_broken_model_is_named(cls, expected):
    def phasekit_register_models(register):
        register(cls)

    pm = manager_with(phasekit_register_models=phasekit_register_models)
    raw = {**TOY, "model": {"name": cls.name, "width": 20},
           "sweep": {**TOY["sweep"], "observables": []}}
    with pytest.raises(PluginError, match=f"model '{cls.name}' \\(plugin 'evil'") as info:
        run(pm, raw)
    assert expected in str(info.value)


@pytest.mark.parametrize("args, expected", [
    ((1, 2, 3), "a preset's name must be a non-empty string, got 1"),
    (("p", {"model": {}}, 5), "preset 'p': its description must be a string, got int"),
    (("p", "model", "text"), "preset 'p': its config must be a mapping of tables"),
    (("p",), "register() for a preset takes (name, config, description)"),
])
def test_a_broken_preset_hook_is_a_warning_and_the_rest_still_works(args, expected):
    def phasekit_register_presets(register):
        register(*args)

    pm = manager_with(phasekit_register_presets=phasekit_register_presets)
    with pytest.warns(PluginWarning, match="'evil' .* is broken") as caught:
        presets = pm.presets()
    assert expected in str(caught[0].message)
    assert "fig1" in presets and "p" not in presets


def test_registering_something_of_the_wrong_kind_is_named():
    def phasekit_register_models(register):
        register(torch.nn.Linear)

    pm = manager_with(phasekit_register_models=phasekit_register_models)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "quadratic" in pm.models()
    assert "register() for a model takes a Model subclass (phasekit.model.Model), got " \
           "type" in str(caught[0].message)


def test_the_command_line_prints_one_line(tmp_path, capsys, monkeypatch):
    from phasekit.cli import main as cli

    pm = observable(compute=lambda snap: "not a tensor")
    monkeypatch.setattr(cli, "get_plugin_manager", lambda: pm)
    monkeypatch.setattr("phasekit.api.get_plugin_manager", lambda: pm)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[model]\nname = "quadratic"\nwidth = 20\n'
                                     '[dataset]\nname = "toy"\n[sweep]\n'
                                     'eta_lambda0 = [0.5]\nmax_steps = 20\n'
                                     'observables = ["bad"]\n')
    assert cli.main(["run", "c.toml", "-q", "-o", "s.nc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phasekit: error: observable 'bad'")
