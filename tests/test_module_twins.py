"""The built-in closed-form nets, written as ModuleModels by a user who knows only
torch.nn, give the same phase diagram: the uv net (homogeneous, a_+ = a_- = 1) and the
three-layer ReLU net (deep_relu, k = 1) on the toy point x = 1, y = 0 at width 1024.

Each module draws its weights as the built-in does: N(0, 1) in theta's order (U, then
the hidden matrix, then v), from the generator ``build()`` runs under, which the seed
seeds as the built-in seeds its own; ``skip_init`` keeps torch's default initialisation
from drawing first.  So both start from the same weights and lambda_0 agrees to
rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from phasekit import hookimpl
from phasekit.config.registry import PluginManager
from phasekit.module import ModuleModel
from phasekit.options import Option, positive

from .helpers import sweep


def normal_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=False)
    nn.init.normal_(layer.weight)                       # N(0, 1), as eq. 53 and 193 draw
    return layer


class ReadoutNet(nn.Module):
    """``z = v . a(x) / sqrt(n)``, hidden layers after the first divided by sqrt(n)."""

    def __init__(self, d: int, n: int, hidden: int, act: type[nn.Module]):
        super().__init__()
        self.first = normal_linear(d, n)
        self.hidden = nn.ModuleList(normal_linear(n, n) for _ in range(hidden))
        self.readout = normal_linear(n, 1)
        self.act, self.root_n = act(), math.sqrt(n)

    def forward(self, x):
        a = self.act(self.first(x))
        for layer in self.hidden:
            a = self.act(layer(a) / self.root_n)
        return self.readout(a) / self.root_n


class UVModule(ModuleModel):
    name = "uv_module"
    options = {"width": Option(1024, "hidden units", check=positive)}

    def build(self):
        return ReadoutNet(self.data.input_dim, self.settings["width"], 0, nn.Identity)


class ReLU3Module(ModuleModel):
    name = "relu3_module"
    options = {"width": Option(1024, "hidden units", check=positive)}

    def build(self):
        return ReadoutNet(self.data.input_dim, self.settings["width"], 1, nn.ReLU)


class Twins:
    @hookimpl
    def phasekit_register_models(self, register):
        register(UVModule)
        register(ReLU3Module)


@pytest.fixture(scope="module")
def twins():
    pm = PluginManager()
    pm.register(Twins(), name="module_twins")
    return pm


#: rates around the lazy/catapult boundary (2) and the catapult/divergent one (4)
GRID = [1.0, 1.8, 1.95, 2.05, 2.5, 3.0, 3.5, 3.9, 4.1, 4.5, 6.0]
SWEEP = {"eta_lambda0": GRID, "seeds": [0, 1, 2], "max_steps": 3000}
#: the three-layer ReLU net trains to c ~ 8, then dies (trivial) or diverges
RELU_GRID = GRID + [8.0, 12.0, 16.0, 24.0, 32.0]


def compare(builtin, module, phases):
    """Same statuses and steps, c_loss and c_max, lambda_0 per seed to 1e-10, the final
    values of the runs that did not diverge; every one of ``phases`` occurs."""
    np.testing.assert_allclose(module.lambda0.values, builtin.lambda0.values, rtol=1e-10)
    assert (module.status.values == builtin.status.values).all(), (
        builtin.status.values, module.status.values)
    np.testing.assert_array_equal(module.steps.values, builtin.steps.values)
    for name in ("c_loss", "c_max"):
        np.testing.assert_array_equal(module[name].values, builtin[name].values)
    assert set(builtin.status.values.ravel()) >= phases
    trained = builtin.status.values != "diverged"
    for name in ("final_loss", "final_sharpness", "final_weight_norm"):
        np.testing.assert_allclose(module[name].values[trained], builtin[name].values[trained],
                                   rtol=1e-6, atol=1e-12, err_msg=name)


def test_the_uv_net_as_a_module_gives_the_builtins_diagram(twins):
    builtin = sweep({"model": {"name": "homogeneous", "width": 1024, "a_plus": 1.0,
                               "a_minus": 1.0}, "dataset": {"name": "toy"}}, twins, **SWEEP)
    module = sweep({"model": {"name": "uv_module", "width": 1024}, "dataset": {"name": "toy"}},
                   twins, **SWEEP)
    compare(builtin, module, {"converged", "diverged"})


def test_the_three_layer_relu_net_as_a_module_gives_the_builtins_diagram(twins):
    kw = {**SWEEP, "eta_lambda0": RELU_GRID}
    builtin = sweep({"model": {"name": "deep_relu", "width": 1024, "hidden_layers": 1},
                     "dataset": {"name": "toy"}}, twins, **kw)
    module = sweep({"model": {"name": "relu3_module", "width": 1024},
                    "dataset": {"name": "toy"}}, twins, **kw)
    compare(builtin, module, {"converged", "trivial", "diverged"})


def test_the_modules_draw_the_builtins_weights(twins):
    from phasekit.api import build_model

    cpu = torch.device("cpu")
    for builtin, module in [({"name": "deep_relu", "width": 16, "hidden_layers": 1},
                             {"name": "relu3_module", "width": 16})]:
        a = build_model({"model": builtin, "dataset": {"name": "toy"}}, manager=twins)
        b = build_model({"model": module, "dataset": {"name": "toy"}}, manager=twins)
        assert torch.equal(a.setup(5, cpu, torch.float64)[1], b.setup(5, cpu, torch.float64)[1])
