"""The engine's operator route: a model offering NTK-vector products
(``Model.ntk_operator``) gets lambda_0 and the sharpness by Lanczos on them, and its
NTK matrix is formed only when something reads ``Snapshot.ntk``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phasekit import hookimpl
from phasekit.config.registry import PluginManager
from phasekit.errors import PluginError
from phasekit.observables import Observable
from phasekit_plugins.homogeneous import Homogeneous

from .helpers import sweep


def vjp_jvp_products(model, feats, theta):
    """``u -> J (J^T u) / D`` per row by reverse- then forward-mode autograd of the
    model's forward pass (the NTK of eq. 4, never formed)."""
    th = theta.detach()

    def outputs(t):
        return model.forward(feats, t)[0]

    def product(u):
        with torch.enable_grad():
            _, pullback = torch.func.vjp(outputs, th)
            (tangent,) = pullback(u)
            return torch.func.jvp(outputs, (th,), (tangent,))[1] / u.shape[-1]

    return product


class WithProducts(Homogeneous):
    """The homogeneous net offering NTK-vector products; its matrix refuses to be formed
    unless ``allow_matrix`` is set, so a run proves the engine did without it."""

    name = "homogeneous_products"
    allow_matrix = False

    def ntk_operator(self, feats, theta, cache):
        return vjp_jvp_products(self, feats, theta)

    def ntk(self, feats, theta, cache):
        if not self.allow_matrix:
            raise AssertionError("the engine formed the NTK matrix")
        return super().ntk(feats, theta, cache)


class BadProducts(Homogeneous):
    name = "homogeneous_bad_products"

    def ntk_operator(self, feats, theta, cache):
        return lambda u: u[:, :1]


class Models:
    @hookimpl
    def phasekit_register_models(self, register):
        register(WithProducts)
        register(BadProducts)


class NTKTrace:
    """An observable reading the matrix: the operator route forms it for this one."""

    @hookimpl
    def phasekit_register_observables(self, register):
        register(Observable("ntk_trace", "trace of the NTK",
                            lambda snap: torch.diagonal(snap.ntk, dim1=-2, dim2=-1).sum(-1),
                            equation="eq. 4", opt_in=True))


@pytest.fixture(scope="module")
def products_manager():
    pm = PluginManager()
    pm.register(Models(), name="ntk_operator_models")
    pm.register(NTKTrace(), name="ntk_trace_observable")
    return pm


def config(name: str) -> dict:
    return {"model": {"name": name, "width": 64, "a_minus": 0.4},
            "dataset": {"name": "random", "num_train": 6, "num_test": 2, "input_dim": 3}}


RATES = [0.5, 1.5, 2.5, 3.5, 5.0]


def test_products_give_the_matrix_routes_lambda0_and_sharpness(products_manager):
    kw = {"eta_lambda0": RATES, "seeds": [0, 1], "max_steps": 300}
    matrix = sweep(config("homogeneous"), products_manager, **kw)
    products = sweep(config("homogeneous_products"), products_manager, **kw)
    np.testing.assert_allclose(products.lambda0.values, matrix.lambda0.values, rtol=1e-10)
    assert (products.status.values == matrix.status.values).all()
    np.testing.assert_array_equal(products.steps.values, matrix.steps.values)
    np.testing.assert_allclose(products.loss.values, matrix.loss.values, rtol=1e-9)
    finite = np.isfinite(matrix.sharpness.values)
    assert finite.sum() > 100
    np.testing.assert_array_equal(np.isfinite(products.sharpness.values), finite)
    np.testing.assert_allclose(products.sharpness.values[finite],
                               matrix.sharpness.values[finite], rtol=1e-9)


def test_an_observable_reading_the_ntk_forms_it_once_a_step(products_manager, monkeypatch):
    monkeypatch.setattr(WithProducts, "allow_matrix", True)
    formed = []
    real = Homogeneous.ntk
    monkeypatch.setattr(Homogeneous, "ntk", lambda self, *a: formed.append(1) or real(self, *a))
    ds = sweep(config("homogeneous_products"), products_manager, eta_lambda0=[1.0], seeds=[0],
               max_steps=5, observables=["ntk_trace"], record_dense=6)
    assert len(formed) == 6                                   # steps 0..5, once each
    lam = ds.sharpness.isel(seed=0, eta_lambda0=0).values / float(ds.eta.squeeze())
    assert np.all(ds.ntk_trace.squeeze().values >= lam * (1 - 1e-12))


def test_products_of_the_wrong_shape_name_the_model(products_manager):
    with pytest.raises(PluginError, match=r"homogeneous_bad_products.*ntk_operator must return "
                                          r"the NTK-vector products H u of shape \(1, 6\)"):
        sweep(config("homogeneous_bad_products"), products_manager, eta_lambda0=[1.0],
              seeds=[0], max_steps=3)
