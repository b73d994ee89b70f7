"""The eigenbasis set-up of the quadratic models without q, W or eigh (eq. 186-187).

With d = 1, g = identity and one training point x, psi = x W = q^T diag(x lambda) q,
so the eigenbasis path needs only lambda and ``u = q theta_psi = expm(B) theta_psi``,
the action of expm on one vector (``expm_skew_action``).  These tests check that
action against ``torch.linalg.matrix_exp`` (and an eigendecomposition where the norm
of B is large), that the fast set-up trains exactly as the full matrices do, and that
the fallback to ``matrix_exp`` is exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine
from phasekit_plugins import quadratic
from phasekit_plugins.quadratic import expm_skew_action

from .helpers import sweep

CPU = torch.device("cpu")


def skew(n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """``scale (b - b^T)/sqrt(2)``, b i.i.d. N(0, 1), as in eq. 187."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return scale * (b - b.T) / math.sqrt(2.0)


def vector(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(10_000 + seed),
                       dtype=torch.float64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def expm_by_eigh(B: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """expm(B) v from the eigendecomposition of the Hermitian iB = V diag(mu) V^*:
    expm(B) = V diag(e^(-i mu)) V^*; backward stable at any norm of B."""
    mu, V = torch.linalg.eigh(1j * B.to(torch.complex128))
    return (V @ (torch.exp(-1j * mu) * (V.conj().T @ v.to(torch.complex128)))).real


class CountMatrixExp:
    """Counts calls of torch.linalg.matrix_exp (and still computes it)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = torch.linalg.matrix_exp

        def counted(A):
            self.calls += 1
            return real(A)

        monkeypatch.setattr(torch.linalg, "matrix_exp", counted)


# -- the action expm(B) v ---------------------------------------------------------------

def test_bessel_values_match_the_integral():
    """Miller's recurrence against J_k(x) = (1/pi) int_0^pi cos(k t - x sin t) dt
    (the trapezoid rule is exact to rounding for this periodic integrand)."""
    t = torch.linspace(0, 2 * math.pi, 4097, dtype=torch.float64)[:-1]
    for x in (1e-9, 0.3, 1.0, 7.5, 40.0, 150.0):
        J = quadratic._bessel_j(x, 60)
        for k in range(60):
            want = float(torch.cos(k * t - x * torch.sin(t)).mean())
            assert abs(J[k] - want) <= 1e-14 * max(1.0, abs(want)), (x, k, J[k], want)


@pytest.mark.parametrize("n", [2, 10, 200, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_action_equals_matrix_exp(n, seed, monkeypatch):
    B, v = skew(n, seed), vector(n, seed)
    want = torch.linalg.matrix_exp(B) @ v
    count = CountMatrixExp(monkeypatch)
    got = expm_skew_action(B, v)
    assert count.calls == 0, "the series, not the fallback"
    assert rel(got, want) <= 1e-12
    if n <= 200:                     # a complex eigh of 1000 x 1000 takes seconds
        assert rel(got, expm_by_eigh(B, v)) <= 1e-13
    assert abs(float(got.norm() / v.norm()) - 1.0) <= 1e-13


@pytest.mark.parametrize("scale", [0.0, 1e-14, 1e-6, 1e-2])
def test_action_of_a_tiny_skew_matrix(scale, monkeypatch):
    B, v = skew(50, 3, scale), vector(50, 3)
    count = CountMatrixExp(monkeypatch)
    got = expm_skew_action(B, v)
    assert count.calls == 0
    series = v + B @ v + B @ (B @ v) / 2 + B @ (B @ (B @ v)) / 6
    assert rel(got, series) <= 1e-15 + (scale * 10) ** 4
    assert rel(got, torch.linalg.matrix_exp(B) @ v) <= 1e-14


@pytest.mark.parametrize("n, scale", [(40, 30.0), (200, 20.0)])
def test_action_of_a_large_skew_matrix(n, scale, monkeypatch):
    """||B|| of several hundred: the series takes several hundred terms and stays
    within the conditioning of the problem, eps ||B||."""
    B, v = skew(n, 5, scale), vector(n, 5)
    norm = float(torch.linalg.matrix_norm(B, 2))
    assert norm > 200
    count = CountMatrixExp(monkeypatch)
    got = expm_skew_action(B, v)
    assert count.calls == 0
    eps = float(torch.finfo(torch.float64).eps)
    assert rel(got, expm_by_eigh(B, v)) <= 20 * eps * norm
    assert rel(got, torch.linalg.matrix_exp(B) @ v) <= 1e-12 * max(1.0, norm / 100)


def test_zero_vector_and_zero_matrix():
    B, v = skew(8, 0), vector(8, 0)
    assert torch.equal(expm_skew_action(B, torch.zeros(8, dtype=torch.float64)),
                       torch.zeros(8, dtype=torch.float64))
    assert torch.equal(expm_skew_action(torch.zeros(8, 8, dtype=torch.float64), v), v)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_too_small_rho_falls_back_to_matrix_exp(fraction, monkeypatch):
    """A rho below ||B||_2 makes M_k v grow: the fallback computes matrix_exp(B) v."""
    B, v = skew(120, 2), vector(120, 2)
    want = torch.linalg.matrix_exp(B) @ v
    rho = fraction * float(torch.linalg.matrix_norm(B, 2))
    count = CountMatrixExp(monkeypatch)
    got = expm_skew_action(B, v, rho=rho)
    assert count.calls == 1
    assert torch.equal(got, want)


def test_norm_check_falls_back_to_matrix_exp(monkeypatch):
    """The a-posteriori check |expm(B) v| = |v|: too short a series fails it."""
    B, v = skew(60, 4), vector(60, 4)
    monkeypatch.setattr(quadratic, "_bessel_terms", lambda rho, tol=1e-18: 3)
    count = CountMatrixExp(monkeypatch)
    got = expm_skew_action(B, v)
    assert count.calls == 1
    assert rel(got, torch.linalg.matrix_exp(B) @ v) == 0.0


# -- the model's set-up -----------------------------------------------------------------

def build(manager, width, x, eigenbasis, name="quadratic", **extra):
    model = {"name": name, "width": width, "eigen_low": 1.0, "eigen_high": 2.0,
             "activation": "identity", "eigenbasis": eigenbasis, **extra}
    config, data = resolve_config({"model": model, "dataset": {"name": "toy", "x": [x],
                                                               "y": 0.0},
                                   "sweep": {}}, manager)
    return Engine(config, data, manager).model


def trajectory(model, feats, theta0, cs, steps=50):
    """Loss, NTK and weight norm over ``steps`` gradient steps at eta = c / lambda_0."""
    y = model.data.y_train
    lam0 = float(model.ntk(feats, theta0[None], None)[0].max())
    eta = torch.tensor(cs, dtype=torch.float64)[:, None] / lam0
    theta = theta0.expand(len(cs), -1).clone()
    out = {"loss": [], "ntk": [], "weight_norm": []}
    for _ in range(steps + 1):
        z, cache = model.forward(feats, theta)
        eps = z - y
        out["loss"].append(0.5 * (eps * eps).mean(-1))
        out["ntk"].append(model.ntk(feats, theta, cache)[:, 0, 0])
        out["weight_norm"].append(model.weight_norm(feats, theta))
        theta = theta - eta * model.loss_gradient(feats, theta, cache, eps)
    return {k: torch.stack(v) for k, v in out.items()}


def no_big_eigh(monkeypatch):
    """Fails any eigh of a matrix larger than the 1x1 NTK, and any matrix_exp."""
    real = torch.linalg.eigh

    def eigh(A, *args, **kwargs):
        assert A.shape[-1] <= 1, f"eigh of a {tuple(A.shape)} matrix in the fast set-up"
        return real(A, *args, **kwargs)

    def matrix_exp(A):
        raise AssertionError("matrix_exp in the fast set-up")

    monkeypatch.setattr(torch.linalg, "eigh", eigh)
    monkeypatch.setattr(torch.linalg, "matrix_exp", matrix_exp)


CASES = [("quadratic", 1000, 0, 1.0), ("quadratic", 1000, 5, -0.7),
         ("quadratic", 200, 1, 1.0), ("quadratic", 200, 2, -0.7),
         ("quadratic", 64, 7, 2.3), ("quadratic_bias", 100, 3, -0.7)]


@pytest.mark.parametrize("name, width, seed, x", CASES)
def test_fast_eigenbasis_setup_trains_as_the_full_matrices(manager, monkeypatch, name,
                                                          width, seed, x):
    extra = {"feature_width": 10} if name == "quadratic_bias" else {}
    full_model = build(manager, width, x, "off", name, **extra)
    fast_model = build(manager, width, x, "auto", name, **extra)
    assert fast_model._direct_eigenbasis() and not full_model._direct_eigenbasis()
    full, theta_full = full_model.setup(seed, CPU, torch.float64)
    with monkeypatch.context() as m:
        no_big_eigh(m)
        fast, theta_fast = fast_model.setup(seed, CPU, torch.float64)
    assert fast.diagonal and not full.diagonal
    n_phi = fast.n_phi
    # psi's eigenvalues: (x / sqrt(d)) lambda, as a multiset (the order is [pos, -pos])
    ev = fast.psi["train"][0]
    assert ev.shape == (width,)
    want = torch.linalg.eigvalsh(full.psi["train"][0])
    torch.testing.assert_close(torch.sort(ev).values, want, rtol=1e-12, atol=1e-12)
    # the same stream: theta_phi and U drawn as before, |u| = |theta_psi|
    assert torch.equal(theta_fast[:n_phi], theta_full[:n_phi])
    if n_phi:
        assert torch.equal(fast.phi["train"], full.phi["train"])
        torch.testing.assert_close(fast.phi_eff, full.phi_eff, rtol=1e-12, atol=0)
    torch.testing.assert_close(theta_fast.norm(), theta_full.norm(), rtol=1e-13, atol=0)
    # the bounds (eq. 60 / 68 or 77) from max / min of the eigenvalues squared
    lam0 = float(fast_model.ntk(fast, theta_fast[None], None)[0, 0, 0])
    b_fast = {b.name: b.eta for b in fast_model.bounds(fast, theta_fast, lam0)}
    b_full = {b.name: b.eta for b in full_model.bounds(full, theta_full, lam0)}
    assert b_fast.keys() == b_full.keys() and b_fast
    for key in b_fast:
        assert b_fast[key] == pytest.approx(b_full[key], rel=1e-11)
    # the same trajectories over 50 steps, lazy and catapult
    cs = [0.5, 1.5, 2.5, 3.0]
    a = trajectory(fast_model, fast, theta_fast, cs)
    b = trajectory(full_model, full, theta_full, cs)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-10 * float(
            b[key].abs().max()))


def test_fast_path_only_where_exact(manager):
    """Several input dimensions, another g, several points or eigenbasis = off keep the
    eigendecomposition (or the full matrices)."""
    def model(model_extra, dataset):
        raw = {"model": {"name": "quadratic", "width": 10, **model_extra},
               "dataset": dataset, "sweep": {}}
        config, data = resolve_config(raw, manager)
        return Engine(config, data, manager).model

    toy = {"name": "toy", "x": [0.5]}
    assert model({}, toy)._direct_eigenbasis()
    assert model({"eigenbasis": "on"}, toy)._direct_eigenbasis()
    assert not model({"eigenbasis": "off"}, toy)._direct_eigenbasis()
    assert not model({"activation": "tanh"}, toy)._direct_eigenbasis()
    assert not model({}, {"name": "toy", "x": [0.5, 0.2]})._direct_eigenbasis()
    assert not model({}, {"name": "random", "num_train": 3})._direct_eigenbasis()


def test_fallback_inside_the_setup_is_exact(manager, monkeypatch):
    """A norm estimate far too small: the set-up falls back to matrix_exp and still
    trains as the full matrices do."""
    monkeypatch.setattr(quadratic, "_skew_norm_estimate", lambda B, v, steps=30: 1.0)
    count = CountMatrixExp(monkeypatch)
    fast_model, full_model = build(manager, 80, -0.7, "auto"), build(manager, 80, -0.7, "off")
    fast, theta_fast = fast_model.setup(4, CPU, torch.float64)
    assert count.calls == 1
    full, theta_full = full_model.setup(4, CPU, torch.float64)
    a = trajectory(fast_model, fast, theta_fast, [0.5, 2.5, 3.0])
    b = trajectory(full_model, full, theta_full, [0.5, 2.5, 3.0])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-10 * float(
            b[key].abs().max()))


def test_fast_setup_gives_the_same_sweep(manager):
    """The whole sweep (statuses, steps, bounds, critical rates) as with the full
    matrices, at a negative input."""
    raw = {"model": {"name": "quadratic", "width": 80, "eigen_low": 1.0, "eigen_high": 2.0,
                     "activation": "identity"},
           "dataset": {"name": "toy", "x": [-0.7]}, "sweep": {}}
    kw = dict(eta_lambda0=[0.5, 1.5, 2.5, 3.0, 3.5, 4.5], seeds=[0, 1], max_steps=3000)
    fast = sweep(raw, **kw)
    full = sweep({**raw, "model": {**raw["model"], "eigenbasis": "off"}}, **kw)
    assert (fast.status.values == full.status.values).all()
    assert (fast.steps.values == full.steps.values).all()
    for v in ("c_max", "c_loss", "c_sharp"):
        np.testing.assert_array_equal(fast[v].values, full[v].values)
    for v in ("lambda0", "bound_eq60", "bound_eq68"):
        np.testing.assert_allclose(fast[v].values, full[v].values, rtol=1e-11)
