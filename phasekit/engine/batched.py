"""What sharing a batch does to a row's numbers, and the batched matrix-vector product.

A grid batch shrinks as runs stop, and with several seeds in one batch
(``sweep.seed_batch``) a run shares it with other seeds' runs.  torch promises no
batch invariance, and there is none to rely on: a BLAS may block, vectorise or
thread a product differently for one row than for nine (MKL on an AVX-512 Xeon at
two threads: a row of a batched product differed from the same row alone by
2.7e-14), LAPACK's answer for a matrix can depend on where it sits in memory, and
torch splits a long reduction over threads when the rows are few.  Which kernels
run is a property of the BLAS build, the CPU, ``ATEN_CPU_CAPABILITY`` and the
thread count.

The contract is therefore a bound (docs/scale.md, "Batches: several seeds
together"): every value one step computes for a row inside a batch -- outputs on
every split, NTK, gradient, weight norm, the updated parameters -- is within
:data:`BATCH_RTOL` of the same row computed alone, relative to the largest
magnitude of that value over the batch's rows (a row whose values cancel, a
quadratic form near 0, is rounded relative to its terms, not to its value).  The
contract kit's ``stack_seeds`` and ``batching`` checks (:mod:`phasekit.testing`)
test it for each model, and the tests marked ``kernels`` run them under every
kernel family torch can select.
Over a whole run these differences grow with the dynamics, at most to
:func:`run_rtol` (a bound computed from the run's own sharpness and loss; the growth
measured for each built-in family is in docs/scale.md).

Bitwise equality holds only where the same kernels run on the same shapes by
construction, at equal threads: a resumed run against an uninterrupted one (the
config decides every batch, :meth:`phasekit.engine.points.PointEngines.batches`), an axis
point against a separate sweep, Dask against one process.
"""

from __future__ import annotations

import numpy as np
import torch

#: Per step, a row computed in a batch is within this of the same row computed alone,
#: relative to the largest magnitude of the value compared over the batch's rows
#: (outputs, NTK, gradient, weight norm, updated parameters).  Measured at most 2.2e-15 over every
#: built-in family, ATEN_CPU_CAPABILITY, MKL code path and 1-2 threads on an AVX-512
#: EPYC; the Xeon's 2.7e-14 is within it too (docs/scale.md).
BATCH_RTOL = 1e-13

#: Over a run, per-step differences up to BATCH_RTOL stay within BATCH_GROWTH *
#: BATCH_RTOL * G_t (:func:`run_rtol`); the largest factor measured over every built-in
#: family, catapults included, was 528 (docs/scale.md).
BATCH_GROWTH = 1e4


def run_rtol(loss: np.ndarray, sharpness: np.ndarray) -> np.ndarray:
    """How far a run's trajectories may move at each step, relative, when every step of
    it may move by :data:`BATCH_RTOL`: ``BATCH_GROWTH * BATCH_RTOL * G_t`` along the last
    axis (steps 0, 1, 2, ... of a run recorded at every step).

    ``G_t = max(1, A_t / sqrt(M_t / L_0))``: gradient descent's linearisation ``I - eta
    H`` stretches a difference along the NTK's top direction by ``|1 - eta lambda_s|``
    per step, ``A_t = prod_(s<t) max(1, |1 - S_s|)`` with the recorded sharpness ``S``,
    less the growth of the run itself, whose loss rose to ``M_t = max_(s<=t) L_s``: a
    catapult or a divergence stretches the difference and the residual alike (G stays
    near 1), while a run that oscillates at the edge of divergence, ``S`` pinned near 4
    with a bounded loss, stretches the difference alone and G grows ~3x a step.  The
    bound applies to the sharpness and the weight norm relative to their values and to
    the loss relative to ``sqrt(L_t M_t)`` (the residual's scale: L is its square).
    """
    loss, sharpness = np.asarray(loss, float), np.asarray(sharpness, float)
    stretch = np.where(np.isfinite(sharpness), np.maximum(1.0, np.abs(1.0 - sharpness)), 1.0)
    log_a = np.cumsum(np.log(stretch), axis=-1) - np.log(stretch)       # prod over s < t
    finite = np.where(np.isfinite(loss), loss, np.nan)
    peak = np.fmax.accumulate(finite, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.log(np.fmax(peak / finite[..., :1], 1.0))
    log_g = np.clip(log_a - 0.5 * np.nan_to_num(rise), 0.0, 700.0)
    return BATCH_GROWTH * BATCH_RTOL * np.exp(log_g)


def matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` row by row: ``A`` (G, M, K), ``x`` (G, K) -> (G, M), one ``torch.mv`` per
    row.  A batched product with one column (``matmul(A, x[..., None])``) goes to MKL's
    batched matrix product, 4-15x slower than G matrix-vector products at G = 16
    (docs/performance.md)."""
    return torch.stack([torch.mv(a, v) for a, v in zip(A, x, strict=True)])


__all__ = ["BATCH_GROWTH", "BATCH_RTOL", "matvec", "run_rtol"]
