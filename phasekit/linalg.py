"""The numerical tools a model or observable plugin may use, on the public surface:
the batched matrix-vector product over grid rows and the bound within which a row
computed in a batch agrees with the row alone, the NTK's top eigenvalue (the sharpness
solvers of ``sweep.sharpness_solver``) and the loss Hessian's top eigenvalue.

They live in the engine (:mod:`phasekit.engine.batched`, :mod:`phasekit.engine.
spectrum`, :mod:`phasekit.engine.hessian`), which may be rearranged between versions;
a plugin imports them from here.
"""

from __future__ import annotations

from phasekit.engine.batched import BATCH_RTOL, matvec
from phasekit.engine.hessian import hessian_max
from phasekit.engine.spectrum import LANCZOS_MAX_ITER, lambda_max

__all__ = ["BATCH_RTOL", "LANCZOS_MAX_ITER", "hessian_max", "lambda_max", "matvec"]
