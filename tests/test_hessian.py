"""The loss Hessian's top eigenvalue (phasekit.engine.hessian): Lanczos on Hessian-vector
products against the NTK's lambda_0 (Gauss-Newton part) and against dense autograd
Hessians; sweep.normalize = "hessian", sweep.hessian and the hessian_sharpness observable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine
from phasekit.engine.hessian import (
    DENSE_FALLBACK_P,
    gauss_newton_operator,
    hessian_max,
    lanczos_top,
    start_vectors,
    top_eigenvalue,
)
from phasekit.errors import ConfigError, HessianError
from phasekit.io.parts import load_result, save_result
from phasekit.model import autograd_loss_hvp
from tests.helpers import sweep

FAMILIES = {
    "quadratic": {"name": "quadratic", "width": 12, "eigen_low": 1.0, "eigen_high": 2.0},
    "relu": {"name": "relu", "width": 10},
    "deep_relu": {"name": "deep_relu", "width": 8, "hidden_layers": 2},
    "linear_bias": {"name": "linear_bias", "width": 9, "bias_init": 0.3},
}


def engine(manager, model, dataset=None, **sweep_kw):
    raw = {"model": model, "dataset": dataset or {"name": "random", "num_train": 5,
                                                  "input_dim": 3},
           "sweep": sweep_kw}
    config, data = resolve_config(raw, manager)
    return Engine(config, data, manager)


def dense_top(eng, prepared) -> float:
    """lambda_max of the full autograd Hessian (torch.func.hessian) of the loss."""
    y = eng.data.y_train.to(prepared.theta0)

    def loss(th):
        z = eng.model.forward(prepared.features, th[None])[0][0]
        return 0.5 * ((z - y) ** 2).mean()

    H = torch.func.hessian(loss)(prepared.theta0)
    return float(torch.linalg.eigvalsh(H)[-1])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gauss_newton_part_has_the_ntk_top_eigenvalue(manager, family):
    eng = engine(manager, FAMILIES[family])
    for seed in (0, 1):
        p = eng.prepare(seed)
        theta = p.theta0[None]
        gn = top_eigenvalue(gauss_newton_operator(eng.model, p.features, theta), theta, "GN")
        assert float(gn[0]) == pytest.approx(p.lambda0, rel=1e-10, abs=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lanczos_agrees_with_the_dense_autograd_hessian(manager, family):
    eng = engine(manager, FAMILIES[family], hessian=True)
    p = eng.prepare(3)
    assert p.lambda0_hessian == pytest.approx(dense_top(eng, p), rel=1e-9, abs=0)
    # the functional part matters here: the Hessian's top eigenvalue is not the NTK's
    assert abs(p.lambda0_hessian - p.lambda0) > 1e-6 * p.lambda0


@given(family=st.sampled_from(sorted(FAMILIES)), width=st.integers(2, 12),
       seed=st.integers(0, 50), num_train=st.integers(1, 6), data_seed=st.integers(0, 50))
def test_random_small_models_agree_with_dense_hessians(manager, family, width, seed,
                                                       num_train, data_seed):
    model = {**FAMILIES[family], "width": width + width % 2}       # quadratic: even widths
    eng = engine(manager, model, {"name": "random", "num_train": num_train, "input_dim": 2,
                                  "seed": data_seed}, hessian=True)
    try:
        p = eng.prepare(seed)
    except ConfigError:                                # lambda_0 = 0: refused, as it should
        return
    dense = dense_top(eng, p)
    assert p.lambda0_hessian == pytest.approx(dense, rel=1e-8, abs=1e-12 * p.lambda0)


def test_rows_are_independent_and_stacked_seeds_work(manager):
    """Several seeds stacked in one batch (stack_seeds): each row gets its own seed's
    lambda^H, and a non-finite row gives NaN without touching the others."""
    eng = engine(manager, FAMILIES["deep_relu"], hessian=True)
    preps = [eng.prepare(s) for s in (0, 1, 2)]
    rows = torch.tensor([0, 1, 1, 2])
    feats = eng.model.stack_seeds([p.features for p in preps], rows)
    theta = torch.stack([p.theta0 for p in preps])[rows]
    theta[2] = math.inf
    got = hessian_max(eng.model, feats, theta)
    want = [preps[0].lambda0_hessian, preps[1].lambda0_hessian, math.nan,
            preps[2].lambda0_hessian]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def diagonal(values: torch.Tensor):
    """A batch of diagonal operators, one row of ``values`` each."""
    return lambda v, rows: values[rows] * v


def test_indefinite_operator_gives_the_largest_algebraic_eigenvalue():
    P = 40
    values = torch.linspace(-1.0, 0.3, P, dtype=torch.float64).expand(2, P).clone()
    values[1] = -values[1]                                  # top 1.0, bottom -0.3
    res = lanczos_top(diagonal(values), start_vectors(2, P, torch.float64, "cpu"))
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.value.numpy(), [0.3, 1.0], rtol=1e-10)


def test_unconverged_rows_fall_back_to_the_dense_operator_or_fail_naming_it():
    P = 30
    values = torch.linspace(0.0, 1.0, P, dtype=torch.float64)[None]
    product = lambda v: values * v                                          # noqa: E731
    theta = torch.zeros(1, P, dtype=torch.float64)
    few = lanczos_top(diagonal(values), start_vectors(1, P, torch.float64, "cpu"),
                      max_iter=3)
    assert not bool(few.converged.any()) and float(few.value[0]) < 1.0
    assert float(top_eigenvalue(product, theta, "toy", max_iter=3)[0]) == pytest.approx(1.0)
    P = DENSE_FALLBACK_P + 1
    values = torch.linspace(0.0, 1.0, P, dtype=torch.float64)[None]
    with pytest.raises(HessianError, match="toy operator: Lanczos did not converge in 3 "):
        top_eigenvalue(lambda v: values * v, torch.zeros(1, P, dtype=torch.float64),
                       "toy operator", max_iter=3)


def test_a_closed_form_loss_hvp_hook_is_used(manager):
    eng = engine(manager, FAMILIES["relu"], hessian=True)
    plain = eng.prepare(0).lambda0_hessian

    def doubled(features, theta):
        product = autograd_loss_hvp(eng.model, features, theta)
        return lambda v: 2 * product(v)

    eng.model.loss_hvp = doubled
    assert eng.prepare(0).lambda0_hessian == pytest.approx(2 * plain, rel=1e-10)


#: one training point: eq. 92's bound applies
LINEAR_BIAS = {"model": {"name": "linear_bias", "width": 20, "bias_init": 0.5},
               "dataset": {"name": "toy"}}


def test_normalize_hessian_measures_c_in_lambda0_hessian(manager):
    grid = dict(eta_lambda0=[0.5, 1.5, 3.0], seeds=3, max_steps=20)
    ds = sweep(LINEAR_BIAS, manager, normalize="hessian",
               observables=["hessian_sharpness"], **grid)
    ntk = sweep(LINEAR_BIAS, manager, hessian=True, **grid)
    c = ds["eta_lambda0"]
    np.testing.assert_allclose(ds["eta"] * ds["lambda0_hessian"] / c, 1.0, rtol=1e-15)
    # the same seeds: the same lambda_0 and lambda^H_0 whichever normalises c
    np.testing.assert_array_equal(ds["lambda0"], ntk["lambda0"])
    np.testing.assert_array_equal(ds["lambda0_hessian"], ntk["lambda0_hessian"])
    assert (ds["lambda0_hessian"] != ds["lambda0"]).all()
    # hessian_sharpness = eta lambda^H_t starts at c; the sharpness stays eta lambda_max(NTK)
    start = ds.isel(step=0)
    np.testing.assert_allclose(start["hessian_sharpness"] / c, 1.0, rtol=1e-10)
    np.testing.assert_allclose(start["sharpness"] * ds["lambda0_hessian"] / (c * ds["lambda0"]),
                               1.0, rtol=1e-12)
    # bounds in c units: eta_bound * lambda^H_0 here, eta_bound * lambda_0 in the ntk sweep
    bounds = [v for v in ds.data_vars if str(v).startswith("bound_")]
    assert bounds
    for b in bounds:
        np.testing.assert_allclose(ds[b] / ds["lambda0_hessian"], ntk[b] / ntk["lambda0"],
                                   rtol=1e-12)
    assert ds["eta_lambda0"].attrs["normalized_by"] == "lambda0_hessian"
    assert ntk["eta_lambda0"].attrs["normalized_by"] == "lambda0"
    assert ds["lambda0_hessian"].attrs["units"] == "1"


def test_lambda0_hessian_and_hessian_sharpness_only_on_request(manager):
    ds = sweep(LINEAR_BIAS, manager, eta_lambda0=[1.0], max_steps=3)
    assert "lambda0_hessian" not in ds and "hessian_sharpness" not in ds   # "all" omits it
    ds = sweep(LINEAR_BIAS, manager, eta_lambda0=[1.0], max_steps=3, hessian=True)
    assert "lambda0_hessian" in ds and "hessian_sharpness" not in ds
    np.testing.assert_allclose(ds["eta"] * ds["lambda0"], 1.0, rtol=1e-15)


@pytest.mark.parametrize("key, value, message", [
    ("normalize", "gauss_newton", 'sweep.normalize must be one of "ntk", "hessian"; '
                                  'got "gauss_newton"'),
    ("hessian", "yes", 'sweep.hessian must be true or false, got "yes"'),
])
def test_bad_normalisation_options_get_one_line(manager, key, value, message):
    raw = {**LINEAR_BIAS, "sweep": {key: value}}
    with pytest.raises(ConfigError) as info:
        resolve_config(raw, manager)
    assert str(info.value) == message


def test_a_non_positive_lambda0_hessian_is_refused_when_it_normalises(manager, monkeypatch):
    eng = engine(manager, FAMILIES["relu"], normalize="hessian")
    monkeypatch.setattr(type(eng.model), "loss_hvp", lambda self, f, th: (lambda v: -v))
    with pytest.raises(ConfigError, match="loss Hessian at initialisation is -1 for seed 0: "):
        eng.prepare(0)


def test_lambda0_hessian_survives_the_parts_store(manager, tmp_path):
    """A resumed chunk (OUT.parts/) keeps its lambda^H_0, which sets its eta."""
    eng = engine(manager, FAMILIES["relu"], normalize="hessian", eta_lambda0=[1.0, 2.0],
                 max_steps=2)
    from phasekit.engine.chunks import make_chunks

    result = eng.run_chunk(make_chunks(eng.sweep)[0])
    save_result(result, tmp_path / "chunk.npz")
    back = load_result(tmp_path / "chunk.npz")
    assert back.lambda0_hessian == result.lambda0_hessian
    np.testing.assert_allclose(back.eta * back.lambda0_hessian, [1.0, 2.0], rtol=1e-15)
