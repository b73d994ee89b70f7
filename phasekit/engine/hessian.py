"""The top eigenvalue of the loss Hessian, ``lambda^H = lambda_max(nabla^2 L)``
(docs/theory.md §1, "Loss Hessian"), by Hessian-vector products and Lanczos.

For the loss ``L = 1/(2D) sum_a (z_a - y_a)^2`` of docs/theory.md §1,

    nabla^2 L = (1/D) J^T J + (1/D) sum_a (z_a - y_a) nabla^2 z_a,

a Gauss-Newton part, whose non-zero eigenvalues are the NTK's (eq. 4: ``J^T J / D``
and ``J J^T / D`` share them), plus a functional part that is indefinite.  Neither
is ever formed: :func:`lanczos_top` runs the Lanczos iteration on any batched
symmetric operator (the package's one Lanczos: the NTK's sharpness solver,
:func:`phasekit.engine.spectrum.lanczos_max`, runs it on dense matrices), and
:func:`hessian_max` feeds it the model's Hessian-vector products
(:meth:`phasekit.model.Model.loss_hvp`, by default reverse-over-reverse autograd of
the model's forward pass), one ``(G, P)`` batch of products per iteration for every
row of ``theta`` at once.

Convergence, per row: after ``k`` iterations the top Ritz pair ``(t_1, y)`` has
residual ``r = |A y - t_1 y| = beta_k |e_k . s|``, and for a symmetric ``A`` an
eigenvalue lies within ``r`` of ``t_1``.  A row stops once ``r <= rtol * ||A||``,
with ``||A||`` estimated by the largest Ritz value in magnitude (the Hessian is
indefinite: its largest-magnitude eigenvalue may be negative, and the products
carry rounding of order ``||A||``, not of ``|t_1|``).  The returned value is the
largest *algebraic* Ritz value.  A row that has not converged after
``min(P, max_iter)`` iterations is handled by :func:`hessian_max`: an exact
eigendecomposition of the ``P x P`` Hessian (formed from ``P`` products) where
``P <= DENSE_FALLBACK_P``, else :class:`HessianError` naming the model -- never a
silently unconverged value.  Rows whose products are not finite (a diverged run)
give NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from phasekit.errors import ConfigError, HessianError

#: relative residual (to the estimated ||A||) at which a Ritz value counts as converged
HESSIAN_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}

#: most Lanczos iterations before the dense fallback (or the error)
HESSIAN_MAX_ITER = 300

#: largest parameter count for which an unconverged row falls back to the dense Hessian
DENSE_FALLBACK_P = 2048


class LanczosResult(NamedTuple):
    value: torch.Tensor        # (G,) largest algebraic Ritz value
    residual: torch.Tensor     # (G,) its residual bound |A y - value y|
    iterations: torch.Tensor   # (G,) iterations made, on the CPU
    converged: torch.Tensor    # (G,) bool, on the CPU


def start_vectors(G: int, P: int, dtype, device) -> torch.Tensor:
    """A fixed, seeded unit start vector (the same on every device), one copy per row."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(P, generator=gen, dtype=torch.float64)
    q = (q / torch.linalg.vector_norm(q)).to(device, dtype)
    return q.expand(G, P).clone()


def _ritz(alphas: list[torch.Tensor], betas: list[torch.Tensor]
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the tridiagonal ``T_k``, per row."""
    T = torch.diag_embed(torch.stack(alphas, -1))
    if betas:
        off = torch.stack(betas, -1)
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return torch.linalg.eigh(T)


def lanczos_top(operator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                start: torch.Tensor, rtol: float | None = None,
                max_iter: int = HESSIAN_MAX_ITER) -> LanczosResult:
    """Largest algebraic eigenvalue of ``G`` symmetric ``P x P`` operators by batched
    Lanczos with full reorthogonalisation (module docstring for the stopping rule).

    ``operator(v, rows)`` returns the products ``A_r v_r`` for a ``(g, P)`` batch of
    vectors ``v`` and the long tensor ``rows`` (``(g,)``, on ``start``'s device) naming
    which of the ``G`` operators each row belongs to: rows leave the batch as they
    converge.  Any symmetric operator serves -- loss Hessians (:func:`hessian_max`),
    Gauss-Newton or NTK-vector products without a Jacobian
    (:func:`gauss_newton_operator`), dense NTK matrices
    (:func:`phasekit.engine.spectrum.lanczos_max`).  ``start`` (G, P) holds unit start vectors.
    """
    G, P = start.shape
    dtype, device = start.dtype, start.device
    rtol = HESSIAN_RTOL.get(dtype, 1e-10) if rtol is None else rtol
    value = torch.full((G,), math.nan, dtype=dtype, device=device)
    residual = torch.full((G,), math.nan, dtype=dtype, device=device)
    iters = torch.zeros(G, dtype=torch.int64)
    converged = torch.zeros(G, dtype=torch.bool)
    todo = torch.arange(G, device=device)
    q = start
    basis, alphas, betas = [q], [], []
    for k in range(min(P, max_iter)):
        w = operator(q, todo)
        alphas.append((q * w).sum(-1))
        V = torch.stack(basis, dim=-1)                                 # (g, P, k+1)
        for _ in range(2):                                  # full reorthogonalisation, twice
            coef = torch.matmul(w.unsqueeze(-2), V)                    # (g, 1, k+1)
            w = w - torch.matmul(coef, V.transpose(-1, -2)).squeeze(-2)
        beta = torch.linalg.vector_norm(w, dim=-1)
        theta, S = _ritz(alphas, betas)
        top = theta[:, -1]
        res = beta * S[:, k, -1].abs()
        norm = theta.abs().amax(-1)
        bad = ~torch.isfinite(res) | ~torch.isfinite(top)          # no honest value: NaN
        done = bad | (res <= rtol * norm) | (k + 1 == P)
        if bool(done.any()):
            idx = todo[done]
            value[idx] = torch.where(bad[done], math.nan, top[done])
            residual[idx] = res[done]
            iters[idx.cpu()] = k + 1
            converged[idx.cpu()] = True
            keep = ~done
            if not bool(keep.any()):
                break
            todo = todo[keep]
            basis = [b[keep] for b in basis]
            alphas = [a[keep] for a in alphas]
            betas = [b[keep] for b in betas]
            w, beta, top, res = w[keep], beta[keep], top[keep], res[keep]
        betas.append(beta)
        q = w / beta.clamp_min(torch.finfo(dtype).tiny)[:, None]
        basis.append(q)
    else:                                   # iterations exhausted: best values, unconverged
        value[todo], residual[todo] = top, res
        iters[todo.cpu()] = min(P, max_iter)
    return LanczosResult(value, residual, iters, converged)


def gauss_newton_operator(model, features: Any, theta: torch.Tensor
                          ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (1/D) J^T (J v)`` for every row of ``theta`` (G, P), by a forward-mode
    product ``J v`` and a reverse-mode ``J^T u`` of the model's forward pass: the
    Gauss-Newton part of the Hessian, whose non-zero eigenvalues are the NTK's
    (eq. 4), without forming ``J``."""

    def outputs(th: torch.Tensor) -> torch.Tensor:
        return model.forward(features, th)[0]

    th = theta.detach()
    with torch.enable_grad():
        z, pullback = torch.func.vjp(outputs, th)

    def product(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            _, jv = torch.func.jvp(outputs, (th,), (v,))
            (out,) = pullback(jv)
        return out / z.shape[-1]

    return product


def _dense_top(product: Callable[[torch.Tensor], torch.Tensor], G: int, P: int, dtype,
               device) -> torch.Tensor:
    """lambda_max of the operators formed column by column (``P`` batched products)."""
    cols = []
    for mu in range(P):
        e = torch.zeros(G, P, dtype=dtype, device=device)
        e[:, mu] = 1.0
        cols.append(product(e))
    A = torch.stack(cols, -1)
    return torch.linalg.eigvalsh(0.5 * (A + A.transpose(-1, -2)))[:, -1]


#: what the error of an unconverged Hessian suggests
HESSIAN_ADVICE = ("use sweep.dtype = \"float64\" if it is float32, or sweep.normalize = "
                  "\"ntk\" and leave hessian_sharpness out of sweep.observables")


def top_eigenvalue(product: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                   what: str, rtol: float | None = None, max_iter: int = HESSIAN_MAX_ITER,
                   advice: str = HESSIAN_ADVICE) -> torch.Tensor:
    """lambda_max of the symmetric operator ``product`` ((G, P) -> (G, P), row ``g``
    acting on row ``g`` alone) for every row of ``theta`` (which gives only the shape,
    dtype and device): :func:`lanczos_top`, with the dense fallback or
    :class:`HessianError` (``what`` names the operator and model, ``advice`` the fix)."""
    G, P = theta.shape

    def operator(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if rows.shape[0] == G:
            return product(v)
        full = v.new_zeros(G, P)                  # rows are independent: zeros elsewhere
        full[rows] = v
        return product(full)[rows]

    res = lanczos_top(operator, start_vectors(G, P, theta.dtype, theta.device), rtol, max_iter)
    if bool(res.converged.all()):
        return res.value
    if P <= DENSE_FALLBACK_P:
        out = res.value.clone()
        missing = ~res.converged.to(theta.device)
        out[missing] = _dense_top(product, G, P, theta.dtype, theta.device)[missing]
        return out
    worst = float((res.residual / res.value.abs())[~res.converged.to(theta.device)].max())
    raise HessianError(
        f"{what}: Lanczos did not converge in {max_iter} iterations (relative residual "
        f"{worst:.1e}, dimension {P}, too large for the exact fallback); {advice}")


def hessian_max(model, features: Any, theta: torch.Tensor, rtol: float | None = None,
                max_iter: int = HESSIAN_MAX_ITER) -> torch.Tensor:
    """``lambda^H = lambda_max(nabla^2 L(theta))`` for every row of ``theta`` (G, P), the
    largest algebraic eigenvalue of the (indefinite) loss Hessian, from the model's
    Hessian-vector products (:meth:`phasekit.model.Model.loss_hvp`).  NaN in a row
    whose products are not finite (a diverged run; rows are independent, so the
    others are unaffected)."""
    product = model.loss_hvp(features, theta)
    return top_eigenvalue(product, theta, f"the loss Hessian of model {model.name!r}",
                          rtol, max_iter)


def c_unit(normalize: str, lambda0, lambda0_hessian):
    """The eigenvalue that ``c`` is measured in, ``eta = c / c_unit`` (docs/theory.md §1):
    ``lambda0`` (the NTK's, ``sweep.normalize = "ntk"``) or ``lambda0_hessian`` (given
    the two names instead, it picks the name)."""
    return lambda0_hessian if normalize == "hessian" else lambda0


def wants_hessian(sweep: dict) -> bool:
    """Whether a sweep computes and stores ``lambda0_hessian``: always when ``c`` is
    normalised by it, else on request (``sweep.hessian``)."""
    return sweep.get("normalize", "ntk") == "hessian" or bool(sweep.get("hessian"))


def initial_hessian_max(model, features: Any, theta0: torch.Tensor, required: bool,
                        where: str) -> float:
    """``lambda^H_0`` of one seed's initialisation ``theta0`` (P,).  ``required`` (c is
    normalised by it): a value that is not finite and positive is refused, since
    ``eta = c / lambda^H_0`` would be undefined or negative; ``where`` names the seed."""
    value = float(hessian_max(model, features, theta0[None])[0])
    if required and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"lambda_max of the loss Hessian at initialisation is {value:.6g} for "
                          f"{where}: eta = eta_lambda0 / lambda0_hessian is undefined "
                          f"(docs/theory.md §1); use sweep.normalize = \"ntk\"")
    return value


__all__ = ["DENSE_FALLBACK_P", "HESSIAN_MAX_ITER", "HESSIAN_RTOL", "LanczosResult", "c_unit",
           "gauss_newton_operator", "hessian_max", "initial_hessian_max", "lanczos_top",
           "start_vectors", "top_eigenvalue", "wants_hessian"]
