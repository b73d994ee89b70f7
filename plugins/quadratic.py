"""Quadratic models (docs/theory.md §2.1-§2.3): ``quadratic`` and ``quadratic_bias``.

Outputs (eq. 1; docs/theory.md §2.2-§2.3), with theta = (theta_phi, theta_psi)::

    z_alpha = phi_alpha . theta_phi + (zeta/2) theta_psi^T psi_alpha theta_psi

The pure quadratic model is the case n_phi = 0.  phi lives on its own block of
theta, so psi phi = 0 as the paper requires.  With v_alpha = psi_alpha theta_psi
every quantity of a step follows from one matrix product:

* gradient  dz_alpha/dtheta = (phi_alpha, zeta v_alpha)
* NTK       H_ab = (1/D) (phi_a . phi_b + zeta^2 v_a . v_b)   (eq. 4; docs/theory.md §2.3)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from phasekit import hookimpl
from phasekit.dataset import Data
from phasekit.errors import ConfigError
from phasekit.model import Bound, Model
from phasekit.observables import Observable, Snapshot
from phasekit.options import Option, positive, positive_even

ACTIVATIONS = ("identity", "tanh", "relu", "leaky_relu")


# -- meta-feature and feature functions (eq. 184-187) ---------------------------------

def _draw_generator_and_eigenvalues(gen: torch.Generator, n: int, eigen_low: float,
                                    eigen_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One input dimension's draws, in the stream's order: ``B = (b - b^T)/sqrt(2)``
    with ``b`` i.i.d. N(0, 1) (eq. 187), then ``lambda = [pos, -pos]`` with
    ``pos ~ U[eigen_low, eigen_high]`` (eq. 186; docs/theory.md §2.1)."""
    b = torch.randn(n, n, generator=gen, dtype=torch.float64)
    B = b - b.T
    B.div_(math.sqrt(2.0))          # (b - b^T)/sqrt(2), in place
    pos = eigen_low + (eigen_high - eigen_low) * torch.rand(n // 2, generator=gen,
                                                            dtype=torch.float64)
    return B, torch.cat([pos, -pos])


def draw_meta_feature_matrices(gen: torch.Generator, n: int, d: int, eigen_low: float,
                               eigen_high: float) -> torch.Tensor:
    """``W^i = q^T diag(lambda) q`` for i = 1..d, shape ``(d, n, n)`` (eq. 186).

    ``q = expm(B)`` with ``B = (b - b^T)/sqrt(2)`` and ``b`` i.i.d. N(0, 1)
    (eq. 187), an orthogonal matrix.  The n/2 positive eigenvalues are drawn
    from U[eigen_low, eigen_high] and paired with their negatives (docs/theory.md §2.1).
    """
    mats = []
    for _ in range(d):
        B, lam = _draw_generator_and_eigenvalues(gen, n, eigen_low, eigen_high)
        q = torch.linalg.matrix_exp(B)
        w = q.T @ (lam[:, None] * q)
        mats.append(0.5 * (w + w.T))  # exactly symmetric
    return torch.stack(mats)


# -- exp(B) v for a skew-symmetric B without forming exp(B) (eq. 187) --------------------

def _skew_norm_estimate(B: torch.Tensor, v: torch.Tensor, steps: int = 30) -> float:
    """An estimate (from below, converging fast) of ``||B||_2`` for a real skew-symmetric B.

    Lanczos on the Hermitian ``iB`` from a real start vector, with the powers of i
    absorbed: ``B q_j = beta_(j+1) q_(j+1) - beta_j q_(j-1)`` (the diagonal q^T B q
    vanishes), so the Ritz values are the eigenvalues of the symmetric tridiagonal
    matrix with zero diagonal and off-diagonal beta.  The start mixes ``v`` with a
    fixed vector from a private generator (the seed's stream is untouched), so every
    eigenspace of B is seen; full reorthogonalisation; a breakdown means the Krylov
    space is invariant and its Ritz values are then exact.
    """
    n = B.shape[0]
    r = torch.randn(n, generator=torch.Generator().manual_seed(20240187), dtype=B.dtype)
    q = r / r.norm()
    vn = v.norm()
    if vn > 0:
        q = q + v / vn
        q = q / q.norm()
    Q = [q]
    betas: list[float] = []
    prev, beta, scale = torch.zeros_like(q), 0.0, 0.0
    for _ in range(min(n, steps) - 1):
        w = B @ Q[-1]
        scale = max(scale, float(w.norm()))   # ||B q_j|| <= ||B||: the breakdown scale
        w = w + beta * prev
        basis = torch.stack(Q)
        w = w - basis.T @ (basis @ w)         # full reorthogonalisation (twice is enough)
        w = w - basis.T @ (basis @ w)
        beta_next = float(w.norm())
        if beta_next <= 1e-13 * scale:       # invariant Krylov space: exact Ritz values
            break
        betas.append(beta_next)
        prev, beta = Q[-1], beta_next
        Q.append(w / beta_next)
    if not betas:
        return float((B @ Q[0]).norm())
    off = torch.tensor(betas, dtype=torch.float64)
    T = torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(T).abs().max())


def _bessel_j(rho: float, count: int) -> list[float]:
    """``J_0(rho) .. J_(count-1)(rho)`` for rho > 0 by Miller's backward recurrence
    ``J_(k-1) = (2k/rho) J_k - J_(k+1)``, normalised by ``J_0 + 2 sum_k J_(2k) = 1``."""
    top = max(count, _bessel_terms(rho)) + 20           # J_top: negligible (below 1e-18)
    top += top % 2                                      # the sum runs over even indices
    vals = [0.0] * (top + 2)
    vals[top] = 1e-300 if rho < 1e-3 else 1e-30
    for k in range(top, 0, -1):
        vals[k - 1] = 2.0 * k / rho * vals[k] - vals[k + 1]
        if abs(vals[k - 1]) > 1e250:                   # rescale; the tail underflows harmlessly
            vals = [x * 1e-250 for x in vals]
    norm = vals[0] + 2.0 * sum(vals[2:top + 1:2])
    return [x / norm for x in vals[:count]]


def _bessel_terms(rho: float, tol: float = 1e-18) -> int:
    """Terms K of the Jacobi-Anger series with ``2 sum_(k>=K) |J_k(rho)| < tol``, from
    ``|J_k(rho)| <= (rho/2)^k / k!`` (whose ratio falls below 1/2 once k > rho)."""
    k, log_bound = 0, 0.0            # log((rho/2)^k / k!)
    log_half_rho = math.log(rho / 2.0)
    while not (k > rho and log_bound < math.log(tol / 4.0)):
        k += 1
        log_bound += log_half_rho - math.log(k)
    return k


def expm_skew_action(B: torch.Tensor, v: torch.Tensor, rho: float | None = None,
                     rtol: float = 1e-13) -> torch.Tensor:
    """``expm(B) @ v`` for a real skew-symmetric ``B``, never forming ``expm(B)``.

    Chebyshev (Jacobi-Anger) expansion: with ``A = B/rho`` and ``rho >= ||B||_2`` the
    spectrum of ``A`` lies in i[-1, 1], and ``e^(i rho x) = J_0(rho) + 2 sum_k i^k J_k(rho)
    T_k(x)`` on x in [-1, 1] gives, with ``X = -iA`` and ``M_k = i^k T_k(X)``,

        expm(rho A) v = J_0(rho) v + 2 sum_(k>=1) J_k(rho) M_k v,
        M_0 = I, M_1 = A, M_(k+1) = 2 A M_k + M_(k-1)     (real recurrence)

    ``||M_k v|| <= ||v||`` whenever ``rho >= ||B||_2``.  ``rho`` defaults to 1.05 times a
    Lanczos estimate of ``||B||_2`` (``_skew_norm_estimate``).  A posteriori, a growth
    of ``M_k v`` (rho too small) or ``|expm(B) v| != |v|`` beyond ``rtol`` (expm(B) is
    orthogonal) falls back to ``torch.linalg.matrix_exp(B) @ v``.
    """
    vn = float(v.norm())
    if vn == 0.0:
        return v.clone()
    if rho is None:
        rho = 1.05 * _skew_norm_estimate(B, v)
    if rho == 0.0:                   # B = 0 on every direction Lanczos found
        rho = float(B.abs().max()) * B.shape[0]   # >= ||B||_F >= ||B||_2
        if rho == 0.0:
            return v.clone()
    count = _bessel_terms(rho)
    J = _bessel_j(rho, count + 1)
    step = 2.0 / rho                 # M_(k+1) v = (2/rho) B M_k v + M_(k-1) v
    prev, cur = v, B @ v / rho
    out = J[0] * v + (2.0 * J[1]) * cur
    limit = vn * (1.0 + 1e-8)
    ok = True
    for k in range(1, count):
        prev, cur = cur, torch.addmv(prev, B, cur, alpha=step)
        if float(cur.norm()) > limit:
            ok = False
            break
        out.add_(cur, alpha=2.0 * J[k + 1])
    if ok and abs(float(out.norm()) - vn) <= rtol * vn:
        return out
    return torch.linalg.matrix_exp(B) @ v


def activation_fn(name: str, slope: float):
    if name == "identity":
        return lambda s: s
    if name == "tanh":
        return torch.tanh
    if name == "relu":
        return torch.relu
    if name == "leaky_relu":
        return lambda s: torch.nn.functional.leaky_relu(s, slope)
    raise ValueError(f"unknown activation {name!r}")


@dataclass
class FeatureMap:
    """The fixed functions psi(x) and phi(x) of a quadratic model.

    ``psi(x) = g(sum_i x_i W^i / sqrt(d))`` (eq. 185 with the authors' 1/sqrt(d),
    docs/theory.md §2.1), ``g`` applied element-wise; ``phi(x) = U x * phi_scale`` with
    ``phi_scale = 1/sqrt(d n_phi)`` (eq. 184; docs/theory.md §2.1).  A teacher-student
    dataset hands the model its projected maps (eq. 190-191) through this class.
    """

    W: torch.Tensor            # (d, n, n), symmetric
    U: torch.Tensor | None     # (n_phi, d) or None for the pure quadratic model
    activation: str
    slope: float
    phi_scale: float

    @property
    def width(self) -> int:
        return int(self.W.shape[-1])

    @property
    def feature_width(self) -> int:
        return 0 if self.U is None else int(self.U.shape[0])

    def psi(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Meta-features of the rows of ``x``, shape ``(D, n, n)`` (eq. 185)."""
        g = activation_fn(self.activation, self.slope)
        d = x.shape[1]
        W = self.W.to(x)
        out = []
        for start in range(0, x.shape[0], batch):  # bounds the (batch, n, n) temporary
            xb = x[start:start + batch]
            out.append(g(torch.einsum("ai,inm->anm", xb, W) / math.sqrt(d)))
        return torch.cat(out)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Features of the rows of ``x``, shape ``(D, n_phi)`` (eq. 184)."""
        if self.U is None:
            return x.new_zeros(x.shape[0], 0)
        return x @ self.U.to(x).T * self.phi_scale

    def project(self, psi_index: torch.Tensor, phi_index: torch.Tensor | None) -> FeatureMap:
        """The student's maps ``Q psi Q^T`` and ``Q phi`` (eq. 190-191).

        Since ``g`` acts element-wise, restricting ``W`` to the kept coordinates
        and then applying ``g`` equals projecting ``psi`` itself.
        """
        W = self.W[:, psi_index][:, :, psi_index]
        U = None if phi_index is None or self.U is None else self.U[phi_index]
        return FeatureMap(W, U, self.activation, self.slope, self.phi_scale)


@dataclass
class QuadraticFeatures:
    """One seed's fixed objects, on the compute device."""

    zeta: float
    n_phi: int
    psi: dict[str, torch.Tensor]   # split -> (D, n, n); (1, n) eigenvalues if diagonal
    phi: dict[str, torch.Tensor]   # split -> (D, n_phi)
    phi_eff: torch.Tensor | None = None   # eq. 164 (or phi itself for one point)
    #: True when theta_psi lives in the eigenbasis of the single psi (see ``eigenbasis``)
    diagonal: bool = False


def _model_options(with_bias: bool) -> dict[str, Option]:
    opts = {
        "width": Option(1000 if not with_bias else 100,
                        "n (n_psi with bias): number of weights of the quadratic part; even",
                        check=positive_even),
        "zeta": Option(None, "zeta; default sqrt(2/width) (docs/theory.md §2.2)", type=float,
                       check=positive),
        "eigen_low": Option(1.0, "positive eigenvalues of W^i ~ U[eigen_low, eigen_high]",
                            check=positive),
        "eigen_high": Option(1.0, "upper end of the eigenvalue distribution", check=positive),
        "activation": Option("identity", "element-wise g in psi(x) = g(sum_i x_i W^i/sqrt(d))",
                             choices=ACTIVATIONS),
        "leaky_slope": Option(0.01, "negative slope of g = leaky_relu"),
        "eigenbasis": Option("auto", "train in the eigenbasis of psi (exact, O(n) per step "
                             "instead of O(n^2)); possible with one training point and no "
                             "test split; auto = whenever possible", choices=("auto", "on", "off")),
    }
    if with_bias:
        opts["feature_width"] = Option(10, "n_phi: dimension of the linear feature phi(x)",
                                       check=positive)
    return opts


class QuadraticBias(Model):
    """Quadratic model with bias, ``z = phi^T theta + (zeta/2) theta^T psi theta``
    (docs/theory.md §2.3)."""

    name = "quadratic_bias"
    description = "quadratic model with bias: z = phi.theta + (zeta/2) theta^T psi theta"
    options = _model_options(with_bias=True)
    homogeneous = False

    # -- configuration ------------------------------------------------------------
    @classmethod
    def _n_phi(cls, settings: dict) -> int:
        return settings.get("feature_width", 0)

    @classmethod
    def resolve(cls, settings: dict, data: Data) -> dict:
        settings = dict(settings)
        if settings["eigen_low"] > settings["eigen_high"]:
            raise ConfigError(f"model.eigen_low ({settings['eigen_low']}) must not exceed "
                              f"model.eigen_high ({settings['eigen_high']})")
        given = data.extras.get("quadratic_features")
        if given is not None:
            for key, have in (("width", given.width), ("feature_width", given.feature_width)):
                want = settings.get(key, 0)
                if want != have:
                    raise ConfigError(f"model.{key} = {want} does not match the dataset's "
                                      f"student features ({have}); set model.{key} = {have}")
        if settings["zeta"] is None:
            settings["zeta"] = math.sqrt(2.0 / settings["width"])  # docs/theory.md §2.2, §2.3
        possible = data.num_train == 1 and not data.has_test
        if settings["eigenbasis"] == "on" and not possible:
            raise ConfigError("model.eigenbasis = \"on\" needs one training point and no test "
                              "split; use \"auto\" or \"off\"")
        return settings

    def uses_eigenbasis(self) -> bool:
        return self.settings["eigenbasis"] == "on" or (
            self.settings["eigenbasis"] == "auto" and self.data.num_train == 1
            and not self.data.has_test)

    # -- set-up ---------------------------------------------------------------------
    def feature_map(self, gen: torch.Generator) -> FeatureMap:
        given = self.data.extras.get("quadratic_features")
        if given is not None:
            return given
        s = self.settings
        d = self.data.input_dim
        W = draw_meta_feature_matrices(gen, s["width"], d, s["eigen_low"], s["eigen_high"])
        n_phi = self._n_phi(s)
        U = torch.randn(n_phi, d, generator=gen, dtype=torch.float64) if n_phi else None
        scale = 1.0 / math.sqrt(d * n_phi) if n_phi else 0.0
        return FeatureMap(W, U, s["activation"], s["leaky_slope"], scale)

    def _direct_eigenbasis(self) -> bool:
        """Whether psi's eigenbasis is known without an eigendecomposition: with d = 1,
        g = identity and one point x, ``psi = (x/sqrt(d)) W = q^T diag((x/sqrt(d)) lambda) q``
        (eq. 185-186), so its eigenvalues are ``(x/sqrt(d)) lambda`` and its eigenvectors
        the rows of ``q = expm(B)`` (eq. 187)."""
        return (self.uses_eigenbasis() and self.data.extras.get("quadratic_features") is None
                and self.data.input_dim == 1 and self.settings["activation"] == "identity")

    def _setup_direct_eigenbasis(self, gen: torch.Generator, n_phi: int):
        """``(psi eigenvalues, theta0, phi)`` of the eigenbasis path, drawn from the
        stream in the order of ``feature_map`` and ``setup`` (B, lambda; U; theta0) but
        with ``u = q theta_psi = expm(B) theta_psi`` computed as the action of expm(B) on
        one vector: no q, no W, no eigh (eq. 186-187; docs/theory.md §2.1)."""
        s, d = self.settings, self.data.input_dim
        B, lam = _draw_generator_and_eigenvalues(gen, s["width"], s["eigen_low"],
                                                 s["eigen_high"])
        U = torch.randn(n_phi, d, generator=gen, dtype=torch.float64) if n_phi else None
        theta0 = torch.randn(n_phi + s["width"], generator=gen, dtype=torch.float64)
        x = float(self.data.inputs("train")[0, 0])
        # psi = Q diag(ev) Q^T with Q = q^T, so u = Q^T theta_psi = q theta_psi.
        ev = (x / math.sqrt(d)) * lam
        u = expm_skew_action(B, theta0[n_phi:])
        scale = 1.0 / math.sqrt(d * n_phi) if n_phi else 0.0
        # W is never formed: the map is returned for phi(x) only (eq. 184).
        fmap = FeatureMap(torch.empty(d, 0, 0, dtype=torch.float64), U, s["activation"],
                          s["leaky_slope"], scale)
        return ev, torch.cat([theta0[:n_phi], u]), fmap

    def setup(self, seed, device, dtype):
        gen = torch.Generator().manual_seed(seed)
        n_phi = self._n_phi(self.settings)
        splits = ["train"] + (["test"] if self.data.has_test else [])
        diagonal = self.uses_eigenbasis()
        if self._direct_eigenbasis():
            ev, theta0, fmap = self._setup_direct_eigenbasis(gen, n_phi)
            psi = {"train": ev[None]}
        else:
            fmap = self.feature_map(gen)
            theta0 = torch.randn(n_phi + fmap.width, generator=gen, dtype=torch.float64)
            psi = {s: fmap.psi(self.data.inputs(s)) for s in splits}
            if diagonal:
                # One symmetric psi = Q diag(lam) Q^T.  With u = Q^T theta_psi, psi theta =
                # Q(lam u), theta^T psi theta = sum lam u^2 and every inner product is
                # unchanged (Q is orthogonal): z, gradient, NTK and theta^2 are the same,
                # at O(n) per step.
                lam, Q = torch.linalg.eigh(psi["train"][0])
                psi = {"train": lam[None]}
                theta0 = torch.cat([theta0[:n_phi], Q.T @ theta0[n_phi:]])
        psi = {s: p.to(device, dtype) for s, p in psi.items()}
        phi = {s: fmap.phi(self.data.inputs(s)).to(device, dtype) for s in splits}
        feats = QuadraticFeatures(self.settings["zeta"], n_phi, psi, phi, diagonal=diagonal)
        theta0 = theta0.to(device, dtype)
        if n_phi:
            e = _top_eigenvector(self.ntk(feats, theta0[None], None)[0])
            feats.phi_eff = effective(e, phi["train"])  # eq. 164
        return feats, theta0

    # -- numerics -------------------------------------------------------------------
    def _v(self, feats: QuadraticFeatures, theta: torch.Tensor, split: str) -> torch.Tensor:
        """v_alpha = psi_alpha theta_psi, shape (G, D, n); psi is symmetric."""
        psi = feats.psi[split]
        if feats.diagonal:
            return (theta[:, feats.n_phi:] * psi)[:, None, :]
        D, n, _ = psi.shape
        return (theta[:, feats.n_phi:] @ psi.reshape(D * n, n).T).reshape(-1, D, n)

    def forward(self, feats, theta, split="train"):
        v = self._v(feats, theta, split)
        th_psi = theta[:, feats.n_phi:]
        z = 0.5 * feats.zeta * (v * th_psi[:, None, :]).sum(-1)  # docs/theory.md §2.2
        if feats.n_phi:
            z = z + theta[:, :feats.n_phi] @ feats.phi[split].T  # docs/theory.md §2.3
        return z, v

    # -- several seeds in one batch ------------------------------------------------
    def can_stack_seeds(self) -> bool:
        """On one training point (the eigenbasis) a seed's psi is a vector of n
        eigenvalues, cheap to hold per row; on several points it is (D, n, n) and the
        seeds keep batches of their own.  The model with bias keeps them too."""
        return self.uses_eigenbasis() and self._n_phi(self.settings) == 0

    def stack_seeds(self, features, rows):
        first = features[0]
        psi = torch.stack([f.psi["train"][0] for f in features])[rows]        # (G, n)
        return dataclasses.replace(first, psi={"train": psi}, phi=dict(first.phi))

    def take_rows(self, features, keep):
        return dataclasses.replace(features, psi={"train": features.psi["train"][keep]})

    def loss_gradient(self, feats, theta, cache, eps):
        D = eps.shape[-1]
        if feats.diagonal:              # one point: eps_1 v_1, no sum
            grad_psi = feats.zeta / D * (eps.unsqueeze(-1) * cache).sum(1)
        else:
            grad_psi = feats.zeta / D * torch.einsum("ga,gan->gn", eps, cache)
        if not feats.n_phi:
            return grad_psi
        grad_phi = eps @ feats.phi["train"] / D
        return torch.cat([grad_phi, grad_psi], dim=-1)

    def ntk(self, feats, theta, cache):
        v = self._v(feats, theta, "train") if cache is None else cache
        D = v.shape[1]
        if feats.diagonal:              # one point: H = zeta^2 |v|^2, one row-wise reduction
            H = feats.zeta ** 2 * (v * v).sum(-1, keepdim=True) / D      # docs/theory.md §2.2
        else:
            H = feats.zeta ** 2 * (v @ v.transpose(-1, -2)) / D          # docs/theory.md §2.2
        if feats.n_phi:
            phi = feats.phi["train"]
            H = H + (phi @ phi.T / D)[None]                        # docs/theory.md §2.3
        return H

    # -- bounds (docs/theory.md §3) -------------------------------------------------
    def bounds(self, feats, theta0, lambda0):
        psi = feats.psi["train"]
        D = psi.shape[0]
        zeta2 = feats.zeta ** 2
        theta2 = float((theta0 ** 2).sum())
        e = _top_eigenvector(self.ntk(feats, theta0[None], None)[0])
        if feats.diagonal:
            ev = psi[0]
        else:
            psi_eff = psi[0] if D == 1 else effective(e, psi)             # eq. 155 / 165
            ev = torch.linalg.eigvalsh(psi_eff)
        lmax_psi2 = float((ev ** 2).max())
        lmin_psi2 = float((ev ** 2).min())
        if feats.n_phi:
            phi_eff = feats.phi_eff
            phi2 = float((phi_eff ** 2).sum())
            overlap2 = float((phi_eff @ theta0[:feats.n_phi]) ** 2)
            quantity = theta2 + (overlap2 / phi2 if phi2 > 0 else 0.0)    # eq. 79
            eta = 4.0 / (2.0 * phi2 + zeta2 * lmax_psi2 * quantity)
            if D == 1:
                return [Bound("eq77", eta, "catapult", "eq. 77",
                              "theta^2 + (phi.theta)^2/phi^2 decreases below this "
                              "(quadratic model with bias, one point)")]
            return [Bound("eq163", eta, "catapult", "eq. 163",
                          "catapult bound of the quadratic model with bias, several points")]
        if D == 1:
            out = [Bound("eq60", 4.0 / (zeta2 * theta2 * lmax_psi2), "catapult", "eq. 60",
                         "theta^2 decreases at every step below this (pure quadratic)")]
            if lmin_psi2 > 0:
                out.append(Bound("eq68", 4.0 / (zeta2 * theta2 * lmin_psi2), "divergence",
                                 "eq. 68",
                                 "theta^2 increases at every step above this (pure quadratic)"))
            return out
        omega_max = zeta2 / D * float(torch.linalg.eigvalsh((psi @ psi).sum(0)).max())  # eq. 143
        return [
            Bound("method1", 4.0 / (omega_max * theta2), "catapult", "eq. 138",
                  "method 1 catapult bound, 4/(lambda_max(Omega) theta_0^2)"),
            Bound("method2", 4.0 / (zeta2 * theta2 * lmax_psi2), "catapult", "eq. 154",
                  "method 2 catapult bound, 4/(zeta^2 theta_0^2 lambda_max(psi_eff^2))"),
        ]


class Quadratic(QuadraticBias):
    """Pure quadratic model, ``z = (zeta/2) theta^T psi theta`` (docs/theory.md §2.2)."""

    name = "quadratic"
    description = "pure quadratic model: z = (zeta/2) theta^T psi theta"
    options = _model_options(with_bias=False)
    homogeneous = True


def _top_eigenvector(H: torch.Tensor) -> torch.Tensor:
    """Unit top eigenvector e of a symmetric D x D matrix (sign fixed: sum e >= 0)."""
    _, vecs = torch.linalg.eigh(H)
    e = vecs[:, -1]
    return e if e.sum() >= 0 else -e


def effective(e: torch.Tensor, per_point: torch.Tensor) -> torch.Tensor:
    """``D^(-1/2) sum_alpha e_alpha f_alpha`` (eq. 155, 164, 165)."""
    return torch.tensordot(e, per_point, dims=([0], [0])) / math.sqrt(per_point.shape[0])


def bias_quantity(snap: Snapshot) -> torch.Tensor:
    """``theta^2 + (phi_eff . theta)^2 / phi_eff^2`` (eq. 79; eq. 167 with e at init)."""
    feats = snap.features
    phi = feats.phi_eff
    theta2 = snap.model.weight_norm(feats, snap.theta)
    phi2 = (phi ** 2).sum()
    if phi2 == 0:
        return theta2
    return theta2 + (snap.theta[:, :feats.n_phi] @ phi) ** 2 / phi2


BIAS_QUANTITY = Observable(
    name="bias_norm",
    long_name="theta^2 + (phi.theta)^2/phi^2, decreasing below the eq. 77 bound",
    compute=bias_quantity,
    applies=lambda model, data: isinstance(model, QuadraticBias) and model._n_phi(
        model.settings) > 0,
    equation="eq. 79 (eq. 81 for its update)",
)


@hookimpl
def phasekit_register_models(register):
    register(Quadratic)
    register(QuadraticBias)


@hookimpl
def phasekit_register_observables(register):
    register(BIAS_QUANTITY)


__all__ = ["FeatureMap", "Quadratic", "QuadraticBias", "QuadraticFeatures",
           "draw_meta_feature_matrices", "effective", "expm_skew_action"]
