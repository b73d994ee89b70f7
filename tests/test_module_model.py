"""phasekit.module.ModuleModel: a torch.nn.Module whose author writes only build()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from phasekit import hookimpl
from phasekit.config.registry import PluginManager
from phasekit.errors import ConfigError, PluginError
from phasekit.module import ModuleModel
from phasekit.options import Option, positive
from phasekit.testing import check_model

from .helpers import sweep


class TanhMLP(ModuleModel):
    name = "tanh_mlp_module"
    description = "one hidden tanh layer with biases"
    options = {"width": Option(8, "hidden units", check=positive)}

    def build(self):
        n = self.settings["width"]
        return nn.Sequential(nn.LazyLinear(n), nn.Tanh(), nn.Linear(n, 1))


class WithBuffer(TanhMLP):
    name = "tanh_mlp_buffer_module"

    def build(self):
        module = super().build()
        module.register_buffer("shift", torch.randn(1))
        return module


def broken(name: str, build):
    return type(name, (ModuleModel,), {"name": name, "build": build})


x_dim = 3

BROKEN = [
    (broken("two_outputs", lambda self: nn.Linear(x_dim, 2)),
     r"the module must map inputs \(4, 3\) to floating-point outputs of shape \(4,\) or "
     r"\(4, 1\); it returned shape \(4, 2\)"),
    (broken("rounded_outputs", lambda self: nn.Sequential(nn.Linear(x_dim, 1), Rounded())),
     r"to floating-point outputs .* it returned shape \(4, 1\), dtype torch.int64"),
    (broken("not_a_module", lambda self: (lambda x: x.sum(-1))),
     "build\\(\\) must return a torch.nn.Module; it returned function"),
    (broken("no_parameters", lambda self: nn.Flatten()),
     "build\\(\\) returned a module without trainable parameters"),
    (broken("build_raises", lambda self: nn.Linear(x_dim, 1, bias=self.settings["bias"])),
     "setup raised KeyError: 'bias'"),
]


class Rounded(nn.Module):
    def forward(self, x):
        return x.round().long()


class ModulePlugins:
    @hookimpl
    def phasekit_register_models(self, register):
        register(TanhMLP)
        register(WithBuffer)
        for cls, _ in BROKEN:
            register(cls)


@pytest.fixture(scope="module")
def modules():
    pm = PluginManager()
    pm.register(ModulePlugins(), name="module_models")
    return pm


def data(D: int = 4, test: int = 3) -> dict:
    return {"name": "random", "num_train": D, "num_test": test, "input_dim": x_dim}


def test_a_module_model_passes_the_contract(modules):
    check_model({"model": {"name": "tanh_mlp_module", "width": 6}, "dataset": data()},
                manager=modules, max_examples=4)


def test_a_module_with_buffers_passes_the_contract_without_stacking_seeds(modules):
    config = {"model": {"name": "tanh_mlp_buffer_module", "width": 6}, "dataset": data()}
    check_model(config, manager=modules, max_examples=3)
    from phasekit.api import build_model

    assert not build_model(config, manager=modules).can_stack_seeds()
    assert build_model({"model": {"name": "tanh_mlp_module"}, "dataset": data()},
                       manager=modules).can_stack_seeds()


def test_build_runs_under_the_seed_and_leaves_the_callers_state_alone(modules):
    from phasekit.api import build_model

    model = build_model({"model": {"name": "tanh_mlp_module"}, "dataset": data()},
                        manager=modules)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = model.setup(7, torch.device("cpu"), torch.float32)[1]
    b = model.setup(7, torch.device("cpu"), torch.float64)[1]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.get_default_dtype() == torch.float32
    assert torch.equal(a, b.float())
    assert not torch.equal(b, model.setup(8, torch.device("cpu"), torch.float64)[1])


def test_a_sweep_records_lambda0_by_lanczos_the_test_loss_and_the_hessian(modules):
    from phasekit.api import build_model
    from phasekit.model import autograd_ntk

    config = {"model": {"name": "tanh_mlp_module", "width": 16}, "dataset": data(6)}
    ds = sweep(config, modules, eta_lambda0=[0.5, 1.5, 40.0], seeds=[0, 1], max_steps=400,
               hessian=True)
    model = build_model(config, manager=modules)
    for i, seed in enumerate(ds.seed.values):
        feats, theta0 = model.setup(int(seed), torch.device("cpu"), torch.float64)
        exact = float(torch.linalg.eigvalsh(autograd_ntk(model, feats, theta0[None])[0])[-1])
        np.testing.assert_allclose(ds.lambda0.values[i], exact, rtol=1e-10)
    assert np.isfinite(ds.lambda0_hessian.values).all()
    lazy = ds.sel(eta_lambda0=0.5)
    assert (lazy.status != "diverged").all()
    assert (lazy.final_loss < 0.5 * lazy.loss.isel(step=0)).all()
    assert (ds.status.sel(eta_lambda0=40.0) == "diverged").all()
    assert np.isfinite(ds.test_loss.isel(step=0).values).all()
    np.testing.assert_allclose(ds.sharpness.isel(step=0).sel(eta_lambda0=1.5).values, 1.5,
                               rtol=1e-10)


@pytest.mark.parametrize("cls, message", BROKEN, ids=[c.name for c, _ in BROKEN])
def test_a_broken_module_ends_in_one_error_naming_the_model(modules, cls, message):
    with pytest.raises(PluginError, match=rf"model '?{cls.name}'?.*{message}"):
        sweep({"model": {"name": cls.name}, "dataset": data()}, modules, eta_lambda0=[1.0],
              seeds=[0], max_steps=2)


def test_a_config_cannot_bring_a_module_only_an_installed_plugin_can(modules):
    for name in ("module_model", "phasekit.module.ModuleModel", "torch.nn.Linear"):
        with pytest.raises(ConfigError, match="model"):
            sweep({"model": {"name": name}, "dataset": data()}, modules, eta_lambda0=[1.0],
                  seeds=[0], max_steps=2)


def test_the_plugin_guide_opens_with_the_shipped_cnn():
    import inspect
    from pathlib import Path

    from phasekit_plugins.modules import SmallCNN

    docs = Path(__file__).parents[1] / "docs"
    guide = (docs / "plugins.md").read_text()
    first = guide.split("\n## ")[1]
    assert first.startswith("Bring your own network")
    assert f"```python\n{inspect.getsource(SmallCNN)}```" in first
    assert "![cnn_fmnist](figures/cnn_fmnist.png)" in first
    assert (docs / "figures" / "cnn_fmnist.png").stat().st_size > 10_000
    assert "![cnn_fmnist](figures/cnn_fmnist.png)" in (docs / "phases.md").read_text()

