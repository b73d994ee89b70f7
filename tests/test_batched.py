"""phasekit.batched: every row of a product comes out the same for any batch size."""

from __future__ import annotations

import pytest
import torch

from phasekit.batched import matvec, rows_mm, shared_mm, vecmat
from phasekit.sweep import torch_threads

# run under each ATEN_CPU_CAPABILITY by tox's kernels-* envs (pytest -m kernels)
pytestmark = pytest.mark.kernels

SHAPES = [(1, 1, 1000), (8, 5, 64), (128, 128, 1024)]      # (D, d, n): toy, small, images


def _gen(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("D, d, n", SHAPES)
def test_rows_do_not_depend_on_the_batch(threads, D, d, n):
    G = 9
    A, x, w, X = _gen(G, D, n), _gen(G, n), _gen(G, D), _gen(D, d)
    U = _gen(G, d, n)
    with torch_threads(threads):
        products = {
            "matvec": (lambda k: matvec(A[:k], x[:k])),
            "vecmat": (lambda k: vecmat(w[:k], A[:k])),
            "rows_mm": (lambda k: rows_mm(w[:k], X)),
            "shared_mm": (lambda k: shared_mm(X, U[:k])),           # (D, d)(d, n) per row
        }
        for name, product in products.items():
            whole = product(G)
            for k in (1, 2, 5):
                assert torch.equal(product(k), whole[:k]), (name, k)


def test_values_are_the_plain_products():
    A, x, w, X = _gen(4, 6, 7), _gen(4, 7), _gen(4, 6), _gen(6, 3)
    torch.testing.assert_close(matvec(A, x), (A @ x.unsqueeze(-1)).squeeze(-1), rtol=1e-14,
                               atol=1e-14)
    torch.testing.assert_close(vecmat(w, A), (w.unsqueeze(1) @ A).squeeze(1), rtol=1e-14,
                               atol=1e-14)
    torch.testing.assert_close(rows_mm(w, X), w @ X, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(shared_mm(X.T, A.transpose(1, 2)[:, :6, :]),
                               X.T @ A.transpose(1, 2)[:, :6, :], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("solver, D", [("eigvalsh", 5), ("eigvalsh", 7), ("eigvalsh", 13),
                                       ("lanczos", 103), ("lanczos", 130)])
def test_lambda_max_does_not_depend_on_the_batch(solver, D):
    """LAPACK's answer for a matrix depends on its alignment in the batch, and Lanczos
    makes matrix-vector products of shrinking batches: neither may show in the result."""
    from phasekit.spectrum import lambda_max

    A = _gen(7, D, D + 5)
    H = A @ A.transpose(1, 2) / D                          # positive definite, like an NTK
    with torch_threads(1):
        whole = lambda_max(H, solver)
        for k in range(7):
            assert torch.equal(lambda_max(H[k:k + 1], solver), whole[k:k + 1]), k
        assert torch.equal(lambda_max(H[3:], solver), whole[3:])
    exact = torch.linalg.eigvalsh(H)[:, -1]
    torch.testing.assert_close(whole, exact, rtol=1e-9, atol=0)
