"""Networks (SPEC 2.4-2.5): ``homogeneous``, ``relu``, ``deep_relu`` and ``linear_bias``.

All ReLU-family models are one bias-free MLP with L = k + 1 hidden layers of
width n and the scale-invariant activation of eq. 8,

    sigma(s) = a_+ s (s >= 0),  a_- s (s < 0),   sigma'(0) := (a_+ + a_-)/2  (eq. 9),

computed as ``sigma(s) = s sigma'(s)`` with ``sigma'(s) = p + q sign(s)``,
p = (a_+ + a_-)/2, q = (a_+ - a_-)/2, so that autograd (whose d sign(s)/ds is 0)
reproduces the eq. 9 convention exactly, and the slopes computed once serve the
forward pass, the gradient and the NTK.  The output is eq. 193 (eq. 7/53 for k = 0):

    z = n^(-(k+1)/2) v . sigma(W_1 sigma(... W_k sigma(U x))).

Parameters, weights i.i.d. N(0, 1) at init, are flattened as
``theta = (vec U, vec M_1, ..., vec M_k, v)`` with ``M_l = W_(k+1-l)``: the
weight matrices in the order the input meets them (row-major ``vec``).  For
k = 0 this is theta = (vec U, v) of eq. 53.

Numerics use the equivalent per-layer normalisation (sigma is positively
homogeneous, so the n^(-(k+1)/2) can be distributed over the layers)::

    s^1 = U x,  a^l = sigma(s^l),  s^(l+1) = M_l a^l / sqrt(n),  z = v . a^L / sqrt(n).

Exact NTK, layer by layer (no (D, P) Jacobian is formed): with the per-sample
output gradients ``g^L = (v / sqrt(n)) o sigma'(s^L)`` and
``g^(l-1) = (M_(l-1)^T g^l / sqrt(n)) o sigma'(s^(l-1))`` (backpropagation),

    D H_ab = a^L_a.a^L_b / n + sum_(l=2..L) (g^l_a.g^l_b)(a^(l-1)_a.a^(l-1)_b) / n
             + (g^1_a.g^1_b)(x_a.x_b),

each term the Gram matrix of one weight's gradient, dz/dM_(l-1) = g^l (a^(l-1))^T /
sqrt(n) being rank one.  For L = 1 this is exactly eq. 54,
``H_ab = (1/(nD)) [sigma(Ux_a).sigma(Ux_b) + (x_a.x_b)(v o sigma'(Ux_a)).(v o sigma'(Ux_b))]``.
Cost per layer O(G D n^2 + G D^2 n), memory O(G D n); the autograd Jacobian
would hold G D P numbers (P ~ 1.9e6 for width 1024 on 784-pixel images).

Input-span coordinates (exact; ``model.input_span``).  The gradient of the loss
with respect to U is ``sum_a (eps_a/D) g^1_a x_a^T``: its rows lie in the row space
of X (the D x d matrix of training inputs), so gradient descent moves U only
inside that space.  Take an orthonormal basis Q (k x d, k = min(D, d), from the QR
factorisation of X^T; Q^T Q projects onto a space containing the row space) and
split the initial weights ``U_0 = U_0perp + B_0 Q`` with ``B_0 = U_0 Q^T``.  Then
``U_t = U_0perp + B_t Q`` for every t, and since ``X U_0perp^T = 0``

    s^1 = X U_t^T = (X Q^T) B_t^T,

so the network is the same network on the k-dimensional inputs ``x~ = Q x`` with
first-layer weights B (n x k).  Gradient descent on B is gradient descent on U
(the Jacobian is ``J_B = J_U Q^T`` and ``J_U Q^T Q = J_U``), the NTK is unchanged
(``x~_a . x~_b = x_a . x_b``), and nothing is lost:

    theta^2 = |theta_B|^2 + |U_0perp|^2,   U x = B (Q x) + U_0perp x  (other splits),

with ``|U_0perp|^2`` and ``X_test U_0perp^T`` fixed per seed.  For images (d = 784,
D = 128) the first layer's products shrink from D d n to D^2 n per run and step.
``input_span`` defaults to on when D < d; results equal the full coordinates to
rounding (tests/test_networks.py).

Trivial phase (SPEC 1, 5): a converged ReLU net (a_- = 0) is *trivial* when

* some hidden layer is dead: every unit of it has pre-activation s <= 0, hence
  sigma(s) = 0, on every training input -- then z = 0 on the whole training set
  and, for strictly negative pre-activations, every gradient and the NTK vanish
  exactly, so gradient descent can never revive it; or
* the NTK has vanished numerically: ``tr H_t <= 1e-12 lambda_max(H_0)`` (this
  also catches a net whose last live units sit at a pre-activation of ~1e-300).

Nets with a_- > 0 have no trivial phase (``is_trivial`` returns None).

Inputs are used as given; the image datasets already feed x / sqrt(d) (SPEC 2.5,
see ``phasekit_plugins.images``), so the models need no input-scaling option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from phasekit import hookimpl
from phasekit.dataset import Data
from phasekit.model import Bound, Model
from phasekit.observables import Observable, Snapshot
from phasekit.options import ConfigError, Option, non_negative, positive
from phasekit.spectrum import LANCZOS_MAX_ITER

#: relative size of tr H below which a converged ReLU net counts as trivial
TRIVIAL_NTK_RTOL = 1e-12


@dataclass
class NetFeatures:
    """One seed's fixed objects: the inputs on the compute device.

    In input-span coordinates (module docstring) ``x`` holds the reduced inputs
    ``Q x`` (k columns), ``offset`` the fixed first-layer pre-activations
    ``X_split U_0perp^T`` of the splits other than train and ``row_norm_offset``
    the per-unit ``|U_0perp,i|^2``; in full coordinates both are empty / zero.
    """

    x: dict[str, torch.Tensor]          # split -> (D, d), or (D, k) in span coordinates
    gram: torch.Tensor                  # (D, D), x_a . x_b of the training inputs
    lambda0: float = math.nan           # lambda_max(H_0), the trivial criterion's scale
    offset: dict[str, torch.Tensor] = field(default_factory=dict)   # split -> (D_split, n)
    row_norm_offset: torch.Tensor | None = None                     # (n,)
    basis: torch.Tensor | None = None   # Q, (k, d), in span coordinates
    extra: dict = field(default_factory=dict)

    @property
    def weight_norm_offset(self) -> torch.Tensor | float:
        """``|U_0perp|^2``: what theta^2 has outside the stored coordinates."""
        return 0.0 if self.row_norm_offset is None else self.row_norm_offset.sum()


def sigma(s: torch.Tensor, a_plus: float, a_minus: float) -> torch.Tensor:
    """The activation of eq. 8, as ``p s + q |s|`` (exact for ReLU: 0.5 s + 0.5 |s|)."""
    p, q = 0.5 * (a_plus + a_minus), 0.5 * (a_plus - a_minus)
    return p * s + q * s.abs()


def sigma_prime(s: torch.Tensor, a_plus: float, a_minus: float) -> torch.Tensor:
    """sigma'(s) = a_+ (s > 0), a_- (s < 0), (a_+ + a_-)/2 at s = 0 (eq. 9)."""
    p, q = 0.5 * (a_plus + a_minus), 0.5 * (a_plus - a_minus)
    return s.sign().mul_(q).add_(p)


def _is_transformed(t: torch.Tensor) -> bool:
    """True for a tensor wrapped by a torch.func transform (vmap, grad, ...)."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def _inputs(data: Data, device, dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    splits = ["train"] + (["test"] if data.has_test else [])
    x = {s: data.inputs(s).to(device, dtype) for s in splits}
    return x, x["train"] @ x["train"].T


def _width_option(default: int = 1024) -> Option:
    return Option(default, "n, width of every hidden layer", check=positive)


INPUT_SPAN = Option(None, "train the first layer in the span of the training inputs, "
                    "U = U_0perp + B Q (exact, module docstring of phasekit_plugins.networks); "
                    "default: true when num_train < input dimension", type=bool)


def span_basis(x_train: torch.Tensor) -> torch.Tensor:
    """Q (k x d, orthonormal rows, k = min(D, d)) whose row space contains every
    training input: the reduced QR factorisation X^T = Q^T R, in float64."""
    return torch.linalg.qr(x_train.double().T, mode="reduced").Q.T


class FeedForward(Model):
    """Bias-free MLP with scale-invariant activations (module docstring).

    Subclasses define the hidden-layer count and the slopes through
    :meth:`hidden_layers` and :meth:`slopes`.
    """

    name = "feed_forward"   # not registered; the concrete classes below are

    @classmethod
    def resolve(cls, settings, data):
        """Fill in ``input_span``: on when there are fewer training points than input
        dimensions (where it saves work)."""
        out = dict(settings)
        if out.get("input_span") is None:
            out["input_span"] = data.num_train < data.input_dim
        return out

    @property
    def input_span(self) -> bool:
        return bool(self.settings.get("input_span", False))

    @property
    def first_layer_inputs(self) -> int:
        """Columns of the stored first-layer weights: d, or k = min(D, d) in span coordinates."""
        d = self.data.input_dim
        return min(self.data.num_train, d) if self.input_span else d

    # -- architecture --------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self.settings["width"])

    @property
    def hidden_layers(self) -> int:
        """k of eq. 193: weight matrices between hidden layers (L = k + 1 hidden layers)."""
        return 0

    @property
    def slopes(self) -> tuple[float, float]:
        """(a_+, a_-) of eq. 8."""
        return 1.0, 0.0

    @property
    def is_relu(self) -> bool:
        return self.slopes[1] == 0.0

    @property
    def num_layers(self) -> int:
        """L, the number of hidden (activation) layers."""
        return self.hidden_layers + 1

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        n, d = self.width, self.first_layer_inputs
        return [(n, d)] + [(n, n)] * self.hidden_layers + [(n,)]

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor],
                                                   torch.Tensor]:
        """Views ``U (G, n, d)``, ``[M_1 .. M_k] (G, n, n)`` and ``v (G, n)`` of ``theta``
        (in span coordinates the first is B, ``(G, n, k)``)."""
        out, start = [], 0
        for shape in self.parameter_shapes():
            size = math.prod(shape)
            out.append(theta[:, start:start + size].unflatten(1, shape))
            start += size
        if start != theta.shape[-1]:
            raise ValueError(f"theta has {theta.shape[-1]} parameters, expected {start}")
        return out[0], out[1:-1], out[-1]

    # -- set-up ---------------------------------------------------------------------
    def setup(self, seed, device, dtype):
        gen = torch.Generator().manual_seed(seed)
        n, d = self.width, self.data.input_dim
        shapes = [(n, d)] + self.parameter_shapes()[1:]          # U_0 is drawn in full
        pieces = [torch.randn(math.prod(shape), generator=gen, dtype=torch.float64)
                  for shape in shapes]                            # i.i.d. N(0, 1), SPEC 2
        x, gram = _inputs(self.data, device, dtype)
        feats = NetFeatures(x, gram)
        if self.input_span:                                      # module docstring
            U0 = pieces[0].view(n, d)
            Q = span_basis(self.data.inputs("train"))            # (k, d)
            B0 = U0 @ Q.T                                        # (n, k)
            U0_perp = U0 - B0 @ Q
            pieces[0] = B0.flatten()
            feats.basis = Q.to(device, dtype)
            feats.row_norm_offset = (U0_perp * U0_perp).sum(-1).to(device, dtype)
            for split in x:
                inputs = self.data.inputs(split).double()
                feats.x[split] = (inputs @ Q.T).to(device, dtype)
                if split != "train":                             # X U_0perp^T = 0 on train
                    feats.offset[split] = (inputs @ U0_perp.T).to(device, dtype)
        theta0 = torch.cat(pieces).to(device, dtype)
        H0 = self.ntk(feats, theta0[None], None)[0]
        feats.lambda0 = float(torch.linalg.eigvalsh(H0)[-1]) if torch.isfinite(H0).all() \
            else math.nan
        return feats, theta0

    # -- numerics -------------------------------------------------------------------
    def propagate(self, feats, theta, split="train"
                  ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor],
                             list[torch.Tensor]]:
        """``(z, [s^1..s^L], [a^1..a^L], [sigma'(s^1)..sigma'(s^L)])`` on ``split``: eq. 193
        (eq. 53 for k = 0) with the per-layer normalisation of the module docstring; layer 1
        is next to the input.  ``a = s sigma'(s)`` equals sigma(s) (eq. 8) and, since the
        derivative of sign is 0, autograd differentiates it to sigma'(s) with eq. 9 at 0."""
        a_plus, a_minus = self.slopes
        U, Ms, v = self.unpack(theta)
        rn = math.sqrt(self.width)
        s = [torch.matmul(feats.x[split], U.transpose(-1, -2))]     # s^1 = U x, (G, D, n)
        if split in feats.offset:                                   # + U_0perp x (span coords)
            s[0] = s[0].add_(feats.offset[split])
        slope = [sigma_prime(s[0], a_plus, a_minus)]
        a = [s[0] * slope[0]]                                       # sigma(s) = s sigma'(s)
        for M in Ms:                                                # s^(l+1) = M_l a^l/sqrt n
            s.append(torch.matmul(a[-1], M.transpose(-1, -2)).div_(rn))
            slope.append(sigma_prime(s[-1], a_plus, a_minus))
            a.append(s[-1] * slope[-1])
        z = torch.matmul(a[-1], v.unsqueeze(-1)).squeeze(-1) / rn  # z = v . a^L / sqrt n
        return z, s, a, slope

    def forward(self, feats, theta, split="train"):
        """z of eq. 193 (eq. 53 for k = 0).

        On the training split the cache holds every layer's pre-activations and
        activations; on another split (only outputs are needed there) it is empty.
        The result is remembered for the same, unmodified ``theta`` tensor (outside
        autograd), so the observables of one step -- test loss, accuracy and
        generalisation gap, sparsity -- share one pass over each split.
        """
        memo_ok = not theta.requires_grad and not _is_transformed(theta)
        if memo_ok:
            memo = self.__dict__.setdefault("_memo", {}).get(split)
            if memo is not None and memo[0] is theta and memo[1] == theta._version:
                return memo[2], memo[3]
        z, s, a, slope = self.propagate(feats, theta, split)
        cache = ({"split": split, "s": s, "a": a, "slope": slope}
                 if split == "train" else {"split": split})
        if memo_ok:
            self._memo[split] = (theta, theta._version, z, cache)
        return z, cache

    def _output_gradients(self, theta: torch.Tensor, cache: dict) -> list[torch.Tensor]:
        """``g^l = dz/ds^l`` per sample, ``[g^1, ..., g^L]`` each (G, D, n) (backprop)."""
        if "g" in cache:
            return cache["g"]
        a_plus, a_minus = self.slopes
        _, Ms, v = self.unpack(theta)
        rn = math.sqrt(self.width)
        slope = cache["slope"]                                      # sigma'(s^l)
        g = [slope[-1] * (v / rn).unsqueeze(1)]
        for layer in range(self.num_layers - 1, 0, -1):            # l = L .. 2
            back = torch.matmul(g[0], Ms[layer - 1]).div_(rn)      # M_(l-1)^T g^l / sqrt n
            g.insert(0, back.mul_(slope[layer - 1]))
        cache["g"] = g
        return g

    def _cache(self, feats, theta, cache):
        if cache is None or cache.get("split") != "train":
            _, cache = self.forward(feats, theta)
        return cache

    def loss_gradient(self, feats, theta, cache, eps):
        """``(1/D) sum_a eps_a dz_a/dtheta`` by backpropagation (eq. 55-56 for k = 0)."""
        cache = self._cache(feats, theta, cache)
        g = self._output_gradients(theta, cache)
        a = cache["a"]
        rn = math.sqrt(self.width)
        w = (eps / eps.shape[-1]).unsqueeze(-1)                    # eps_a / D, (G, D, 1)
        grads = [torch.matmul((w * g[0]).transpose(-1, -2), feats.x["train"])]   # dL/dU
        for layer in range(1, self.num_layers):                    # dL/dM_l
            grads.append(torch.matmul((w * g[layer]).transpose(-1, -2), a[layer - 1]) / rn)
        grads.append((w * a[-1]).sum(1) / rn)                      # dL/dv
        return torch.cat([gr.flatten(1) for gr in grads], dim=1)

    def descend(self, feats, theta, cache, eps, eta):
        """The gradient step of :meth:`loss_gradient`, fused into in-place batched products
        on each weight's view of ``theta`` (no (G, P) gradient is formed)."""
        cache = self._cache(feats, theta, cache)
        g = self._output_gradients(theta, cache)        # all from the pre-update weights
        a = cache["a"]
        U, Ms, v = self.unpack(theta)
        rn = math.sqrt(self.width)
        w = (eps * (eta / eps.shape[-1])[:, None]).unsqueeze(-1)   # eta eps_a / D, (G, D, 1)
        x = feats.x["train"]
        if x.shape[-1] < self.width:       # weight the (D, k) inputs, not the (D, n) g^1
            U.baddbmm_(g[0].transpose(-1, -2), w * x, alpha=-1.0)                 # dL/dU
        else:
            U.baddbmm_((w * g[0]).transpose(-1, -2), x.expand(theta.shape[0], -1, -1),
                       alpha=-1.0)
        for layer in range(1, self.num_layers):                                   # dL/dM_l
            Ms[layer - 1].baddbmm_((w * g[layer]).transpose(-1, -2), a[layer - 1],
                                   alpha=-1.0 / rn)
        v.unsqueeze(1).baddbmm_(w.transpose(-1, -2), a[-1], alpha=-1.0 / rn)      # dL/dv

    def ntk(self, feats, theta, cache):
        """Exact NTK (eq. 4), layer-wise closed form (module docstring; eq. 54 for k = 0)."""
        cache = self._cache(feats, theta, cache)
        g = self._output_gradients(theta, cache)
        a = cache["a"]
        n = self.width
        D = a[0].shape[1]

        def gram(t: torch.Tensor) -> torch.Tensor:
            return torch.matmul(t, t.transpose(-1, -2))

        H = gram(a[-1]) / n                                        # from v
        for layer in range(1, self.num_layers):                    # from M_l
            H = H + gram(g[layer]) * gram(a[layer - 1]) / n
        H = H + gram(g[0]) * feats.gram                            # from U
        return H / D

    def weight_norm(self, feats, theta):
        """``theta^2`` of the full parameters; in span coordinates ``|theta_B|^2 +
        |U_0perp|^2`` (module docstring)."""
        return super().weight_norm(feats, theta) + feats.weight_norm_offset

    def first_layer_row_norms(self, feats, theta) -> torch.Tensor:
        """``|U_i|^2`` per hidden unit of the first layer, ``(G, n)``, in either coordinates."""
        U, _, _ = self.unpack(theta)
        norms = (U * U).sum(-1)
        return norms if feats.row_norm_offset is None else norms + feats.row_norm_offset

    def memory_per_point(self, feats, theta0):
        """Peak bytes per grid point of a step (for ``sweep.memory_budget``): the training
        cache (s, a, sigma' and g of every layer, D x n each) with two D x n temporaries
        of the gradient step; a forward pass over the largest other split (s, a, sigma'
        per layer, alive while the observables run); the NTK with its layer Grams and
        the Lanczos basis; theta, the expanded copy and the update's operands."""
        n, L = self.width, self.num_layers
        D = feats.x["train"].shape[0]
        other = max((3 * L * x.shape[0] * n for s, x in feats.x.items() if s != "train"),
                    default=0)
        ntk = (2 * L + 2) * D * D + D * min(D, LANCZOS_MAX_ITER)
        numbers = (4 * L + 2) * D * n + other + ntk + 4 * theta0.numel()
        return numbers * theta0.element_size()

    def hidden_preactivations(self, feats, theta, split="train") -> list[torch.Tensor]:
        """``[s^1, ..., s^L]``, each (G, D, n); layer 1 is the one next to the input."""
        if split == "train":
            return self.forward(feats, theta, split)[1]["s"]
        return self.propagate(feats, theta, split)[1]

    # -- phases and bounds ------------------------------------------------------------
    def is_trivial(self, feats, theta, ntk):
        """A dead ReLU net (module docstring): some layer dead on every training input,
        or ``tr H <= 1e-12 lambda_max(H_0)``.  None for a_- > 0 (no trivial phase)."""
        if not self.is_relu:
            return None
        s = self.hidden_preactivations(feats, theta)
        dead = torch.zeros(theta.shape[0], dtype=torch.bool, device=theta.device)
        for s_l in s:
            dead |= (s_l <= 0).flatten(1).all(-1)
        trace = torch.diagonal(ntk, dim1=-2, dim2=-1).sum(-1)
        vanished = torch.isfinite(trace) & (trace <= TRIVIAL_NTK_RTOL * feats.lambda0)
        return dead | vanished

    def bounds(self, feats, theta0, lambda0):
        """SPEC 3 bounds; see :func:`network_bounds`."""
        return network_bounds(self, feats, theta0, lambda0)


def network_bounds(model: FeedForward, feats: NetFeatures, theta0: torch.Tensor,
                   lambda0: float) -> list[Bound]:
    """The SPEC 3 bounds of two-layer nets, for a general dataset.

    The paper states eq. 95/102 for the toy point x = 1.  For one point x in R^d
    the same proof runs with ``H <= a_+^2 |x|^2 theta^2 / n`` (Cauchy-Schwarz,
    |U_i . x| <= |U_i| |x|), which is eq. 177 with D = 1, so we implement

    * eq. 95:  eta < 4n / (a_+^2 |x|^2 theta_0^2)         (one point, a_- > 0);
    * eq. 102: eta > 4n / (a_-^2 x^2 theta_0^2)           (one point, d = 1, a_- > 0:
      the lower bound H >= a_-^2 x^2 theta^2 / n needs every weight to see x,
      which fails for d > 1, where weights orthogonal to x never move);
    * eq. 180: eta < 4nD / (a_+^2 lambda_max(X X^T) theta_0^2)  (D > 1, a_- > 0);
      for D = 1 it coincides with our eq. 95;
    * eq. 124: eta < 4 / H_0 (one point, ReLU, a_- = 0): for any x, at t = 0 every
      active unit has sigma = a_+ s so H_0 = a_+^2 |x|^2 theta_(+,par)^2 / n exactly
      (theta_(+,par): active units, U rows projected on x), giving c = eta lambda_0 = 4.

    ReLU nets never get eq. 180 (SPEC 5); deeper nets get no bound.
    """
    if model.hidden_layers:
        return []
    a_plus, a_minus = model.slopes
    n = model.width
    D, d = model.data.num_train, model.data.input_dim
    theta2 = float(model.weight_norm(feats, theta0[None])[0])
    if a_minus == 0.0:
        if D != 1:
            return []
        return [Bound("eq124", 4.0 / lambda0, "catapult", "eq. 124",
                      "reduced weight norm theta_+^2 decreases below this (ReLU net, one "
                      "point), eta < 4/H_0")]
    if D == 1:
        x2 = float(feats.gram[0, 0])                                # |x|^2
        out = [Bound("eq95", 4.0 * n / (a_plus ** 2 * x2 * theta2), "catapult", "eq. 95",
                     "theta^2 decreases at every step below this (homogeneous net, one point; "
                     "eta < 4n/(a_+^2 |x|^2 theta_0^2))")]
        if d == 1:
            out.append(Bound("eq102", 4.0 * n / (a_minus ** 2 * x2 * theta2), "divergence",
                             "eq. 102",
                             "theta^2 increases at every step above this (homogeneous net, "
                             "one point; eta > 4n/(a_-^2 x^2 theta_0^2))"))
        return out
    lmax_xx = float(torch.linalg.eigvalsh(feats.gram)[-1])
    return [Bound("eq180", 4.0 * n * D / (a_plus ** 2 * lmax_xx * theta2), "catapult",
                  "eq. 180", "catapult bound of the homogeneous net, several points "
                  "(4nD/(a_+^2 lambda_max(XX^T) theta_0^2))")]


def _check_slopes(settings: dict) -> None:
    a_plus, a_minus = settings["a_plus"], settings["a_minus"]
    if not 0.0 <= a_minus <= a_plus:
        raise ConfigError(f"model.a_minus must satisfy 0 <= a_minus <= a_plus (eq. 8); got "
                          f"a_minus = {a_minus}, a_plus = {a_plus}")


class Homogeneous(FeedForward):
    """Two-layer homogeneous net ``z = v . sigma(U x) / sqrt(n)`` (eq. 7, 53; SPEC 2.4)."""

    name = "homogeneous"
    description = "two-layer net z = v.sigma(Ux)/sqrt(n), sigma of slopes (a_+, a_-) (eq. 53)"
    options = {
        "width": _width_option(),
        "a_plus": Option(1.0, "a_+, slope of sigma for s >= 0 (eq. 8)", check=positive),
        "a_minus": Option(0.5, "a_-, slope of sigma for s < 0; 0 <= a_- <= a_+ (eq. 8)",
                          check=non_negative),
        "input_span": INPUT_SPAN,
    }
    homogeneous = True

    @classmethod
    def resolve(cls, settings, data):
        _check_slopes(settings)
        return super().resolve(settings, data)

    @property
    def slopes(self):
        return float(self.settings["a_plus"]), float(self.settings["a_minus"])


class ReLU(FeedForward):
    """Two-layer ReLU net: the homogeneous net with (a_-, a_+) = (0, 1) (SPEC 2.5)."""

    name = "relu"
    description = "two-layer ReLU net z = v.relu(Ux)/sqrt(n) (eq. 7 with a_- = 0)"
    options = {"width": _width_option(), "input_span": INPUT_SPAN}
    homogeneous = True


class DeepReLU(FeedForward):
    """ReLU MLP without biases, eq. 193; ``hidden_layers`` = k (k = 1: three layers)."""

    name = "deep_relu"
    description = ("ReLU MLP without biases, z = n^(-(k+1)/2) v.relu(W_1 ... relu(Ux)) "
                   "(eq. 193)")
    options = {
        "width": _width_option(),
        "hidden_layers": Option(1, "k of eq. 193: n x n weight matrices W_1..W_k (k = 0 is "
                                "the two-layer net, k = 1 the paper's three-layer net)",
                                check=non_negative),
        "input_span": INPUT_SPAN,
    }
    homogeneous = False     # z(l theta) = l^(k+2) z(theta): degree 2 only for k = 0

    def __init__(self, settings, data):
        super().__init__(settings, data)
        self.homogeneous = self.hidden_layers == 0

    @property
    def hidden_layers(self):
        return int(self.settings["hidden_layers"])


# -- two-layer linear net with output bias (eq. 86) -----------------------------------

class LinearBias(Model):
    """``z = v . (U x) / sqrt(n) + b`` (eq. 86 for x = 1), theta = (vec U, v, b).

    NTK (eq. 87 for one point x = 1):
    ``H_ab = (1/(nD)) [(U x_a).(U x_b) + (x_a . x_b) v^2] + 1/D``.
    It is a quadratic model with bias (eq. 90-91: phi_b = 1, psi couples U and v
    through x, zeta^2 = 1/n), so for one point the eq. 77 bound reads
    ``eta < 4 / (2 + |x|^2 (U^2 + v^2 + 2 b^2) / n)`` (eq. 92; lambda_max(psi^2) = |x|^2)
    and ``theta^2 + b^2`` (eq. 79) decreases below it.
    """

    name = "linear_bias"
    description = "two-layer linear net with output bias, z = v.Ux/sqrt(n) + b (eq. 86)"
    options = {
        "width": _width_option(),
        "bias_init": Option(0.0, "initial output bias b_0 (eq. 93 takes b_0 = 0)"),
    }
    homogeneous = False

    def split(self, theta):
        n, d = int(self.settings["width"]), self.data.input_dim
        U = theta[:, :n * d].unflatten(1, (n, d))
        return U, theta[:, n * d:n * d + n], theta[:, n * d + n]

    def setup(self, seed, device, dtype):
        n, d = int(self.settings["width"]), self.data.input_dim
        gen = torch.Generator().manual_seed(seed)
        U = torch.randn(n * d, generator=gen, dtype=torch.float64)
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        b = torch.tensor([self.settings["bias_init"]], dtype=torch.float64)
        x, gram = _inputs(self.data, device, dtype)
        return NetFeatures(x, gram), torch.cat([U, v, b]).to(device, dtype)

    def forward(self, feats, theta, split="train"):
        U, v, b = self.split(theta)
        h = torch.matmul(feats.x[split], U.transpose(-1, -2))      # (G, D, n), U x
        rn = math.sqrt(int(self.settings["width"]))
        z = torch.matmul(h, v.unsqueeze(-1)).squeeze(-1) / rn + b.unsqueeze(-1)   # eq. 86
        return z, {"split": split, "h": h}

    def loss_gradient(self, feats, theta, cache, eps):
        if cache is None or cache.get("split") != "train":
            _, cache = self.forward(feats, theta)
        U, v, b = self.split(theta)
        rn = math.sqrt(int(self.settings["width"]))
        w = eps / eps.shape[-1]                                     # (G, D)
        grad_v = torch.matmul(w.unsqueeze(1), cache["h"]).squeeze(1) / rn
        grad_U = v.unsqueeze(-1) * torch.matmul(w, feats.x["train"]).unsqueeze(1) / rn
        grad_b = w.sum(-1, keepdim=True)
        return torch.cat([grad_U.flatten(1), grad_v, grad_b], dim=1)

    def ntk(self, feats, theta, cache):
        if cache is None or cache.get("split") != "train":
            _, cache = self.forward(feats, theta)
        _, v, _ = self.split(theta)
        h = cache["h"]
        n, D = int(self.settings["width"]), h.shape[1]
        H = (torch.matmul(h, h.transpose(-1, -2))
             + feats.gram * (v * v).sum(-1)[:, None, None]) / n + 1.0   # eq. 87
        return H / D

    def bounds(self, feats, theta0, lambda0):
        x = feats.x["train"]
        if x.shape[0] != 1:
            return []
        n = int(self.settings["width"])
        b0 = float(theta0[-1])
        w2 = float((theta0[:-1] ** 2).sum())
        x2 = float((x * x).sum())
        return [Bound("eq92", 4.0 / (2.0 + x2 * (w2 + 2.0 * b0 ** 2) / n), "catapult",
                      "eq. 92", "theta^2 + b^2 decreases below this (linear net with bias, "
                      "one point; eq. 77 applied to eq. 86)")]


# -- observables ------------------------------------------------------------------------

def _is_relu_net(model, data) -> bool:
    return isinstance(model, FeedForward) and model.is_relu


def activation_sparsity(snap: Snapshot) -> torch.Tensor:
    """Per hidden layer: the fraction of units that are zero after the ReLU for one
    input, averaged over the training inputs (SPEC 2.5; Fig. 3f).  ``(G, L)``, layer
    1 next to the input.  A unit is zero after the ReLU when its pre-activation is
    ``<= 0``."""
    pre = snap.model.hidden_preactivations(snap.features, snap.theta)
    return torch.stack([(s <= 0).to(snap.theta.dtype).mean(dim=(-1, -2)) for s in pre], -1)


SPARSITY = Observable(
    name="sparsity",
    long_name="activation sparsity: fraction of hidden units that are zero after the ReLU, "
              "per input, averaged over the training inputs",
    compute=activation_sparsity,
    applies=_is_relu_net,
    equation="SPEC 2.5 (Fig. 3f)",
    dims=("layer",),
    coords=lambda model, data: {"layer": list(range(1, model.num_layers + 1))},
)


def _pm1_test_labels(model, data) -> bool:
    return data.has_test and bool((data.y_test.abs() == 1).all())


def test_accuracy(snap: Snapshot) -> torch.Tensor:
    """Fraction of test points with sign(z) = y, labels +/-1 (z = 0 counts as wrong)."""
    z = snap.outputs("test")
    y = snap.data.y_test.to(z)
    return (torch.sign(z) == y).to(z.dtype).mean(-1)


TEST_ACCURACY = Observable(
    name="test_accuracy",
    long_name="test accuracy: fraction of test points with sign(z) equal to the +/-1 label",
    compute=test_accuracy,
    applies=_pm1_test_labels,
    equation="SPEC 4 (two-class images, labels -1/+1)",
)


def _one_point_two_layer_relu(model, data) -> bool:
    return (isinstance(model, FeedForward) and model.is_relu and model.hidden_layers == 0
            and data.num_train == 1)


def reduced_weight_norm(snap: Snapshot) -> torch.Tensor:
    """``theta_+^2 = |U_+|^2 + |v_+|^2`` over the units active at initialisation,
    ``U_i0 . x >= 0`` (eq. 107-115, P^+ of eq. 112); it obeys eq. 122."""
    model, feats = snap.model, snap.features
    _, _, v = model.unpack(snap.theta)
    s0 = model.propagate(feats, snap.theta0[None])[1][0][0, 0]       # U_0 x, (n,)
    active = (s0 >= 0).to(snap.theta.dtype)
    return (model.first_layer_row_norms(feats, snap.theta) + v * v) @ active


REDUCED_WEIGHT_NORM = Observable(
    name="reduced_weight_norm",
    long_name="reduced weight norm theta_+^2 = |u_+|^2 + |v_+|^2 over units active at init",
    compute=reduced_weight_norm,
    applies=_one_point_two_layer_relu,
    equation="eq. 107-123",
)


def linear_bias_norm(snap: Snapshot) -> torch.Tensor:
    """``theta^2 + (phi.theta)^2/phi^2 = theta^2 + b^2`` for eq. 86 (eq. 79)."""
    return (snap.theta * snap.theta).sum(-1) + snap.theta[:, -1] ** 2


LINEAR_BIAS_NORM = Observable(
    name="linear_bias_norm",
    long_name="theta^2 + b^2 of the linear net with bias, decreasing below eq. 92",
    compute=linear_bias_norm,
    applies=lambda model, data: isinstance(model, LinearBias),
    equation="eq. 79 with phi_b = 1 (eq. 91)",
)


@hookimpl
def phasekit_register_models(register):
    register(Homogeneous)
    register(ReLU)
    register(DeepReLU)
    register(LinearBias)


@hookimpl
def phasekit_register_observables(register):
    for obs in (SPARSITY, TEST_ACCURACY, REDUCED_WEIGHT_NORM,
                LINEAR_BIAS_NORM):
        register(obs)


__all__ = ["DeepReLU", "FeedForward", "Homogeneous", "LinearBias", "NetFeatures", "ReLU",
           "network_bounds", "sigma", "sigma_prime"]
