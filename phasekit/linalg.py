"""The numerical tools a model or observable plugin may use, on the public surface:
batched matrix products over grid rows, the NTK's top eigenvalue (the sharpness
solvers of ``sweep.sharpness_solver``) and the loss Hessian's top eigenvalue.

They live in the engine (:mod:`phasekit.engine.batched`, :mod:`phasekit.engine.
spectrum`, :mod:`phasekit.engine.hessian`), which may be rearranged between versions;
a plugin imports them from here.
"""

from __future__ import annotations

from phasekit.engine.batched import matvec, rows_mm, shared_mm, vecmat
from phasekit.engine.hessian import hessian_max
from phasekit.engine.spectrum import LANCZOS_MAX_ITER, lambda_max

__all__ = ["LANCZOS_MAX_ITER", "hessian_max", "lambda_max", "matvec", "rows_mm", "shared_mm",
           "vecmat"]
