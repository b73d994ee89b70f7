"""Closed-form gradients and NTKs of the quadratic models against autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine
from phasekit.model import autograd_jacobian, autograd_loss_gradient, autograd_ntk
from phasekit_plugins.quadratic import FeatureMap, draw_meta_feature_matrices

ACTS = st.sampled_from(["identity", "tanh", "relu", "leaky_relu"])


def build(manager, model: dict, dataset: dict):
    config, data = resolve_config({"model": model, "dataset": dataset, "sweep": {}}, manager)
    return Engine(config, data, manager).model, data


def random_theta(P: int, G: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(G, P, generator=gen, dtype=torch.float64)


@given(half_width=st.integers(1, 12), n_phi=st.integers(0, 6), D=st.integers(1, 6),
       d=st.integers(1, 3), activation=ACTS, seed=st.integers(0, 2**16),
       zeta=st.none() | st.floats(0.05, 2.0), eigenbasis=st.sampled_from(["auto", "off"]))
def test_ntk_and_gradient_match_autograd(manager, half_width, n_phi, D, d, activation, seed,
                                         zeta, eigenbasis):
    model = {"name": "quadratic_bias" if n_phi else "quadratic", "width": 2 * half_width,
             "activation": activation, "eigen_low": 0.5, "eigen_high": 1.5,
             "eigenbasis": eigenbasis}
    if n_phi:
        model["feature_width"] = n_phi
    if zeta is not None:
        model["zeta"] = zeta
    m, data = build(manager, model, {"name": "random", "num_train": D, "input_dim": d,
                                     "seed": seed})
    feats, theta0 = m.setup(seed, torch.device("cpu"), torch.float64)
    theta = torch.cat([theta0[None], random_theta(theta0.numel(), 3, seed)])
    z, cache = m.forward(feats, theta)
    H = m.ntk(feats, theta, cache)
    J = autograd_jacobian(m, feats, theta)
    assert J.shape == (4, D, theta0.numel())
    torch.testing.assert_close(H, J @ J.transpose(1, 2) / D, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H, autograd_ntk(m, feats, theta), rtol=1e-12, atol=1e-12)
    eps = z - data.y_train
    torch.testing.assert_close(m.loss_gradient(feats, theta, cache, eps),
                               autograd_loss_gradient(m, feats, theta, eps),
                               rtol=1e-12, atol=1e-12)


def test_ntk_without_cache_equals_cached(manager):
    m, _ = build(manager, {"name": "quadratic", "width": 10}, {"name": "random",
                                                                "num_train": 5})
    feats, theta0 = m.setup(1, torch.device("cpu"), torch.float64)
    theta = random_theta(theta0.numel(), 2, 0)
    _, cache = m.forward(feats, theta)
    torch.testing.assert_close(m.ntk(feats, theta, None), m.ntk(feats, theta, cache))


def test_outputs_follow_spec_formula(manager):
    """z = phi.theta_phi + (zeta/2) theta_psi^T psi theta_psi, written out by hand."""
    m, data = build(manager, {"name": "quadratic_bias", "width": 6, "feature_width": 3,
                              "activation": "tanh"},
                    {"name": "random", "num_train": 4, "input_dim": 2})
    feats, theta0 = m.setup(0, torch.device("cpu"), torch.float64)
    z, _ = m.forward(feats, theta0[None])
    for a in range(4):
        psi, phi = feats.psi["train"][a], feats.phi["train"][a]
        th_phi, th_psi = theta0[:3], theta0[3:]
        expect = phi @ th_phi + feats.zeta / 2 * th_psi @ psi @ th_psi
        assert math.isclose(float(z[0, a]), float(expect), rel_tol=1e-12)
    assert feats.zeta == pytest.approx(math.sqrt(2 / 6))


def test_meta_feature_matrices_have_paired_spectrum():
    """W = q^T diag(lambda) q with q = expm(B) orthogonal and eigenvalues +/-U[low, high]."""
    gen = torch.Generator().manual_seed(0)
    W = draw_meta_feature_matrices(gen, 40, 2, 1.0, 2.0)
    for w in W:
        torch.testing.assert_close(w, w.T, rtol=0, atol=0)
        ev = torch.linalg.eigvalsh(w)
        pos, neg = ev[ev > 0].sort().values, (-ev[ev < 0]).sort().values
        assert len(pos) == len(neg) == 20
        torch.testing.assert_close(pos, neg, rtol=1e-10, atol=1e-10)
        assert pos.min() >= 1.0 - 1e-10 and pos.max() <= 2.0 + 1e-10


def test_meta_feature_function_definition():
    """psi(x) = g(sum_i x_i W^i / sqrt(d)) element-wise; phi(x) = U x / sqrt(d n_phi)."""
    gen = torch.Generator().manual_seed(3)
    W = draw_meta_feature_matrices(gen, 6, 3, 1.0, 1.0)
    U = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    fm = FeatureMap(W, U, "tanh", 0.0, 1 / math.sqrt(3 * 4))
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    psi = fm.psi(x, batch=2)
    for a in range(5):
        expect = torch.tanh(sum(x[a, i] * W[i] for i in range(3)) / math.sqrt(3))
        torch.testing.assert_close(psi[a], expect)
        torch.testing.assert_close(fm.phi(x)[a], U @ x[a] / math.sqrt(12))


def test_student_features_are_projected_teacher_features(manager):
    """Teacher-student: labels from eq. 188; psi_s = Q psi_t Q^T, phi_s = Q phi_t (eq. 190-191)."""
    _, data = resolve_config({
        "model": {"name": "quadratic_bias", "width": 6, "feature_width": 2},
        "dataset": {"name": "teacher_student", "teacher_width": 10, "student_width": 6,
                    "teacher_feature_width": 4, "student_feature_width": 2,
                    "num_train": 3, "num_test": 5, "input_dim": 2},
        "sweep": {}}, manager)
    teacher, student = data.extras["teacher_features"], data.extras["quadratic_features"]
    theta_t = data.extras["teacher_theta"]
    Q = torch.zeros(6, 10, dtype=torch.float64)
    Q[torch.arange(6), data.extras["student_index"]] = 1.0
    Qphi = torch.zeros(2, 4, dtype=torch.float64)
    Qphi[torch.arange(2), data.extras["student_feature_index"]] = 1.0
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        psi_t, phi_t = teacher.psi(x), teacher.phi(x)
        torch.testing.assert_close(student.psi(x), Q @ psi_t @ Q.T)
        torch.testing.assert_close(student.phi(x), phi_t @ Qphi.T)
        zeta_t = math.sqrt(2 / 10)
        expect = phi_t @ theta_t[:4] + zeta_t / 2 * torch.einsum(
            "m,amn,n->a", theta_t[4:], psi_t, theta_t[4:])
        torch.testing.assert_close(y, expect)


def test_student_width_must_match_model(manager):
    from phasekit.errors import ConfigError

    with pytest.raises(ConfigError, match="model.width = 8 does not match"):
        resolve_config({"model": {"name": "quadratic", "width": 8},
                        "dataset": {"name": "teacher_student", "teacher_width": 10,
                                    "student_width": 6, "num_train": 2, "num_test": 0},
                        "sweep": {}}, manager)


def test_eigenbasis_gives_the_same_sweep(manager):
    """Training in psi's eigenbasis (one point) is exact: same sweep as the full matrices."""
    from .helpers import sweep

    for name, extra in (("quadratic", {}), ("quadratic_bias", {"feature_width": 5})):
        raw = {"model": {"name": name, "width": 60, "eigen_low": 1.0, "eigen_high": 2.0,
                         "activation": "tanh", **extra},
               "dataset": {"name": "toy", "x": [0.7]}, "sweep": {}}
        kw = dict(eta_lambda0=[0.5, 1.5, 2.5, 3.0, 8.0], seeds=[0, 1], max_steps=3000)
        fast = sweep(raw, **kw)
        full = sweep({**raw, "model": {**raw["model"], "eigenbasis": "off"}}, **kw)
        assert (fast.status.values == full.status.values).all()
        assert (fast.steps.values == full.steps.values).all()
        assert set(fast.status.values.ravel()) == {"converged", "diverged"}
        ok = fast.status.values == "converged"
        for v in ("final_loss", "final_weight_norm", "final_sharpness", "lambda0"):
            a, b = fast[v].values, full[v].values
            if a.shape == ok.shape:
                a, b = a[ok], b[ok]
            scale = 1e-12 * float(np.max(np.abs(fast.loss.isel(step=0).values)))
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=scale)
        for b in (v for v in fast.data_vars if v.startswith("bound_")):
            np.testing.assert_allclose(fast[b], full[b], rtol=1e-10)
