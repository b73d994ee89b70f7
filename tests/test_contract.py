"""The contract kit (phasekit.testing): every built-in model and the example plugin
honour it, and deliberately broken models fail it with the name of the broken rule."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import Phase, settings

import phasekit.config.registry
from phasekit import hookimpl
from phasekit.api import build_model
from phasekit.config.registry import PluginManager
from phasekit.config.resolve import resolve_config
from phasekit.engine.batched import BATCH_RTOL
from phasekit.engine.engine import torch_threads
from phasekit.observables import Snapshot
from phasekit.testing import CHECKS, check_model, model_checks
from phasekit_plugins.homogeneous import Homogeneous, ReLU
from phasekit_plugins.linear_bias import LinearBias
from phasekit_plugins.quadratic import Quadratic, bias_quantity

from .test_plugins import install_fake_distribution

# run under each ATEN_CPU_CAPABILITY by tox's kernels-* envs (pytest -m kernels)
pytestmark = pytest.mark.kernels

DOCS = Path(__file__).parents[1] / "docs"
EXAMPLE = DOCS / "examples" / "phasekit-tanh-net"


def random_data(D: int, d: int, test: int = 2) -> dict:
    return {"name": "random", "num_train": D, "num_test": test, "input_dim": d}


#: every built-in model, small; D < d for the networks' input-span coordinates, and
#: d = 1 for the homogeneous net's divergence bound (eq. 102)
BUILTIN = {
    "quadratic": {"model": {"name": "quadratic", "width": 12}, "dataset": random_data(3, 2)},
    "quadratic_point": {"model": {"name": "quadratic", "width": 12},          # stacks seeds
                        "dataset": {"name": "toy", "x": [0.8], "y": 0.3}},
    "quadratic_bias": {"model": {"name": "quadratic_bias", "width": 12, "feature_width": 3},
                       "dataset": random_data(3, 2)},
    "homogeneous": {"model": {"name": "homogeneous", "width": 12, "a_minus": 0.3},
                    "dataset": random_data(3, 5)},
    "homogeneous_d1": {"model": {"name": "homogeneous", "width": 10, "a_minus": 0.5},
                       "dataset": random_data(3, 1)},
    "relu": {"model": {"name": "relu", "width": 12}, "dataset": random_data(4, 2)},
    "deep_relu": {"model": {"name": "deep_relu", "width": 8, "hidden_layers": 2},
                  "dataset": random_data(3, 4)},
    "linear_bias": {"model": {"name": "linear_bias", "width": 8, "bias_init": 0.3},
                    "dataset": random_data(3, 2)},
    # the initial scale and the standard parameterisation (docs/theory.md §2.6): He variance
    # sigma_w^2 = 2, a readout variance, and the bounds with r^2 = 1 in place of n
    "homogeneous_d1_standard": {"model": {"name": "homogeneous", "width": 10, "a_minus": 0.5,
                                          "parameterization": "standard",
                                          "weight_variance": 2.0, "readout_variance": 0.5},
                                "dataset": random_data(3, 1)},
    "homogeneous_he": {"model": {"name": "homogeneous", "width": 12, "a_minus": 0.3,
                                 "weight_variance": 2.0, "readout_variance": 3.0},
                       "dataset": random_data(3, 5)},
    "relu_standard": {"model": {"name": "relu", "width": 12, "parameterization": "standard",
                                "weight_variance": 2.0},
                      "dataset": random_data(4, 2)},
    "deep_relu_he": {"model": {"name": "deep_relu", "width": 8, "hidden_layers": 2,
                               "weight_variance": 2.0}, "dataset": random_data(3, 4)},
    "deep_relu_standard": {"model": {"name": "deep_relu", "width": 8, "hidden_layers": 2,
                                     "parameterization": "standard", "weight_variance": 2.0,
                                     "readout_variance": 0.5},
                           "dataset": random_data(3, 4)},
    "linear_bias_standard": {"model": {"name": "linear_bias", "width": 8, "bias_init": 0.3,
                                       "parameterization": "standard",
                                       "weight_variance": 2.0, "readout_variance": 0.5},
                             "dataset": random_data(3, 2)},
    # a torch.nn.Module (phasekit.module.ModuleModel) on 28 x 28 inputs
    "small_cnn": {"model": {"name": "small_cnn", "channels": 2},
                  "dataset": random_data(3, 784)},
}


def eq79_quantity(model, feats, theta, theta0):
    """theta^2 + (phi.theta)^2/phi^2 (eq. 79), the quantity of the quadratic model with
    bias that eq. 77 makes decrease: the sweep's own ``bias_norm`` observable."""
    snap = Snapshot(model, model.data, feats, theta, theta0, None, None, None, None, None,
                    theta.new_full((theta.shape[0],), math.nan), 0)
    return bias_quantity(snap)


QUANTITIES = {"quadratic_bias": {"eq77": eq79_quantity}}


#: the checks of what sharing a batch does to a row (phasekit.engine.batched.BATCH_RTOL): run
#: at 1 and 2 threads, and marked ``kernels`` so that they run under every kernel family
#: torch can select (``ATEN_CPU_CAPABILITY``)
BATCH_CHECKS = ("batching", "stack_seeds")


@pytest.mark.parametrize("check", [
    pytest.param(check, id=f"{model}-{name}")
    for model, config in BUILTIN.items()
    for name, check in model_checks(config, quantities=QUANTITIES.get(model))
    if name not in BATCH_CHECKS])
def test_builtin_models_honour_the_contract(check):
    check()


@pytest.mark.kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("check", [
    pytest.param(check, id=f"{model}-{name}")
    for model, config in BUILTIN.items()
    for name, check in model_checks(config) if name in BATCH_CHECKS])
def test_builtin_models_keep_rows_within_the_batch_bound(check, threads):
    with torch_threads(threads):
        check()


def test_every_builtin_model_is_checked(manager):
    builtin = {r.name for r in manager.registrations("model")
               if r.distribution == phasekit.config.registry.BUILTIN_DISTRIBUTION}
    assert {config["model"]["name"] for config in BUILTIN.values()} == builtin


def test_build_model_takes_a_raw_or_a_resolved_config(manager):
    raw = BUILTIN["relu"]
    resolved, _ = resolve_config(raw, manager)
    a, b = build_model(raw), build_model(resolved)
    assert type(a) is type(b) is ReLU
    assert a.settings == b.settings == {"width": 12, "input_span": False,
                                        "weight_variance": 1.0, "readout_variance": 1.0,
                                        "parameterization": "ntk"}
    assert a.data.num_train == 4 and a.data.input_dim == 2


def test_unknown_skip_is_refused():
    with pytest.raises(ValueError, match="unknown checks \\['shape'\\]"):
        model_checks(BUILTIN["relu"], skip=["shape"])
    assert [n for n, _ in model_checks(BUILTIN["relu"], skip=["bounds_hold"])] == \
        list(CHECKS[:-1])


# -- the example distribution of docs/plugins.md --------------------------------------------

@pytest.fixture
def tanh_net_installed(tmp_path, monkeypatch):
    """The example distribution installed with its metadata, and a fresh process-wide
    plugin manager that finds it through its entry point, as in a plugin's own suite."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = install_fake_distribution(tmp_path, project["name"], project["version"],
                                     project["entry-points"]["phasekit"])
    for path in (site, EXAMPLE):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("PHASEKIT_PLUGINS", raising=False)
    monkeypatch.delenv("PHASEKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.setattr(phasekit.config.registry, "_default", None)


def test_example_plugin_passes_its_own_contract_test(tanh_net_installed):
    spec = importlib.util.spec_from_file_location("example_tests",
                                                  EXAMPLE / "test_phasekit_tanh_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_tanh_net_honours_the_model_contract()
    reg = {r.name: r for r in phasekit.config.registry.get_plugin_manager().registrations("model")}
    assert reg["tanh_net"].distribution == "phasekit-tanh-net"


def guide_section(title: str) -> str:
    guide = (DOCS / "plugins.md").read_text()
    return guide.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_guide_shows_the_example_test_and_its_parametrised_form_works(manager):
    blocks = re.findall(r"```python\n(.*?)```", guide_section("Testing your plugin"), re.S)
    assert (EXAMPLE / "test_phasekit_tanh_net.py").read_text() in blocks
    parametrised = [b for b in blocks if "model_checks(CONFIG)" in b]
    assert len(parametrised) == 1
    namespace = {"CONFIG": {"model": {"name": "quadratic", "width": 4},
                            "dataset": random_data(2, 1)}}
    exec(parametrised[0], namespace)
    cases = namespace["CHECKS"]
    assert [name for name, _ in cases] == list(CHECKS)
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    for name, check in cases:
        test(name, check)


# -- broken models: the kit must name the rule they break ------------------------------------

class NTKFactor(Homogeneous):
    name = "broken_ntk_factor"

    def ntk(self, feats, theta, cache):
        return 2.0 * super().ntk(feats, theta, cache)     # eq. 4 has 1/D, not 2/D


class NTKNeedsCache(LinearBias):
    name = "broken_ntk_needs_cache"

    def ntk(self, feats, theta, cache):
        h = cache["h"]              # forgets that the engine passes cache=None at init
        _, v, _ = self.split(theta)
        H = (h @ h.transpose(-1, -2) + feats.gram * (v * v).sum(-1)[:, None, None]) \
            / self.settings["width"] + 1.0                                     # eq. 87
        return H / h.shape[1]


class ProductsTransposed(Homogeneous):
    name = "broken_ntk_products"

    def ntk_operator(self, feats, theta, cache):
        H = self.ntk(feats, theta, cache)
        lower = torch.tril(H) + torch.tril(H, -1)           # twice the lower triangle: not H
        return lambda u: (lower @ u.unsqueeze(-1)).squeeze(-1)


class GradientTimesD(LinearBias):
    name = "broken_gradient"

    def loss_gradient(self, feats, theta, cache, eps):
        return eps.shape[-1] * super().loss_gradient(feats, theta, cache, eps)   # no 1/D


class DescendOutOfPlace(Quadratic):
    name = "broken_descend_copy"

    def descend(self, feats, theta, cache, eps, eta):
        return theta - eta[:, None] * self.loss_gradient(feats, theta, cache, eps)


class DescendOneEta(Quadratic):
    name = "broken_descend_eta"

    def descend(self, feats, theta, cache, eps, eta):
        theta.sub_(eta[0] * self.loss_gradient(feats, theta, cache, eps))   # eta[0] for all


class OutputsOverG(Quadratic):
    name = "broken_batching"

    def forward(self, feats, theta, split="train"):
        z, v = super().forward(feats, theta, split)
        return z / theta.shape[0], v                     # G where D was meant


class OutputsRoundedByBatch(Quadratic):
    """Outputs of a batch off by ``drift`` relative to the same rows alone."""
    name = "broken_batch_rounding"
    drift = 10 * BATCH_RTOL

    def forward(self, feats, theta, split="train"):
        z, v = super().forward(feats, theta, split)
        return (z * (1.0 + self.drift) if theta.shape[0] > 1 else z), v


class OutputsRoundedWithinBound(OutputsRoundedByBatch):
    name = "batch_rounding_within_bound"
    drift = 0.5 * BATCH_RTOL


class StackFirstSeed(ReLU):
    name = "broken_stack_seeds"

    def stack_seeds(self, features, rows):
        return features[0]           # every row gets seed 0's U_0perp x and |U_0perp|^2

    def take_rows(self, features, keep):
        return features


class NTKDiagonal(Quadratic):
    name = "broken_shapes"

    def ntk(self, feats, theta, cache):
        return torch.diagonal(super().ntk(feats, theta, cache), dim1=-2, dim2=-1)


class WeightNormTwiceV(Homogeneous):
    name = "broken_weight_norm"

    def weight_norm(self, feats, theta):
        return super().weight_norm(feats, theta) + theta[:, -1] ** 2   # counts v_n twice


class SetupGlobalRNG(Quadratic):
    name = "broken_setup_rng"

    def setup(self, seed, device, dtype):
        feats, theta0 = super().setup(seed, device, dtype)
        return feats, theta0 + 1e-3 * torch.randn(theta0.shape).to(theta0)   # not from seed


class SetupInTargetDtype(LinearBias):
    name = "broken_setup_dtype"

    def setup(self, seed, device, dtype):
        feats, _ = super().setup(seed, device, dtype)
        n, d = self.settings["width"], self.data.input_dim
        gen = torch.Generator().manual_seed(seed)
        theta0 = torch.cat([torch.randn(n * d + n, generator=gen, dtype=dtype),
                            torch.tensor([self.settings["bias_init"]], dtype=dtype)])
        return feats, theta0.to(device)


class TrivialInverted(ReLU):
    name = "broken_is_trivial"

    def is_trivial(self, feats, theta, cache, ntk, lambda0):
        return ~super().is_trivial(feats, theta, cache, ntk, lambda0)


class MemoryThetaOnly(ReLU):
    name = "broken_memory_low"

    def memory_per_point(self, feats, theta0):
        return theta0.numel() * theta0.element_size()


class MemoryInflated(ReLU):
    name = "broken_memory_high"

    def memory_per_point(self, feats, theta0):
        return 10 * super().memory_per_point(feats, theta0)


class FalselyHomogeneous(LinearBias):
    name = "broken_homogeneous"
    homogeneous = True                                   # the bias breaks eq. 11


def scaled_bounds(kind: str, factor: float):
    def bounds(self, feats, theta0, lambda0):
        return [dataclasses.replace(b, eta=factor * b.eta) if b.kind == kind else b
                for b in Homogeneous.bounds(self, feats, theta0, lambda0)]
    return bounds


class CatapultBoundTooHigh(Homogeneous):
    name = "broken_eq95"
    bounds = scaled_bounds("catapult", 3.0)


class DivergenceBoundTooLow(Homogeneous):
    name = "broken_eq102"
    bounds = scaled_bounds("divergence", 0.25)


class BoundKindTypo(Homogeneous):
    name = "broken_bound_kind"

    def bounds(self, feats, theta0, lambda0):
        return [dataclasses.replace(b, kind="catapul")
                for b in super().bounds(feats, theta0, lambda0)]


BROKEN = [
    (NTKFactor, "ntk_autograd", "ntk must equal the autograd NTK"),
    (NTKNeedsCache, "ntk_without_cache", r"ntk\(features, theta, cache=None\) must work"),
    (ProductsTransposed, "ntk_operator", "ntk_operator's products must equal H u"),
    (GradientTimesD, "gradient_autograd", "loss_gradient must equal the autograd gradient"),
    (DescendOutOfPlace, "descend", "descend updates theta in place"),
    (DescendOneEta, "descend", "eta per row"),
    (OutputsOverG, "batching", "a batch of G points must give what G one-point calls give"),
    (OutputsRoundedByBatch, "batching", r"\(forward\).*more than BATCH_RTOL"),
    (StackFirstSeed, "stack_seeds", "a row of a batch of stacked seeds must give what it "
                                    "gives alone on its own seed's features"),
    (NTKDiagonal, "shapes", r"ntk must have shape \(\d, 3, 3\)"),
    (WeightNormTwiceV, "weight_norm", "only by a constant"),
    (SetupGlobalRNG, "setup_deterministic", "bit-identical theta0"),
    (SetupInTargetDtype, "setup_draws_in_float64", "drawn in float64 on the CPU"),
    (TrivialInverted, "is_trivial", "must not be trivial"),
    (MemoryThetaOnly, "memory_per_point", "must cover the tensors one step keeps alive"),
    (MemoryInflated, "memory_per_point", "must not exceed 4x the measured peak"),
    (FalselyHomogeneous, "homogeneous", r"z\(l theta\) = l\^2 z\(theta\)"),
    (CatapultBoundTooHigh, "bounds_hold", r"eq\. 95 \(catapult"),
    (DivergenceBoundTooLow, "bounds_hold", r"eq\. 102 \(divergence.*must increase"),
    (BoundKindTypo, "bounds_declared", "kind must be 'catapult' or 'divergence'"),
]


class BrokenModels:
    @hookimpl
    def phasekit_register_models(self, register):
        for cls, _, _ in BROKEN:
            register(cls)
        register(OutputsRoundedWithinBound)


@pytest.fixture
def no_shrinking():
    """Report a broken model's first failure without minimising it (speed)."""
    previous = settings.get_current_profile_name()
    settings.register_profile("contract-no-shrinking", settings.get_profile(previous),
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    settings.load_profile("contract-no-shrinking")
    yield
    settings.load_profile(previous)


@pytest.fixture(scope="module")
def broken_manager():
    pm = PluginManager()
    pm.register(BrokenModels(), name="broken_models")
    return pm


def broken_config(cls) -> dict:
    model = {"name": cls.name, "width": 12}
    if issubclass(cls, Homogeneous) and not issubclass(cls, ReLU):
        model["a_minus"] = 0.6
    if cls is DivergenceBoundTooLow:          # eq. 102 is stated for d = 1
        return {"model": model, "dataset": random_data(3, 1)}
    if cls is StackFirstSeed:                 # D < d: input-span coordinates, per-seed offsets
        return {"model": model, "dataset": random_data(3, 5)}
    return {"model": model, "dataset": random_data(3, 2)}


@pytest.mark.parametrize("cls, check, rule", BROKEN, ids=[c.name for c, _, _ in BROKEN])
def test_broken_model_fails_the_right_check(broken_manager, no_shrinking, cls, check, rule):
    checks = dict(model_checks(broken_config(cls), manager=broken_manager, max_examples=4))
    with pytest.raises(AssertionError, match=rf"^\[{check}\] .*{rule}") as info:
        checks[check]()
    assert info.value.args[0].startswith(f"[{check}]")


def test_rows_off_by_less_than_the_bound_pass(broken_manager, no_shrinking):
    """The kit holds a model to BATCH_RTOL, not to the bit: a batch's outputs off by half
    the bound pass ``batching`` (twenty times that fails, above)."""
    dict(model_checks(broken_config(OutputsRoundedWithinBound), manager=broken_manager,
                      max_examples=4))["batching"]()


def test_check_model_lists_exactly_the_checks_that_fail(broken_manager, no_shrinking):
    """A model whose ntk crashes with cache=None (an external plugin crashed at
    initialisation this way) breaks that rule and no other."""
    with pytest.raises(AssertionError) as info:
        check_model(broken_config(NTKNeedsCache), manager=broken_manager, max_examples=4)
    message = str(info.value)
    failed = re.findall(r"^\[(\w+)\]", message, flags=re.M)
    assert message.startswith("1 phasekit model contract check(s) failed")
    assert failed == ["ntk_without_cache"]
    assert "KeyError" not in message and "TypeError" in message     # None["h"]
