"""Network models (docs/theory.md §2.4-§2.5): closed forms against autograd, the theorems of
Appendix B (Hypothesis), bounds, the trivial phase and the network observables.

Monotonicity is exact in exact arithmetic; in float64 a change of theta^2 below a
few units in its last place cannot be resolved, so (as in test_theorems.py) a step
whose predicted change is below that level only has to stay within rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from phasekit.config.resolve import merge, resolve_config
from phasekit.engine.engine import Engine
from phasekit.engine.spectrum import lambda_max
from phasekit.errors import ConfigError
from phasekit.io.netcdf import stored_config
from phasekit.model import autograd_jacobian, autograd_loss_gradient, autograd_ntk
from phasekit.observables import Snapshot
from phasekit_plugins import network_observables as net_obs
from phasekit_plugins import observables as common_obs
from phasekit_plugins.feedforward import sigma
from phasekit_plugins.network_observables import activation_sparsity, reduced_weight_norm

from . import helpers
from .helpers import ULP, check_monotone, eq12_series, sweep

CPU = torch.device("cpu")

seeds = st.integers(0, 2**16)
a_pluses = st.floats(0.3, 2.0)
ratios = st.floats(0.05, 1.0)           # a_- / a_+
points = st.lists(st.floats(-3.0, 3.0).filter(lambda v: abs(v) > 0.1), min_size=1,
                  max_size=3)


def build(manager, model: dict, dataset: dict):
    model = {k: v for k, v in model.items() if v is not None}     # None: the default
    config, data = resolve_config({"model": model, "dataset": dataset, "sweep": {}}, manager)
    return Engine(config, data, manager).model, data


def setup(manager, model, dataset, seed):
    m, data = build(manager, model, dataset)
    feats, theta0 = m.setup(seed, CPU, torch.float64)
    lam0 = float(lambda_max(m.ntk(feats, theta0[None], None))[0])
    return m, data, feats, theta0, lam0


def bounds_of(m, feats, theta0, lam0) -> dict[str, float]:
    return {b.name: b.eta * lam0 for b in m.bounds(feats, theta0, lam0)}


def dense(raw, c, seed, max_steps=300):
    return helpers.dense(raw, c, seed, max_steps)


# -- closed forms against autograd ----------------------------------------------------

spans = st.sampled_from([None, True, False])     # input_span: default, span or full coords
#: the initial scale and the parameterisation (docs/theory.md §2.6); None: the default
scales = st.fixed_dictionaries({
    "weight_variance": st.none() | st.floats(0.1, 4.0),
    "readout_variance": st.none() | st.floats(0.1, 4.0),
    "parameterization": st.sampled_from([None, "ntk", "standard"])})

MODELS = st.one_of(
    st.builds(lambda w, ap, r, sp, sc: {"name": "homogeneous", "width": w, "a_plus": ap,
                                        "a_minus": ap * r, "input_span": sp, **sc},
              st.integers(1, 12), a_pluses, st.floats(0.0, 1.0), spans, scales),
    st.builds(lambda w, sp, sc: {"name": "relu", "width": w, "input_span": sp, **sc},
              st.integers(1, 12), spans, scales),
    st.builds(lambda w, k, sp, sc: {"name": "deep_relu", "width": w, "hidden_layers": k,
                                    "input_span": sp, **sc},
              st.integers(1, 8), st.integers(0, 3), spans, scales),
    st.builds(lambda w, b, sc: {"name": "linear_bias", "width": w, "bias_init": b, **sc},
              st.integers(1, 12), st.floats(-1.0, 1.0), scales),
)


@given(model=MODELS, D=st.integers(1, 6), d=st.integers(1, 4), seed=seeds)
def test_ntk_and_gradient_match_autograd(manager, model, D, d, seed):
    m, data = build(manager, model, {"name": "random", "num_train": D, "input_dim": d,
                                     "num_test": 3, "seed": seed})
    feats, theta0 = m.setup(seed, CPU, torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    theta = torch.cat([theta0[None], torch.randn(2, theta0.numel(), generator=gen,
                                                 dtype=torch.float64)])
    z, cache = m.forward(feats, theta)
    H = m.ntk(feats, theta, cache)
    J = autograd_jacobian(m, feats, theta)
    assert J.shape == (3, D, theta0.numel())
    scale = float(H.abs().max()) + 1e-300
    torch.testing.assert_close(H, J @ J.transpose(1, 2) / D, rtol=1e-11, atol=1e-13 * scale)
    torch.testing.assert_close(H, autograd_ntk(m, feats, theta), rtol=1e-11,
                               atol=1e-13 * scale)
    torch.testing.assert_close(H, m.ntk(feats, theta, None), rtol=0, atol=0)
    eps = z - data.y_train
    grad = m.loss_gradient(feats, theta, cache, eps)
    ref = autograd_loss_gradient(m, feats, theta, eps)
    torch.testing.assert_close(grad, ref, rtol=1e-11, atol=1e-13 * float(ref.abs().max()))
    # the test split: the model's own pass equals the differentiable forward autograd uses
    zt, _ = m.forward(feats, theta, "test")
    assert zt.shape == (3, 3)
    torch.testing.assert_close(zt, m.forward(feats, theta.clone().requires_grad_(), "test")[0],
                               rtol=1e-12, atol=1e-14 * float(zt.abs().max()))


def test_two_layer_ntk_is_eq54_written_out(manager):
    """H_ab = (1/(nD)) [sigma(Ux_a).sigma(Ux_b) + (x_a.x_b)(v o sigma'_a).(v o sigma'_b)]."""
    m, data, feats, theta0, _ = setup(manager, {"name": "homogeneous", "width": 5,
                                                "a_minus": 0.3},
                                      {"name": "random", "num_train": 3, "input_dim": 2}, 4)
    n, x = 5, data.x_train
    U, v = theta0[:10].reshape(5, 2), theta0[10:]
    s = x @ U.T
    act = torch.where(s >= 0, s, 0.3 * s)
    der = torch.where(s >= 0, 1.0, 0.3)
    expect = (act @ act.T + (x @ x.T) * ((v * der) @ (v * der).T)) / (n * 3)
    torch.testing.assert_close(m.ntk(feats, theta0[None], None)[0], expect)
    z, _ = m.forward(feats, theta0[None])
    torch.testing.assert_close(z[0], act @ v / math.sqrt(n))


def test_sigma_prime_at_zero_is_the_mean_slope(manager):
    """sigma'(0) = (a_+ + a_-)/2 (eq. 9), also what autograd sees at s = 0."""
    s = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(sigma(s, 1.0, 0.25).sum(), s)
    assert float(g) == 0.625


def test_deep_relu_with_k0_is_the_two_layer_relu_net(manager):
    ds = {"name": "random", "num_train": 4, "input_dim": 3}
    a, _, fa, ta, la = setup(manager, {"name": "relu", "width": 9}, ds, 3)
    b, _, fb, tb, lb = setup(manager, {"name": "deep_relu", "width": 9, "hidden_layers": 0},
                             ds, 3)
    torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    torch.testing.assert_close(a.ntk(fa, ta[None], None), b.ntk(fb, tb[None], None))
    assert la == lb and a.homogeneous and b.homogeneous


def test_forward_is_eq193_in_the_papers_order(manager):
    """z = n^(-(k+1)/2) v.relu(W_1 relu(W_2 relu(U x))) with theta = (U, W_2, W_1, v)."""
    n, d, k = 4, 3, 2
    m, data, feats, theta0, _ = setup(manager, {"name": "deep_relu", "width": n,
                                                "hidden_layers": k},
                                      {"name": "random", "num_train": 5, "input_dim": d}, 7)
    assert not m.homogeneous
    U = theta0[:n * d].reshape(n, d)
    W2 = theta0[n * d:n * d + n * n].reshape(n, n)
    W1 = theta0[n * d + n * n:n * d + 2 * n * n].reshape(n, n)
    v = theta0[-n:]
    relu = torch.relu
    expect = n ** (-(k + 1) / 2) * relu(W1 @ relu(W2 @ relu(U @ data.x_train.T))).T @ v
    z, _ = m.forward(feats, theta0[None])
    torch.testing.assert_close(z[0], expect)


# -- initial scale and parameterisation (docs/theory.md §2.6) -------------------------------

def test_initial_variances_scale_the_draws(manager):
    """sigma_w scales U and every W_i, sigma_v scales v, in both parameterisations; standard
    parameterisation divides the draws of W_i and v (not U) by sqrt(n)."""
    n, d, k = 5, 3, 2
    ds = {"name": "random", "num_train": 4, "input_dim": d}
    base = {"name": "deep_relu", "width": n, "hidden_layers": k, "input_span": False}
    _, _, _, t0, _ = setup(manager, base, ds, 3)
    first, hidden = n * d, n * d + k * n * n
    for param, shrink in (("ntk", 1.0), ("standard", 1 / math.sqrt(n))):
        _, _, _, t, _ = setup(manager, {**base, "weight_variance": 2.0, "readout_variance": 0.5,
                                        "parameterization": param}, ds, 3)
        torch.testing.assert_close(t[:first], math.sqrt(2.0) * t0[:first], rtol=1e-15, atol=0)
        torch.testing.assert_close(t[first:hidden], math.sqrt(2.0) * shrink * t0[first:hidden],
                                   rtol=1e-15, atol=0)
        torch.testing.assert_close(t[hidden:], math.sqrt(0.5) * shrink * t0[hidden:],
                                   rtol=1e-15, atol=0)


def test_standard_parameterisation_is_the_same_function_with_another_gradient(manager):
    """z = v.relu(W_1 relu(W_2 relu(U x))) without any 1/sqrt(n): the same outputs as eq. 193
    from the same draws, and one gradient step equals an NTK-parameterisation step with the
    learning rate multiplied by n on W_i and v (by 1 on U)."""
    n, d, k = 6, 3, 2
    ds = {"name": "random", "num_train": 5, "input_dim": d}
    common = {"name": "deep_relu", "width": n, "hidden_layers": k, "input_span": False,
              "weight_variance": 2.0}
    ntk, data, fn, tn, ln = setup(manager, {**common, "parameterization": "ntk"}, ds, 1)
    std, _, fs, ts, ls = setup(manager, {**common, "parameterization": "standard"}, ds, 1)
    U = ts[:n * d].reshape(n, d)
    W2 = ts[n * d:n * d + n * n].reshape(n, n)
    W1 = ts[n * d + n * n:n * d + 2 * n * n].reshape(n, n)
    relu = torch.relu
    expect = relu(W1 @ relu(W2 @ relu(U @ data.x_train.T))).T @ ts[-n:]
    zs, cs = std.forward(fs, ts[None])
    zn, cn = ntk.forward(fn, tn[None])
    torch.testing.assert_close(zs[0], expect)
    torch.testing.assert_close(zs, zn, rtol=1e-13, atol=1e-15)
    assert ls != pytest.approx(ln, rel=1e-3)                  # another NTK
    to_ntk = torch.ones_like(ts)
    to_ntk[n * d:] = math.sqrt(n)                             # theta_ntk = to_ntk * theta_std
    torch.testing.assert_close(to_ntk * ts, tn, rtol=1e-15, atol=0)
    eta = 0.3
    eps = zs - data.y_train
    step_std = ts - eta * std.loss_gradient(fs, ts[None], cs, eps)[0]
    rates = eta * to_ntk ** 2                                 # eta on U, n eta on W_i and v
    step_ntk = tn - rates * ntk.loss_gradient(fn, tn[None], cn, eps)[0]
    torch.testing.assert_close(to_ntk * step_std, step_ntk, rtol=1e-12, atol=1e-14)


def test_bounds_in_standard_parameterisation_replace_n_by_1(manager):
    """eq. 95/102/180/92 with the squared layer divisor r^2 = 1 in place of n (docs/theory.md
    §2.6); eq. 124 stays c = 4."""
    hom = {"name": "homogeneous", "width": 16, "a_plus": 1.0, "a_minus": 0.5,
           "parameterization": "standard", "weight_variance": 2.0, "readout_variance": 3.0}
    m, _, f, t0, lam0 = setup(manager, hom, {"name": "toy", "x": [1.5]}, 0)
    th2 = float((t0 ** 2).sum())
    b = bounds_of(m, f, t0, lam0)
    assert b == {"eq95": pytest.approx(4 / (2.25 * th2) * lam0),
                 "eq102": pytest.approx(4 / (0.25 * 2.25 * th2) * lam0)}
    m, data, f, t0, lam0 = setup(manager, hom, {"name": "random", "num_train": 8}, 0)
    lmax = float(torch.linalg.eigvalsh(data.x_train @ data.x_train.T)[-1])
    assert bounds_of(m, f, t0, lam0) == {
        "eq180": pytest.approx(4 * 8 / (lmax * float((t0 ** 2).sum())) * lam0)}
    m, _, f, t0, lam0 = setup(manager, {**hom, "name": "relu", "a_plus": None,
                                        "a_minus": None}, {"name": "point"}, 0)
    assert bounds_of(m, f, t0, lam0) == {"eq124": pytest.approx(4.0, rel=1e-14)}
    lb = {"name": "linear_bias", "width": 7, "bias_init": 0.5, "parameterization": "standard"}
    m, _, f, t0, lam0 = setup(manager, lb, {"name": "toy"}, 2)
    u, v, b0 = t0[:7], t0[7:14], t0[14]
    assert lam0 == pytest.approx(float(u @ u + v @ v + 1))              # eq. 87, r = 1
    assert bounds_of(m, f, t0, lam0)["eq92"] / lam0 == pytest.approx(
        4 / (2 + float(u @ u + v @ v + 2 * b0 * b0)))


# -- layers: sparsity and NTK on the right layer ------------------------------------------

def hand_built_deep_net(manager):
    """k = 2, width 4, inputs with positive entries.  Every weight row has one sign, so
    unit i of a layer is active iff its row is positive: layer 1 (U) rows +,+,+,- ->
    sparsity 1/4; layer 2 (W_2) rows +,-,-,- -> 3/4; layer 3 (W_1) rows +,+,-,- -> 1/2."""
    m, data, feats, theta0, _ = setup(manager, {"name": "deep_relu", "width": 4,
                                                "hidden_layers": 2},
                                      {"name": "random", "num_train": 6, "input_dim": 3}, 0)
    feats.x["train"] = feats.x["train"].abs() + 0.1
    feats.gram = feats.x["train"] @ feats.x["train"].T
    gen = torch.Generator().manual_seed(5)

    def rows(signs, cols):
        mag = 0.5 + torch.rand(len(signs), cols, generator=gen, dtype=torch.float64)
        return torch.tensor(signs, dtype=torch.float64)[:, None] * mag

    U = rows([1, 1, 1, -1], 3)
    M1 = rows([1, -1, -1, -1], 4)    # W_2 of eq. 193, second hidden layer
    M2 = rows([1, 1, -1, -1], 4)     # W_1 of eq. 193, third hidden layer
    v = torch.tensor([0.7, -1.3, 0.4, 2.1], dtype=torch.float64)
    theta = torch.cat([U.flatten(), M1.flatten(), M2.flatten(), v])[None]
    return m, data, feats, theta


def test_sparsity_is_per_layer_in_input_order(manager):
    m, data, feats, theta = hand_built_deep_net(manager)
    z, cache = m.forward(feats, theta)
    snap = Snapshot(m, data, feats, theta, theta, z, z, z[:, 0], None, None, z[:, 0], 0, cache)
    torch.testing.assert_close(activation_sparsity(snap),
                               torch.tensor([[0.25, 0.75, 0.5]], dtype=torch.float64))
    # the NTK of these weights, where every layer differs, matches autograd
    torch.testing.assert_close(m.ntk(feats, theta, cache), autograd_ntk(m, feats, theta),
                               rtol=1e-12, atol=1e-14)


def test_sparsity_in_a_sweep_has_a_layer_dimension(manager):
    raw = {"model": {"name": "deep_relu", "width": 16, "hidden_layers": 2},
           "dataset": {"name": "random", "num_train": 8, "input_dim": 3}, "sweep": {}}
    ds = sweep(raw, eta_lambda0=[0.5], seeds=[0], max_steps=3)
    assert ds["sparsity"].dims == ("seed", "eta_lambda0", "step", "layer")
    assert list(ds["layer"].values) == [1, 2, 3]
    assert ds["final_sparsity"].shape == (1, 1, 3)
    assert np.all((ds["sparsity"].isel(step=0) >= 0) & (ds["sparsity"].isel(step=0) <= 1))
    assert "reduced_weight_norm" not in ds and "test_accuracy" not in ds


# -- the theorems of Appendix B -------------------------------------------------------------

def one_point(model, x, y=0.0):
    model = {k: v for k, v in model.items() if v is not None}     # None: the default
    return {"model": model, "dataset": {"name": "toy", "x": x, "y": y}, "sweep": {}}


homogeneous_models = st.builds(
    lambda w, ap, r, sc: {"name": "homogeneous", "width": w, "a_plus": ap, "a_minus": ap * r,
                          **sc},
    st.integers(2, 40), a_pluses, ratios, scales)
two_layer_models = homogeneous_models | st.builds(
    lambda w, sc: {"name": "relu", "width": w, **sc}, st.integers(6, 40), scales)


@given(model=two_layer_models, x=points, seed=seeds, c=st.floats(0.1, 6.0))
def test_eq12_identity_per_step(manager, model, x, seed, c):
    """theta^2_(t+1) - theta^2_t = eta z_t^2 (eta H_t - 4) (eq. 12, 96), one point, y = 0."""
    m, _, feats, theta, lam0 = setup(manager, model, {"name": "toy", "x": x, "y": 0.0}, seed)
    assume(lam0 > 0)
    eta = c / lam0
    theta = theta[None]
    for _ in range(40):
        z, cache = m.forward(feats, theta)
        if not torch.isfinite(z).all() or float(z.abs().max()) > 1e6:
            break
        H = m.ntk(feats, theta, cache)[0, 0, 0]
        new = theta - eta * m.loss_gradient(feats, theta, cache, z)
        lhs = float(((new - theta) * (new + theta)).sum())
        rhs = float(eta * z[0, 0] ** 2 * (eta * H - 4))
        floor = ULP * float((theta * theta).sum())
        assert abs(lhs - rhs) <= 1e-9 * abs(rhs) + floor
        theta = new


@given(model=homogeneous_models, x=points, seed=seeds, frac=st.floats(0.05, 0.99))
def test_theta2_decreases_below_eq95(manager, model, x, seed, frac):
    raw = one_point(model, x)
    m, _, feats, theta0, lam0 = setup(manager, model, raw["dataset"], seed)
    c = frac * bounds_of(m, feats, theta0, lam0)["eq95"]
    d = dense(raw, c, seed)
    assert d.status.item() != "diverged"
    n = int(d.steps)
    w, loss, sharp = (d[v].values[: n + 1] for v in ("weight_norm", "loss", "sharpness"))
    predicted = float(d.eta) * 2 * loss[:-1] * (sharp[:-1] - 4)
    check_monotone(w, predicted, w[:-1], sign=-1)


@given(model=homogeneous_models, x=st.floats(0.2, 3.0), seed=seeds,
       frac=st.floats(1.01, 1.6))
def test_theta2_increases_above_eq102(manager, model, x, seed, frac):
    raw = one_point(model, [x])
    m, _, feats, theta0, lam0 = setup(manager, model, raw["dataset"], seed)
    d = dense(raw, frac * bounds_of(m, feats, theta0, lam0)["eq102"], seed)
    w, predicted = eq12_series(d)
    check_monotone(w, predicted, w[:-1], sign=+1)
    assert d.status.item() in ("diverged", "max_steps")


@given(width=st.integers(6, 40), x=points, seed=seeds, c=st.floats(0.1, 3.99), scale=scales)
def test_reduced_weight_norm_decreases_below_c4(manager, width, x, seed, c, scale):
    """ReLU, one point, y = 0: theta_+^2 obeys eq. 122 and decreases while c < 4 (eq. 124),
    whatever the initial variances and in both parameterisations (docs/theory.md §2.6)."""
    model = {"name": "relu", "width": width, **scale}
    raw = one_point(model, x)
    m, _, feats, theta0, lam0 = setup(manager, model, raw["dataset"], seed)
    assume(lam0 > 0)
    assert bounds_of(m, feats, theta0, lam0)["eq124"] == pytest.approx(4.0, rel=1e-14)
    d = dense(raw, c, seed)
    assert d.status.item() != "diverged"
    n = int(d.steps)
    q, loss, sharp = (d[v].values[: n + 1] for v in ("reduced_weight_norm", "loss",
                                                        "sharpness"))
    w = d["weight_norm"].values[: n + 1]
    # units inactive at init never move: theta^2 - theta_+^2 is constant
    np.testing.assert_allclose(w - q, w[0] - q[0], rtol=0, atol=4 * ULP * w[0])
    predicted = float(d.eta) * 2 * loss[:-1] * (sharp[:-1] - 4)
    check_monotone(q, predicted, w[:-1], sign=-1)


# -- bounds ---------------------------------------------------------------------------------

def test_bounds_follow_the_papers_formulas(manager):
    n = 64
    hom = {"name": "homogeneous", "width": n, "a_plus": 1.0, "a_minus": 0.5}
    # toy (1, 0): eq. 95 and eq. 102 exactly as printed
    m, _, f, t0, lam0 = setup(manager, hom, {"name": "toy"}, 0)
    th2 = float((t0 ** 2).sum())
    b = bounds_of(m, f, t0, lam0)
    assert b["eq95"] == pytest.approx(4 * n / th2 * lam0)
    assert b["eq102"] == pytest.approx(4 * n / (0.25 * th2) * lam0)
    # one point in d = 2: |x|^2 enters, eq. 102 does not apply
    # (in span coordinates by default, D = 1 < d: the same bound as in full coordinates)
    for span in (False, True):
        m, _, f, t0, lam0 = setup(manager, {**hom, "input_span": span},
                                  {"name": "toy", "x": [3.0, 4.0]}, 0)
        assert m.input_span == span and t0.numel() == (2 if span else 3) * n   # (U or B, v)
        b = bounds_of(m, f, t0, lam0)
        assert set(b) == {"eq95"}
        th2 = float(m.weight_norm(f, t0[None])[0])
        assert b["eq95"] == pytest.approx(4 * n / (25 * th2) * lam0)
        if not span:
            assert th2 == pytest.approx(float((t0 ** 2).sum()), rel=1e-15)
            full = b["eq95"]
    assert b["eq95"] == pytest.approx(full, rel=1e-13)
    # several points: eq. 180
    m, data, f, t0, lam0 = setup(manager, hom, {"name": "random", "num_train": 8}, 0)
    lmax = float(torch.linalg.eigvalsh(data.x_train @ data.x_train.T)[-1])
    assert bounds_of(m, f, t0, lam0) == {
        "eq180": pytest.approx(4 * n * 8 / (lmax * float((t0 ** 2).sum())) * lam0)}
    # ReLU: eq. 124 (c = 4) for one point, never eq. 180; deep nets: none
    m, _, f, t0, lam0 = setup(manager, {"name": "relu", "width": n}, {"name": "point"}, 0)
    assert bounds_of(m, f, t0, lam0) == {"eq124": pytest.approx(4.0, rel=1e-14)}
    m, _, f, t0, lam0 = setup(manager, {"name": "relu", "width": n},
                              {"name": "random", "num_train": 8}, 0)
    assert bounds_of(m, f, t0, lam0) == {}
    m, _, f, t0, lam0 = setup(manager, {"name": "deep_relu", "width": 8}, {"name": "point"}, 0)
    assert bounds_of(m, f, t0, lam0) == {}


def test_eq95_bound_sits_near_2_5_and_the_net_converges_to_4_5(manager):
    """docs/theory.md §3 worked expectation (fig. 2): E[H_0] / (E[theta_0^2]/n) = 1.25, so
    c ~ 2.5."""
    raw = {"model": {"name": "homogeneous", "width": 1024, "a_plus": 1.0, "a_minus": 0.5},
           "dataset": {"name": "toy"}, "sweep": {}}
    ds = sweep(raw, eta_lambda0=[3.0, 4.5, 5.0], seeds=[0], max_steps=3000)
    assert float(ds["bound_eq95"][0]) == pytest.approx(2.5, abs=0.15)
    assert list(ds.status.values[0]) == ["converged", "converged", "diverged"]


def test_slope_order_is_checked(manager):
    with pytest.raises(ConfigError, match="a_minus"):
        build(manager, {"name": "homogeneous", "a_plus": 0.5, "a_minus": 1.0}, {"name": "toy"})


# -- the trivial phase ---------------------------------------------------------------------

def test_is_trivial_for_a_dead_net_only(manager):
    m, _, feats, theta0, lam0 = setup(manager, {"name": "relu", "width": 6},
                                      {"name": "random", "num_train": 4, "input_dim": 2}, 1)
    feats.x["train"] = feats.x["train"].abs() + 0.1          # inputs in the positive quadrant
    feats.gram = feats.x["train"] @ feats.x["train"].T
    dead = theta0.clone()
    dead[:12] = -dead[:12].abs()                             # every unit off on every input
    both = torch.stack([theta0, dead])
    H = m.ntk(feats, both, None)
    assert float(H[1].abs().max()) == 0.0
    assert float(m.forward(feats, both)[0][1].abs().max()) == 0.0
    lambda0 = torch.full((2,), lam0, dtype=torch.float64)
    assert m.is_trivial(feats, both, None, H, lambda0).tolist() == [False, True]
    hom, _, f2, t2, l2 = setup(manager, {"name": "homogeneous", "width": 6}, {"name": "toy"}, 1)
    assert hom.is_trivial(f2, t2[None], None, hom.ntk(f2, t2[None], None),
                          torch.full((1,), l2, dtype=torch.float64)) is None


def test_dead_layer_of_a_deep_net_is_trivial(manager):
    m, _, feats, theta = hand_built_deep_net(manager)
    dead = theta.clone()
    dead[0, :12] = -dead[0, :12].abs()       # every U row negative: layer 1 dead
    both = torch.cat([theta, dead])
    H = m.ntk(feats, both, None)
    assert float(H[1].abs().max()) == 0.0
    lambda0 = torch.linalg.eigvalsh(H[0])[-1].expand(2)     # the live net's lambda_max
    assert m.is_trivial(feats, both, None, H, lambda0).tolist() == [False, True]


def test_relu_on_4_2_turns_trivial_above_c4(manager):
    """Figure 10: (x, y) = (4, 2), width 1024; bound exactly 4; dead at c = 4.5."""
    raw = {"model": {"name": "relu", "width": 1024}, "dataset": {"name": "point"},
           "sweep": {}}
    ds = sweep(raw, eta_lambda0=[3.0, 4.5], seeds=[0], max_steps=3000)
    assert float(ds["bound_eq124"][0]) == pytest.approx(4.0, rel=1e-14)
    assert list(ds.status.values[0]) == ["converged", "trivial"]
    dead = ds.isel(seed=0, eta_lambda0=1)
    assert float(dead.final_sharpness) == 0.0
    assert float(dead.final_loss) == pytest.approx(2.0)    # z = 0: L = y^2/2
    assert float(dead.final_sparsity[0]) == 1.0


# -- observables ---------------------------------------------------------------------------

def test_reduced_weight_norm_counts_units_active_at_init(manager):
    m, data, feats, theta0, _ = setup(manager, {"name": "relu", "width": 10,
                                                "input_span": False},
                                      {"name": "toy", "x": [2.0, -1.0]}, 3)
    U, v = theta0[:20].view(10, 2), theta0[20:]
    active = (U @ data.x_train[0]) >= 0
    theta = torch.stack([theta0, 2 * theta0])
    snap = Snapshot(m, data, feats, theta, theta0.expand(2, -1), None, None, None, None, None,
                    torch.ones(2, dtype=torch.float64), 0)
    expect = float((U[active] ** 2).sum() + (v[active] ** 2).sum())
    torch.testing.assert_close(reduced_weight_norm(snap),
                               torch.tensor([expect, 4 * expect], dtype=torch.float64))


def test_test_accuracy_and_generalisation_gap(manager):
    raw = {"model": {"name": "relu", "width": 8},
           "dataset": {"name": "random", "num_train": 6, "num_test": 5, "input_dim": 2},
           "sweep": {}}
    ds = sweep(raw, eta_lambda0=[0.5], seeds=[0], max_steps=2)
    # random labels are not +/-1: no accuracy, but a generalisation gap
    assert "test_accuracy" not in ds
    gap = ds["generalisation_gap"] - (ds["test_loss"] - ds["loss"])
    assert float(abs(gap).max()) < 1e-14


def test_linear_bias_is_eq86_and_eq87(manager):
    m, _, feats, theta0, lam0 = setup(manager, {"name": "linear_bias", "width": 7,
                                                "bias_init": 0.5}, {"name": "toy"}, 2)
    u, v, b = theta0[:7], theta0[7:14], theta0[14]
    z, _ = m.forward(feats, theta0[None])
    assert float(z[0, 0]) == pytest.approx(float(u @ v / math.sqrt(7) + b))
    assert lam0 == pytest.approx(float((u @ u + v @ v) / 7 + 1))       # eq. 87
    eq92 = bounds_of(m, feats, theta0, lam0)["eq92"] / lam0
    assert eq92 == pytest.approx(4 / (2 + (u @ u + v @ v + 2 * b * b) / 7))


@given(width=st.integers(2, 30), b0=st.floats(-1, 1), x=st.floats(0.3, 2.0), seed=seeds,
       frac=st.floats(0.05, 0.99), scale=scales)
def test_linear_bias_quantity_decreases_below_eq92(manager, width, b0, x, seed, frac, scale):
    """theta^2 + b^2 decreases at every step below eq. 92 (eq. 79, 81 with phi^2 = 1), for
    any initial variances, in both parameterisations (docs/theory.md §2.6)."""
    model = {"name": "linear_bias", "width": width, "bias_init": b0, **scale}
    raw = one_point(model, [x])
    m, _, feats, theta0, lam0 = setup(manager, model, raw["dataset"], seed)
    d = dense(raw, frac * bounds_of(m, feats, theta0, lam0)["eq92"], seed)
    assert d.status.item() != "diverged"
    n = int(d.steps)
    q, loss, sharp = (d[v].values[: n + 1] for v in ("linear_bias_norm", "loss", "sharpness"))
    eta = float(d.eta)
    # eq. 81: change = eta z^2 (eta (H_t + phi^2) - 4); here H includes phi^2 = 1 already,
    # so with eta H_t = sharpness it is eta z^2 (sharpness + eta - 4)
    predicted = eta * 2 * loss[:-1] * (sharp[:-1] + eta - 4)
    check_monotone(q, predicted, q[:-1], sign=-1)


@pytest.mark.parametrize("name, extra", [("homogeneous", {"a_minus": 0.5}),
                                         ("relu", {}), ("deep_relu", {"hidden_layers": 2})])
def test_fused_descent_equals_gradient_step(manager, name, extra):
    """The fused in-place update equals theta - eta * loss_gradient (Model.descend default)."""
    from phasekit.config.resolve import resolve_config
    from phasekit.engine.engine import Engine
    from phasekit.model import Model

    config, data = resolve_config({"model": {"name": name, "width": 12, **extra},
                                   "dataset": {"name": "random", "num_train": 5,
                                               "input_dim": 3}, "sweep": {}}, manager)
    model = Engine(config, data, manager).model
    feats, theta0 = model.setup(1, torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(0)
    theta = theta0 + 0.1 * torch.randn(4, theta0.numel(), generator=gen, dtype=torch.float64)
    eta = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    z, cache = model.forward(feats, theta)
    eps = z - data.y_train
    expected = theta.clone()
    Model.descend(model, feats, expected, cache, eps, eta)
    fused = theta.clone()
    model.descend(feats, fused, None, eps, eta)
    torch.testing.assert_close(fused, expected, rtol=1e-13, atol=1e-13)
    assert not torch.equal(fused, theta)


# -- input-span coordinates (exact: module docstring of phasekit_plugins.feedforward) --------

SPAN_MODELS = [("homogeneous", {"a_minus": 0.3}), ("relu", {}),
               ("deep_relu", {"hidden_layers": 2}),
               ("deep_relu", {"hidden_layers": 2, "parameterization": "standard",
                              "weight_variance": 2.0, "readout_variance": 0.5})]


def test_input_span_defaults_to_on_only_below_the_input_dimension(manager):
    for D, d, expect in ((3, 8, True), (8, 8, False), (9, 2, False)):
        m, _ = build(manager, {"name": "relu", "width": 4},
                     {"name": "random", "num_train": D, "input_dim": d})
        assert m.input_span is expect
        assert m.first_layer_inputs == (D if expect else d)


@pytest.mark.parametrize("name, extra", SPAN_MODELS)
def test_input_span_trains_the_same_network(manager, name, extra):
    """theta^2, outputs on both splits, NTK and the trained first layer U = U_0perp + B Q
    agree with full coordinates at every step, for a catapulting and a lazy rate."""
    ds = {"name": "random", "num_train": 5, "num_test": 4, "input_dim": 11, "seed": 2}
    full, _, ff, tf, lf = setup(manager, {"name": name, "width": 24, "input_span": False,
                                          **extra}, ds, 5)
    span, data, fs, ts, ls = setup(manager, {"name": name, "width": 24, "input_span": True,
                                             **extra}, ds, 5)
    n, d, D = 24, 11, 5
    assert ts.numel() == tf.numel() - n * (d - D)
    assert ls == pytest.approx(lf, rel=1e-12)
    Q = fs.basis                                              # (D, d), orthonormal rows
    torch.testing.assert_close(Q @ Q.T, torch.eye(D, dtype=torch.float64))
    U0 = tf[:n * d].view(n, d)
    U0_perp = U0 - (U0 @ Q.T) @ Q
    eta = torch.tensor([1.0, 3.0], dtype=torch.float64) / lf
    a, b = tf.expand(2, -1).clone(), ts.expand(2, -1).clone()
    y = data.y_train
    for _ in range(60):
        za, ca = full.forward(ff, a)
        zb, cb = span.forward(fs, b)
        torch.testing.assert_close(zb, za, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(span.forward(fs, b, "test")[0],
                                   full.forward(ff, a, "test")[0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(span.weight_norm(fs, b), full.weight_norm(ff, a),
                                   rtol=1e-12, atol=0)
        torch.testing.assert_close(span.ntk(fs, b, cb), full.ntk(ff, a, ca),
                                   rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(span.first_layer_row_norms(fs, b),
                                   full.first_layer_row_norms(ff, a), rtol=1e-11, atol=1e-12)
        full.descend(ff, a, ca, za - y, eta)
        span.descend(fs, b, cb, zb - y, eta)
    B = span.unpack(b)[0]
    torch.testing.assert_close(U0_perp + B @ Q, full.unpack(a)[0], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(b[:, n * D:], a[:, n * d:], rtol=1e-9, atol=1e-11)   # M, v
    assert float((za - y).abs().max()) < float((tf.new_zeros(1) - y).abs().max())


@pytest.mark.parametrize("name, extra", SPAN_MODELS)
def test_input_span_sweep_equals_full_coordinates(manager, name, extra):
    """Every stored variable -- trajectories, finals, bounds, statuses -- agrees."""
    raw = {"model": {"name": name, "width": 32, **extra},
           "dataset": {"name": "random", "num_train": 6, "num_test": 5, "input_dim": 20},
           "sweep": {}}
    kw = dict(eta_lambda0=[0.5, 2.0, 3.0, 40.0], seeds=[0, 1], max_steps=300)
    on = sweep(merge(raw, {"model": {"input_span": True}}), **kw)
    off = sweep(merge(raw, {"model": {"input_span": False}}), **kw)
    assert stored_config(on)["model"]["input_span"] is True
    assert stored_config(off)["model"]["input_span"] is False
    np.testing.assert_array_equal(on.status.values, off.status.values)
    np.testing.assert_array_equal(on.steps.values, off.steps.values)
    assert "converged" in on.status.values and "diverged" in on.status.values
    for var in off.data_vars:
        if off[var].dtype.kind == "f":
            np.testing.assert_allclose(on[var].values, off[var].values, rtol=1e-8,
                                       atol=1e-12, err_msg=var)


def _observables_agree_in_both_coordinates(manager, model, dataset, seed, c_values, steps):
    """Train the same seed in full and in input-span coordinates and compare, at every step,
    what the observables read: the shared test-split outputs (the span path's
    ``B (Q x) + U_0perp x`` against the full path's ``U x``, layer by layer), test loss,
    generalisation gap, the sign of every test output, test accuracy, and the sparsity of
    every hidden layer on both splits.  Returns the last full-coordinate snapshot."""
    full, data, ff, tf, lf = setup(manager, {**model, "input_span": False}, dataset, seed)
    span, _, fs, ts, ls = setup(manager, {**model, "input_span": True}, dataset, seed)
    assert ff.basis is None and fs.basis is not None
    assert ts.numel() < tf.numel()                        # B is n x D, U is n x d
    eta = torch.tensor(c_values, dtype=torch.float64) / lf
    a, b = tf.expand(len(c_values), -1).clone(), ts.expand(len(c_values), -1).clone()
    y = data.y_train.to(torch.float64)

    def snapshot(m, feats, theta, theta0, t):
        z, cache = m.forward(feats, theta)
        eps = z - y
        G = theta.shape[0]
        return Snapshot(m, data, feats, theta, theta0.expand(G, -1), z, eps,
                        0.5 * (eps * eps).mean(-1), None, eta,
                        theta.new_full((G,), lf), t, cache), cache

    def sparsity(pre):
        return torch.stack([(s <= 0).to(torch.float64).mean(dim=(-1, -2)) for s in pre], -1)

    for t in range(steps):
        (sf, cf), (ss, cs) = snapshot(full, ff, a, tf, t), snapshot(span, fs, b, ts, t)
        z_ref = full.propagate(ff, a, "test")[0]          # full coordinates, every layer kept
        scale = float(z_ref.abs().max())
        torch.testing.assert_close(sf.outputs("test"), z_ref, rtol=1e-10, atol=1e-13 * scale)
        torch.testing.assert_close(ss.outputs("test"), z_ref, rtol=1e-10, atol=1e-13 * scale)
        assert ss.outputs("test") is ss.outputs("test")   # one pass per split and snapshot
        torch.testing.assert_close(torch.sign(ss.outputs("test")), torch.sign(z_ref),
                                   rtol=0, atol=0)
        for f in (common_obs.test_loss, common_obs.generalisation_gap, net_obs.test_accuracy):
            torch.testing.assert_close(f(ss), f(sf), rtol=1e-10, atol=1e-13, msg=f.__name__)
        if span.is_relu:
            torch.testing.assert_close(activation_sparsity(ss), activation_sparsity(sf),
                                       rtol=1e-10, atol=0)
        for split in ("train", "test"):
            torch.testing.assert_close(sparsity(span.hidden_preactivations(fs, b, split)),
                                       sparsity(full.hidden_preactivations(ff, a, split)),
                                       rtol=1e-10, atol=0)
        full.descend(ff, a, cf, sf.eps, eta)
        span.descend(fs, b, cs, ss.eps, eta)
    return sf


@pytest.mark.parametrize("name, extra", SPAN_MODELS + [("homogeneous", {"a_plus": 1.5,
                                                                       "a_minus": 0.0})])
def test_test_split_observables_in_span_coordinates_equal_full(manager, name, extra):
    """Test outputs, test loss, gap, accuracy and sparsity on both splits computed in
    input-span coordinates (d = 30 > D = 6) equal the full-coordinate values, along a
    lazy and a catapulting run (docs/theory.md §2.5; feedforward module docstring)."""
    ds = {"name": "random", "num_train": 6, "num_test": 40, "input_dim": 30, "seed": 4}
    snap = _observables_agree_in_both_coordinates(
        manager, {"name": name, "width": 32, **extra}, ds, 3, [0.5, 3.0], 40)
    assert 0.0 < float(activation_sparsity(snap).min()) or not snap.model.is_relu


def test_test_split_observables_in_span_coordinates_on_real_fmnist(manager):
    """The same comparison on real two-class Fashion-MNIST (d = 784 pixels, D = 32
    training images, every test image of the two classes); accuracy is meaningful here
    (labels +/-1)."""
    from .test_images import real_fmnist_or_skip

    real_fmnist_or_skip()
    snap = _observables_agree_in_both_coordinates(
        manager, {"name": "relu", "width": 64}, {"name": "fmnist", "num_train": 32},
        0, [1.0, 3.0], 8)
    acc = net_obs.test_accuracy(snap)
    assert snap.data.x_test.shape[0] > 1000 and bool(((acc > 0.5) & (acc <= 1.0)).all())


def test_init_scale_example_compares_the_same_function(manager):
    """docs/examples/init_scale.py (the table of docs/theory.md §2.6), on a small net: both
    parameterisations give the same outputs and different NTKs, and at large width the
    He-initialised output keeps its scale with depth while eq. 193's halves per layer."""
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).parents[1] / "docs" / "examples"
                                 / "init_scale.py"))
    ds = {"name": "random", "num_train": 3, "input_dim": 4}
    rows = {(label, k): (z, lam) for label, k, z, lam in
            example["table"](ds, 6, range(2), seeds=[0, 1])}
    assert len(rows) == 4 * 2
    for (label, k), (z, lam) in rows.items():
        if label.endswith("standard"):
            z_ntk, lam_ntk = rows[(label.replace("standard", "ntk"), k)]
            np.testing.assert_allclose(z, z_ntk, rtol=1e-12)
            assert all(a > b for a, b in zip(lam, lam_ntk, strict=True))
    he = [example["predicted_rms"](ds, 2.0, k) for k in range(3)]
    paper = [example["predicted_rms"](ds, 1.0, k) for k in range(3)]
    assert he == pytest.approx([he[0]] * 3)
    assert paper == pytest.approx([paper[0], paper[0] / 2 ** 0.5, paper[0] / 2])
