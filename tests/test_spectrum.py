"""lambda_max solvers (phasekit.engine.spectrum): Lanczos against eigvalsh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from phasekit.config.resolve import LANCZOS_ABOVE_D
from phasekit.engine.spectrum import eigvalsh_max, lambda_max, lanczos_max

from .helpers import sweep


def symmetric(eigenvalues: list[float], seed: int, dtype=torch.float64) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T with a random orthogonal Q."""
    gen = torch.Generator().manual_seed(seed)
    D = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    return (Q * torch.tensor(eigenvalues, dtype=torch.float64)) @ Q.T


spectra = st.lists(st.floats(0.0, 10.0), min_size=1, max_size=40)


@given(spectra=st.lists(spectra, min_size=1, max_size=4), seed=st.integers(0, 2**16),
       degenerate=st.booleans())
def test_lanczos_equals_eigvalsh(spectra, seed, degenerate):
    """Any PSD spectrum (clustered, repeated or degenerate top eigenvalues included):
    within the certified residual of the true lambda_max, never above it."""
    D = max(len(s) for s in spectra)
    mats = []
    for i, s in enumerate(spectra):
        s = (s * D)[:D]
        if degenerate:
            s[:2] = [max(s)] * min(2, D)
        mats.append(symmetric(s, seed + i))
    H = torch.stack(mats)
    ref = eigvalsh_max(H)
    got, iters = lanczos_max(H)
    scale = float(ref.abs().max()) + 1e-300
    assert torch.all((got - ref).abs() <= 1e-9 * ref.abs() + 1e-13 * scale), (got, ref)
    assert torch.all(got <= ref + 1e-12 * scale)               # a Ritz value is below lambda_max
    assert int(iters.max()) <= D


def test_lanczos_on_network_ntks_is_exact_to_rounding(manager):
    """NTKs have a dominant top eigenvalue: a few iterations reach float64 precision."""
    from phasekit.config.resolve import resolve_config
    from phasekit.engine.engine import Engine

    config, data = resolve_config({"model": {"name": "relu", "width": 64},
                                   "dataset": {"name": "random", "num_train": 150,
                                               "input_dim": 5}, "sweep": {}}, manager)
    model = Engine(config, data, manager).model
    feats, theta0 = model.setup(0, torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(3)
    theta = theta0 + 0.5 * torch.randn(6, theta0.numel(), generator=gen, dtype=torch.float64)
    H = model.ntk(feats, theta, None)
    got, iters = lanczos_max(H)
    torch.testing.assert_close(got, eigvalsh_max(H), rtol=1e-13, atol=0)
    assert int(iters.max()) < 30
    H32 = H.float()
    got32, _ = lanczos_max(H32)
    torch.testing.assert_close(got32, eigvalsh_max(H32), rtol=2e-6, atol=0)


def test_fallback_to_eigvalsh_when_lanczos_has_not_converged():
    H = torch.stack([symmetric(list(np.linspace(1.0, 1.001, 30)), 1)])   # no gap at the top
    got, iters = lanczos_max(H, max_iter=3)
    assert int(iters[0]) == 0                                     # fell back
    assert torch.equal(got, eigvalsh_max(H))


def test_lambda_max_handles_non_finite_and_zero_matrices():
    D = LANCZOS_ABOVE_D + 1
    H = torch.stack([symmetric([1.0] * (D - 1) + [3.0], 0), torch.zeros(D, D),
                     torch.full((D, D), math.inf)])
    for solver in ("auto", "lanczos", "eigvalsh"):
        out = lambda_max(H, solver)
        assert out[0] == pytest.approx(3.0, rel=1e-12)
        assert float(out[1]) == 0.0 and math.isnan(float(out[2]))


def test_sweep_with_lanczos_equals_eigvalsh():
    raw = {"model": {"name": "relu", "width": 32},
           "dataset": {"name": "random", "num_train": 24, "num_test": 4, "input_dim": 3},
           "sweep": {"eta_lambda0": [0.5, 2.5], "seeds": [0, 1], "max_steps": 200}}
    runs = {s: sweep(raw, sharpness_solver=s) for s in ("eigvalsh", "lanczos")}
    a, b = runs["eigvalsh"], runs["lanczos"]
    for var in ("sharpness", "final_sharpness"):
        np.testing.assert_allclose(b[var].values, a[var].values, rtol=1e-12)
    for var in ("loss", "weight_norm", "test_loss", "steps"):
        np.testing.assert_array_equal(b[var].values, a[var].values)   # only the solver differs
