"""What sharing a batch does to a row: within phasekit.engine.batched.BATCH_RTOL of the row alone.

No kernel promises bitwise batch invariance (MKL on an AVX-512 Xeon at two threads
rounds a row of a batched product differently for batches of 1 and 9), so these tests
hold every product phasekit's models and the sharpness make to the documented bound, at
1 and 2 threads; marked ``kernels``, they run under every ``ATEN_CPU_CAPABILITY``.
"""

from __future__ import annotations

import pytest
import torch

from phasekit.engine.batched import BATCH_RTOL, matvec
from phasekit.engine.engine import torch_threads
from phasekit.engine.spectrum import lambda_max

# run under each ATEN_CPU_CAPABILITY by tox's kernels-* envs (pytest -m kernels)
pytestmark = pytest.mark.kernels

SHAPES = [(1, 1, 1000), (8, 5, 64), (128, 128, 1024)]      # (D, d, n): toy, small, images


def _gen(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def assert_rows_within_bound(batch: torch.Tensor, alone: torch.Tensor, what) -> None:
    """Each row within BATCH_RTOL of the batch's largest magnitude (the contract kit's
    rule)."""
    a, b = batch.flatten(1), alone.flatten(1)
    worst = float((a - b).abs().max() / b.abs().max())
    assert worst <= BATCH_RTOL, (what, worst)


@pytest.mark.kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("D, d, n", SHAPES)
def test_rows_of_a_batch_are_within_the_bound(threads, D, d, n):
    """The products of the models' steps, for a batch of 9 rows and for 1, 2 and 5 of
    them: matrix-vector per row, batched matrix products, a shared matrix against the
    batch and the batch against a shared matrix (one product folded over the rows)."""
    G = 9
    A, x, w, X = _gen(G, D, n), _gen(G, n), _gen(G, D), _gen(D, d)
    U = _gen(G, n, d)
    with torch_threads(threads):
        products = {
            "matvec": lambda k: matvec(A[:k], x[:k]),                     # z = v . a
            "matvec transposed": lambda k: matvec(A[:k].transpose(-1, -2), w[:k]),
            "shared @ batch": lambda k: torch.matmul(X, U[:k].transpose(-1, -2)),  # U x
            "batch @ shared": lambda k: w[:k] @ X,                        # folded rows
            "batch @ batch": lambda k: torch.matmul(A[:k].transpose(-1, -2), A[:k]),
            "gram": lambda k: torch.matmul(A[:k], A[:k].transpose(-1, -2)),
        }
        for name, product in products.items():
            whole = product(G)
            for k in (1, 2, 5):
                assert_rows_within_bound(whole[:k], product(k), (name, k))


def test_matvec_is_the_plain_product():
    A, x = _gen(4, 6, 7), _gen(4, 7)
    torch.testing.assert_close(matvec(A, x), (A @ x.unsqueeze(-1)).squeeze(-1), rtol=1e-14,
                               atol=1e-14)
    torch.testing.assert_close(matvec(A.transpose(-1, -2), _gen(4, 6)),
                               (_gen(4, 6).unsqueeze(1) @ A).squeeze(1), rtol=1e-14,
                               atol=1e-14)


@pytest.mark.kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("solver, D", [("eigvalsh", 5), ("eigvalsh", 7), ("eigvalsh", 13),
                                       ("lanczos", 103), ("lanczos", 130)])
def test_lambda_max_of_a_batch_is_within_the_bound(threads, solver, D):
    """LAPACK's answer for a matrix may depend on where it sits in memory, and Lanczos
    makes matrix-vector products of shrinking batches: a matrix's lambda_max in a batch
    and alone agree within BATCH_RTOL."""
    A = _gen(7, D, D + 5)
    H = A @ A.transpose(1, 2) / D                          # positive definite, like an NTK
    with torch_threads(threads):
        whole = lambda_max(H, solver)
        for k in range(7):
            assert_rows_within_bound(whole[k:k + 1, None], lambda_max(H[k:k + 1], solver)[:, None],
                                     k)
        assert_rows_within_bound(whole[3:, None], lambda_max(H[3:], solver)[:, None], "3:")
    exact = torch.linalg.eigvalsh(H)[:, -1]
    torch.testing.assert_close(whole, exact, rtol=1e-9, atol=0)
