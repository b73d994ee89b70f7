"""lambda_max of a batch of NTKs: the sharpness ``eta lambda_max(H_t)``
(docs/theory.md §1, eq. 4).

Two solvers, chosen by ``sweep.sharpness_solver``:

* ``eigvalsh``: the full symmetric eigendecomposition, O(D^3) per grid point;
* ``lanczos``: batched Lanczos iteration on the matrix-vector products ``H q``,
  O(k D^2) per grid point for k iterations, with full reorthogonalisation: the
  one Lanczos of the package, :func:`phasekit.engine.hessian.lanczos_top`, on the
  operator ``q -> H q / max|H_ij|`` (scaled so that no norm under- or overflows)
  from a fixed start vector.  A run stops iterating once its top Ritz pair
  ``(theta_1, y)`` has residual ``r = |H y - theta_1 y| = beta_k |e_k . s|`` at most
  ``rtol * max_i |theta_i|`` (:data:`LANCZOS_RTOL`); then an eigenvalue of H lies
  within ``r`` of theta_1 (for a symmetric matrix the residual bounds the distance
  to the spectrum), and theta_1 <= lambda_max since Ritz values are Rayleigh
  quotients.  For an NTK, which is positive semi-definite, every Ritz value lies in
  ``[0, theta_1]``, so ``max_i |theta_i| = theta_1`` and the test is ``r <= rtol *
  theta_1``, a relative accuracy of lambda_max itself (rounding can move a Ritz
  value below 0, but only by the order of ``eps ||H|| = eps lambda_max``, while
  ``theta_1`` is within ``rtol`` of lambda_max when the test passes).  A matrix
  that has not met the tolerance after ``min(D, max_iter)`` iterations falls back
  to ``eigvalsh``; after D iterations the Krylov space is the whole space and
  Lanczos is exact.
* ``auto``: ``eigvalsh`` for D <= :data:`LANCZOS_ABOVE_D`, else ``lanczos``.

``lambda0 = lambda_max(H_0)``, which sets every learning rate (eta = c / lambda0),
is always computed with ``eigvalsh``.

A model that offers NTK-vector products (:meth:`phasekit.model.Model.ntk_operator`)
never has its NTK matrix formed for these: :func:`operator_lambda_max` runs Lanczos
on the products (:func:`phasekit.engine.hessian.top_eigenvalue`, the same residual
test at the tolerances above, with an exact fallback from ``D`` products for
``D <= DENSE_FALLBACK_P``), for ``lambda0`` and the sharpness alike, whatever
``sweep.sharpness_solver`` says.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from phasekit.config.resolve import LANCZOS_ABOVE_D
from phasekit.engine.batched import matvec
from phasekit.engine.hessian import lanczos_top, top_eigenvalue

#: relative residual at which a Lanczos Ritz value counts as converged, per dtype
LANCZOS_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}

#: most Lanczos iterations before falling back to eigvalsh
LANCZOS_MAX_ITER = 200


def eigvalsh_max(H: torch.Tensor) -> torch.Tensor:
    """lambda_max of each finite symmetric matrix of ``H`` (G, D, D) by ``eigvalsh``."""
    if H.shape[-1] == 1:
        return H[:, 0, 0].clone()
    return torch.linalg.eigvalsh(H)[..., -1]


def _start_vector(G: int, D: int, dtype, device) -> torch.Tensor:
    """A fixed start vector (the same on every device): the normalised mean direction,
    which an NTK's top eigenvector is usually close to, plus a seeded random part so
    that no eigenvector is orthogonal to it."""
    gen = torch.Generator().manual_seed(0)
    q = 1.0 + torch.randn(D, generator=gen, dtype=torch.float64)
    q = (q / torch.linalg.vector_norm(q)).to(device, dtype)
    return q.expand(G, D).clone()


def _dense_operator(A: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The operator ``(v, rows) -> A[rows] v`` of :func:`phasekit.engine.hessian.lanczos_top`
    for the matrices ``A`` (G, D, D); ``A[rows]`` is copied once each time the rows
    change (as runs converge), not at every product."""
    held: dict[str, torch.Tensor] = {}

    def operator(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if held.get("rows") is not rows:
            held["rows"], held["A"] = rows, (A if rows.shape[0] == A.shape[0] else A[rows])
        return matvec(held["A"], v)

    return operator


def lanczos_max(H: torch.Tensor, rtol: float | None = None,
                max_iter: int = LANCZOS_MAX_ITER) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda_max of each symmetric matrix of ``H`` (G, D, D) by batched Lanczos
    (:func:`phasekit.engine.hessian.lanczos_top` on the products ``H q``).

    Returns ``(lambda_max, iterations)``: the top Ritz value of each matrix (see the
    module docstring for the residual test and the eigvalsh fallback) and the number
    of Lanczos iterations it took (0 where eigvalsh was used).
    """
    G, D, _ = H.shape
    rtol = LANCZOS_RTOL.get(H.dtype, 1e-10) if rtol is None else rtol
    # iterate on H / max|H_ij| (no under- or overflow in the norms); results are scaled back
    scale = H.abs().amax(dim=(-1, -2))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    res = lanczos_top(_dense_operator(H / scale[:, None, None]),
                      _start_vector(G, D, H.dtype, H.device), rtol, max_iter)
    out = res.value * scale
    iters = torch.where(res.converged, res.iterations, 0)
    missing = ~res.converged.to(H.device)
    if bool(missing.any()):
        out[missing] = eigvalsh_max(H[missing])                # not converged: exact fallback
    return out, iters


def lambda_max(H: torch.Tensor, solver: str = "eigvalsh") -> torch.Tensor:
    """lambda_max of each symmetric D x D matrix of ``H`` (G, D, D); NaN where H is
    not finite.  ``solver`` is one of :data:`phasekit.config.resolve.SOLVERS` (module
    docstring)."""
    out = torch.full(H.shape[:1], math.nan, dtype=H.dtype, device=H.device)
    ok = torch.isfinite(H).all(-1).all(-1)
    if not bool(ok.any()):
        return out
    D = H.shape[-1]
    if solver == "auto":
        solver = "lanczos" if D > LANCZOS_ABOVE_D else "eigvalsh"
    if solver == "lanczos" and D > 1:
        out[ok] = lanczos_max(H[ok])[0]
    else:
        out[ok] = eigvalsh_max(H[ok])
    return out


#: what the error of unconverged NTK-vector products suggests
OPERATOR_ADVICE = "use sweep.dtype = \"float64\" if it is float32, or fewer training points"


def operator_lambda_max(product: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                        what: str) -> torch.Tensor:
    """lambda_max of the NTK of every row from its NTK-vector products ``product``
    (``u (G, D) -> H u``), ``z`` (G, D) giving the shape (module docstring); NaN in a
    row whose products are not finite.  ``what`` names the model for an error."""
    return top_eigenvalue(product, z, f"the NTK of {what}", LANCZOS_RTOL.get(z.dtype),
                          advice=OPERATOR_ADVICE)


def initial_lambda_max(H0: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
                       z0: torch.Tensor | None = None, what: str = "the model") -> float:
    """lambda_0 = lambda_max(H_0) of one seed from its NTK at initialisation: the matrix
    ``H0`` (D, D) by ``eigvalsh``, or NTK-vector products ``H0`` (``u (1, D) -> H_0 u``,
    with the outputs ``z0`` (1, D)) by :func:`operator_lambda_max` (module docstring);
    NaN where H_0 is not finite.  The one place lambda_0 is computed: it sets every
    learning rate, eta = c / lambda_0."""
    if callable(H0):
        return float(operator_lambda_max(H0, z0, what)[0])
    return float(lambda_max(H0[None], "eigvalsh")[0])
