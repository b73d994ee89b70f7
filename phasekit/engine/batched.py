"""Matrix products whose every row comes out the same whatever the batch size.

A grid batch shrinks as runs stop, and with several seeds in one batch a run
shares it with other seeds' runs; for the results not to depend on either, each
row of a product must be computed the same way for a batch of one row as for
many.  torch's CPU batched products (``bmm``, ``matmul`` of two 3-D tensors)
are, as long as every product in the batch is a matrix-matrix one (measured
with MKL, 1 and 2 threads), with two exceptions:

* a product whose result is one vector (a batch of matrix-vector products of
  batch size one, a 2-D product with one row or one column) goes to a
  matrix-vector kernel whose summation order differs;
* a 2-D product of a batch of rows with a shared matrix, and ``matmul`` of a
  shared 2-D matrix with a 3-D batch (which torch folds into one 2-D product),
  are single products whose row count grows with the batch, and their rounding
  depends on it.

The functions here avoid both: vectors are padded with a zero column (or row)
so that the matrix-matrix kernel runs for every batch size (the matrix is read
once either way), and a shared matrix is expanded so that each row has its own
product of a fixed shape.  ``tests/test_batched.py`` checks the invariance.
"""

from __future__ import annotations

import torch


def matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for a batch: ``A`` (..., M, K), ``x`` (..., K) -> (..., M)."""
    cols = torch.stack([x, torch.zeros_like(x)], dim=-1)           # (..., K, 2)
    return torch.matmul(A, cols)[..., 0]


def vecmat(x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``x^T A`` for a batch: ``x`` (..., K), ``A`` (..., K, N) -> (..., N)."""
    rows = torch.stack([x, torch.zeros_like(x)], dim=-2)           # (..., 2, K)
    return torch.matmul(rows, A)[..., 0, :]


def rows_mm(w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``w X`` for a batch of row vectors ``w`` (G, K) and one shared matrix ``X`` (K, N)
    -> (G, N).  A 2-D product ``w @ X`` would be one matrix product whose row count is
    the batch size, and its rows' rounding depends on that count; here each row is its
    own (2 x K)(K x N) product."""
    return vecmat(w, X.expand(w.shape[0], -1, -1))


def shared_mm(X: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``X A`` for one shared matrix ``X`` (M, K) and a batch ``A`` (G, K, N) -> (G, M, N),
    as G products of the same shape (``torch.matmul`` would fold the batch into one
    product whose size, and so whose rounding, depends on G)."""
    return torch.matmul(X.expand(A.shape[0], -1, -1), A)


__all__ = ["matvec", "rows_mm", "shared_mm", "vecmat"]
