"""The feed-forward core shared by the network models (docs/theory.md §2.4-§2.5).

The models ``homogeneous`` and ``relu`` (``phasekit_plugins.homogeneous``) and
``deep_relu`` (``phasekit_plugins.deep_relu``) are all one bias-free MLP with
L = k + 1 hidden layers of width n and the scale-invariant activation of eq. 8,

    sigma(s) = a_+ s (s >= 0),  a_- s (s < 0),   sigma'(0) := (a_+ + a_-)/2  (eq. 9),

computed as ``sigma(s) = s sigma'(s)`` with ``sigma'(s) = p + q sign(s)``,
p = (a_+ + a_-)/2, q = (a_+ - a_-)/2, so that autograd (whose d sign(s)/ds is 0)
reproduces the eq. 9 convention exactly, and the slopes computed once serve the
forward pass, the gradient and the NTK.  The output is eq. 193 (eq. 7/53 for k = 0):

    z = n^(-(k+1)/2) v . sigma(W_1 sigma(... W_k sigma(U x))).

This module holds what they share: the layers (:class:`FeedForward`), the forward
pass, the layer-wise closed-form gradient and NTK, input-span coordinates, the
trivial phase and the memory a step needs.  A model family is a subclass that
fixes the hidden-layer count and the slopes, in its own module with its own
entry point.

Parameters, weights i.i.d. N(0, 1) at init in eq. 193, are flattened as
``theta = (vec U, vec M_1, ..., vec M_k, v)`` with ``M_l = W_(k+1-l)``: the
weight matrices in the order the input meets them (row-major ``vec``).  For
k = 0 this is theta = (vec U, v) of eq. 53.

Numerics use the equivalent per-layer normalisation (sigma is positively
homogeneous, so the n^(-(k+1)/2) can be distributed over the layers)::

    s^1 = U x,  a^l = sigma(s^l),  s^(l+1) = M_l a^l / r,  z = v . a^L / r,

with the layer divisor r = sqrt(n).  Initial scale and parameterisation
(docs/theory.md §2.6; options ``weight_variance`` sigma_w^2, ``readout_variance``
sigma_v^2, ``parameterization``): in NTK parameterisation (eq. 193) r = sqrt(n) and
U, M_l ~ N(0, sigma_w^2), v ~ N(0, sigma_v^2); in standard parameterisation r = 1 and
the 1/sqrt(n) moves into the draw, M_l ~ N(0, sigma_w^2/n), v ~ N(0, sigma_v^2/n),
while U ~ N(0, sigma_w^2) in both (its 1/sqrt(d) is the dataset's input scaling).
theta holds the actual parameters either way, so theta^2 is their norm, and every
formula below holds with r in place of sqrt(n) (n = r^2 in the NTK's divisions).

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

Trivial phase (docs/theory.md §1, §5): a converged ReLU net (a_- = 0) is *trivial* when

* some hidden layer is dead: every unit of it has pre-activation s <= 0, hence
  sigma(s) = 0, on every training input -- then z = 0 on the whole training set
  and, for strictly negative pre-activations, every gradient and the NTK vanish
  exactly, so gradient descent can never revive it; or
* the NTK has vanished numerically: ``tr H_t <= 1e-12 lambda_max(H_0)`` (this
  also catches a net whose last live units sit at a pre-activation of ~1e-300).

Nets with a_- > 0 have no trivial phase (``is_trivial`` returns None).

Inputs are used as given; the image datasets already feed x / sqrt(d) (docs/theory.md
§2.5, see ``phasekit_plugins.images``), so the models need no input-scaling option.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from phasekit.dataset import Data
from phasekit.linalg import LANCZOS_MAX_ITER, matvec
from phasekit.model import TRIVIAL_NTK_RTOL, Model
from phasekit.options import Option, positive

#: bytes of first-layer pre-activations a test-split pass holds at a time (one grid
#: point, a block of test points): small enough to stay in a core's cache share between
#: the product, the ReLU and the reduction (:meth:`FeedForward.split_outputs`)
SPLIT_BLOCK_BYTES = 4 << 20


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
    offset: dict[str, torch.Tensor] = field(default_factory=dict)   # split -> (D_split, n)
    row_norm_offset: torch.Tensor | None = None                     # (n,)
    basis: torch.Tensor | None = None   # Q, (k, d), in span coordinates
    extra: dict = field(default_factory=dict)

    @property
    def weight_norm_offset(self) -> torch.Tensor | float:
        """``|U_0perp|^2``: what theta^2 has outside the stored coordinates (per row when
        seeds share a batch)."""
        return 0.0 if self.row_norm_offset is None else self.row_norm_offset.sum(-1)


def sigma(s: torch.Tensor, a_plus: float, a_minus: float) -> torch.Tensor:
    """The activation of eq. 8, as ``p s + q |s|`` (exact for ReLU: 0.5 s + 0.5 |s|)."""
    p, q = 0.5 * (a_plus + a_minus), 0.5 * (a_plus - a_minus)
    return p * s + q * s.abs()


def sigma_prime(s: torch.Tensor, a_plus: float, a_minus: float) -> torch.Tensor:
    """sigma'(s) = a_+ (s > 0), a_- (s < 0), (a_+ + a_-)/2 at s = 0 (eq. 9)."""
    p, q = 0.5 * (a_plus + a_minus), 0.5 * (a_plus - a_minus)
    return s.sign().mul_(q).add_(p)


def _relu(s: torch.Tensor, a_plus: float) -> torch.Tensor:
    """sigma(s) of eq. 8 for a_- = 0, ``a_+ max(s, 0)``: one pass (s sigma'(s) up to the
    sign of zero)."""
    a = s.clamp_min(0.0)
    return a if a_plus == 1.0 else a.mul_(a_plus)


def _is_transformed(t: torch.Tensor) -> bool:
    """True for a tensor wrapped by a torch.func transform (vmap, grad, ...)."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def net_inputs(data: Data, device, dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The inputs of every split on the device, and the training Gram matrix x_a . x_b."""
    splits = ["train"] + (["test"] if data.has_test else [])
    x = {s: data.inputs(s).to(device, dtype) for s in splits}
    return x, x["train"] @ x["train"].T


def width_option(default: int = 1024) -> Option:
    return Option(default, "n, width of every hidden layer", check=positive)


INPUT_SPAN = Option(None, "train the first layer in the span of the training inputs, "
                    "U = U_0perp + B Q (exact, module docstring of phasekit_plugins.feedforward); "
                    "default: true when num_train < input dimension", type=bool)


WEIGHT_VARIANCE = Option(1.0, "sigma_w^2, initial variance of every weight matrix before the "
                         "readout (U and W_1..W_k; docs/theory.md §2.6): weights ~ "
                         "N(0, sigma_w^2), or N(0, sigma_w^2/n) for W_i in standard "
                         "parameterisation; 1 is eq. 193, 2 is He initialisation",
                         check=positive)
READOUT_VARIANCE = Option(1.0, "sigma_v^2, initial variance of the readout weights v "
                          "(docs/theory.md §2.6): v ~ N(0, sigma_v^2), or N(0, sigma_v^2/n) "
                          "in standard parameterisation; 1 is eq. 193", check=positive)
PARAMETERIZATION = Option("ntk", "where the 1/sqrt(n) of every layer after the first sits "
                          "(docs/theory.md §2.6): 'ntk' in the forward pass (eq. 193), "
                          "'standard' in the initial variance of W_i and v", type=str,
                          choices=("ntk", "standard"))

#: the options of the initial scale and the parameterisation, shared by the network models
SCALE_OPTIONS = {"weight_variance": WEIGHT_VARIANCE, "readout_variance": READOUT_VARIANCE,
                 "parameterization": PARAMETERIZATION}


def layer_divisor(settings) -> float:
    """What every layer after the first divides its output by (docs/theory.md §2.6):
    sqrt(n) in NTK parameterisation (eq. 193 with the n^(-(k+1)/2) spread over the
    layers), 1 in standard parameterisation, where it sits in the initial variance."""
    if settings.get("parameterization", "ntk") == "standard":
        return 1.0
    return math.sqrt(int(settings["width"]))


def initial_stds(settings, hidden_layers: int) -> list[float]:
    """Standard deviations of the initial draws, one per weight matrix in the order of
    theta: ``[U, M_1 .. M_k, v]`` (docs/theory.md §2.6).  U ~ N(0, sigma_w^2) in both
    parameterisations (its 1/sqrt(d) is the dataset's input scaling); M_l ~
    N(0, sigma_w^2 r) and v ~ N(0, sigma_v^2 r), r = 1 (NTK) or 1/n (standard)."""
    sw = math.sqrt(float(settings.get("weight_variance", 1.0)))
    sv = math.sqrt(float(settings.get("readout_variance", 1.0)))
    shrink = layer_divisor(settings) / math.sqrt(int(settings["width"]))   # 1 or 1/sqrt n
    return [sw] + [sw * shrink] * hidden_layers + [sv * shrink]


def span_basis(x_train: torch.Tensor) -> torch.Tensor:
    """Q (k x d, orthonormal rows, k = min(D, d)) whose row space contains every
    training input: the reduced QR factorisation X^T = Q^T R, in float64."""
    return torch.linalg.qr(x_train.double().T, mode="reduced").Q.T


class FeedForward(Model):
    """Bias-free MLP with scale-invariant activations (module docstring).

    Subclasses define the hidden-layer count and the slopes through
    :meth:`hidden_layers` and :meth:`slopes`.
    """

    name = "feed_forward"   # not registered; the model families subclass it

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
    def layer_divisor(self) -> float:
        """sqrt(n) (NTK parameterisation) or 1 (standard): :func:`layer_divisor`."""
        return layer_divisor(self.settings)

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

    def _layout(self) -> tuple[list[tuple[int, int, tuple[int, ...]]], int]:
        """``([(start, size, shape) per weight], P)``, worked out once per model (the
        settings and the data are fixed for its lifetime): :meth:`unpack` runs several
        times per step, and the tail of a sweep is per-step overhead (docs/performance.md)."""
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            pieces, start = [], 0
            for shape in self.parameter_shapes():
                size = math.prod(shape)
                pieces.append((start, size, shape))
                start += size
            layout = self._layout_cache = (pieces, start)
        return layout

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor],
                                                   torch.Tensor]:
        """Views ``U (G, n, d)``, ``[M_1 .. M_k] (G, n, n)`` and ``v (G, n)`` of ``theta``
        (in span coordinates the first is B, ``(G, n, k)``)."""
        pieces, total = self._layout()
        if total != theta.shape[-1]:
            raise ValueError(f"theta has {theta.shape[-1]} parameters, expected {total}")
        out = [theta.narrow(1, start, size).unflatten(1, shape) if theta.stride(-1) != 1
               else theta.narrow(1, start, size).view(theta.shape[0], *shape)
               for start, size, shape in pieces]
        return out[0], out[1:-1], out[-1]

    # -- set-up ---------------------------------------------------------------------
    def setup(self, seed, device, dtype):
        gen = torch.Generator().manual_seed(seed)
        n, d = self.width, self.data.input_dim
        shapes = [(n, d)] + self.parameter_shapes()[1:]          # U_0 is drawn in full
        pieces = [torch.randn(math.prod(shape), generator=gen, dtype=torch.float64)
                  for shape in shapes]             # i.i.d. N(0, 1), docs/theory.md §2
        for piece, std in zip(pieces, initial_stds(self.settings, self.hidden_layers),
                              strict=True):         # the initial scale, docs/theory.md §2.6
            if std != 1.0:
                piece.mul_(std)
        x, gram = net_inputs(self.data, device, dtype)
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
        return feats, torch.cat(pieces).to(device, dtype)

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
        rn = self.layer_divisor
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
        The engine keeps what one step computed: the training cache goes to ``ntk``,
        ``descend``, ``is_trivial`` and the observables (``Snapshot.cache``), the other
        splits' outputs are shared through ``Snapshot.outputs``.
        """
        if split != "train":
            return self.split_outputs(feats, theta, split), {"split": split}
        if theta.requires_grad or _is_transformed(theta):   # autograd: s sigma'(s)
            z, s, a, slope = self.propagate(feats, theta, split)
            return z, {"split": split, "s": s, "a": a, "slope": slope}
        return self._train_pass(feats, theta)

    def _train_pass(self, feats, theta) -> tuple[torch.Tensor, dict]:
        """z and the training cache of :meth:`propagate`, outside autograd, in fewer passes
        over the (G, D, n) layers: for the ReLU family sigma(s) = a_+ max(s, 0) (eq. 8) is
        one pass and the slopes sigma'(s) are not formed (:meth:`_output_gradients` uses
        sign(s) directly); other activations keep ``sigma'(s)`` (it serves the gradient).
        z = v . a^L is one matrix-vector product per row (:func:`phasekit.linalg.matvec`)."""
        a_plus, a_minus = self.slopes
        U, Ms, v = self.unpack(theta)
        rn = self.layer_divisor
        s = [torch.matmul(feats.x["train"], U.transpose(-1, -2))]       # s^1 = U x, (G, D, n)
        if "train" in feats.offset:                                 # (never: X U_0perp^T = 0)
            s[0].add_(feats.offset["train"])
        a: list[torch.Tensor] = []
        slope: list[torch.Tensor | None] = []
        for layer in range(self.num_layers):
            if a_minus == 0.0:                                      # ReLU family, eq. 8
                a.append(_relu(s[-1], a_plus))
                slope.append(None)
            else:
                slope.append(sigma_prime(s[-1], a_plus, a_minus))
                a.append(s[-1] * slope[-1])                         # sigma(s) = s sigma'(s)
            if layer < len(Ms):                                     # s^(l+1) = M_l a^l/sqrt n
                s.append(torch.matmul(a[-1], Ms[layer].transpose(-1, -2)).div_(rn))
        z = matvec(a[-1], v).div_(rn)                               # z = v . a^L / sqrt n
        return z, {"split": "train", "s": s, "a": a, "slope": slope}

    def split_outputs(self, feats, theta, split) -> torch.Tensor:
        """z of eq. 193 on a split other than train, ``(G, D_split)``: the same numbers as
        :meth:`propagate` at the cost of the outputs alone.

        In span coordinates the first layer is ``s^1 = B (Q x) + U_0perp x`` (module
        docstring) with both ``Q x`` and ``U_0perp x`` fixed per seed, so a test split of
        T points costs O(n k T) per call, not O(n d T).  Only z is kept: no slopes, one
        activation tensor per layer, overwritten in place (for ReLU, sigma(s) = a_+ max(s, 0),
        eq. 8).  This is what the test-split observables (test loss, accuracy, gap) share.

        One grid point and one block of :data:`SPLIT_BLOCK_BYTES` of pre-activations at a
        time (512 test points at width 1024), into one reused buffer: the (G, T, n)
        pre-activations of the whole batch (262 MB for 16 runs on 2000 test images) were
        fresh memory at every recorded step, written, clamped and read back from RAM, while
        a block stays in cache between its product, its ReLU and its reduction
        (docs/performance.md).
        """
        if theta.requires_grad or _is_transformed(theta):        # in-place ops below
            return self.propagate(feats, theta, split)[0]
        a_plus, a_minus = self.slopes
        U, Ms, v = self.unpack(theta)
        rn = self.layer_divisor
        x = feats.x[split]
        offset = feats.offset.get(split)            # U_0perp x in span coordinates
        G, T = theta.shape[0], x.shape[0]
        block = max(1, SPLIT_BLOCK_BYTES // (x.element_size() * self.width))
        z = theta.new_empty(G, T)
        first = theta.new_empty(min(block, T), self.width)     # s^1 of one block of points
        for row in range(G):
            # per-row U_0perp x when seeds share the batch (stack_seeds)
            off = offset if offset is None or offset.dim() == 2 else offset[row]
            for lo in range(0, T, block):
                hi = min(lo + block, T)
                if off is not None:                 # s^1 = U_0perp x + B (Q x), one pass
                    s = torch.addmm(off[lo:hi], x[lo:hi], U[row].T, out=first[:hi - lo])
                else:                                                 # s^1 = U x
                    s = torch.mm(x[lo:hi], U[row].T, out=first[:hi - lo])
                for layer in range(self.num_layers):
                    if a_minus == 0.0:                                # ReLU family, eq. 8
                        a = s.clamp_min_(0.0)
                        if a_plus != 1.0:
                            a.mul_(a_plus)
                    else:
                        a = sigma(s, a_plus, a_minus)
                    if layer < len(Ms):                               # s^(l+1) = M_l a^l/sqrt n
                        s = torch.mm(a, Ms[layer][row].T).div_(rn)
                torch.mv(a, v[row], out=z[row, lo:hi])                # v . a^L
        return z.div_(rn)                                             # z = v . a^L / sqrt n

    def _output_gradients(self, theta: torch.Tensor, cache: dict) -> list[torch.Tensor]:
        """``g^l = dz/ds^l`` per sample, ``[g^1, ..., g^L]`` each (G, D, n) (backprop).

        With ``sigma'(s) = p + q sign(s)`` (eq. 9) and p = q = a_+/2 for the ReLU family,
        ``t sigma'(s) = q (t + t sign(s))`` -- the same numbers as multiplying by the
        slopes (a factor 2 and the product by q round once either way) without forming them.
        """
        if "g" in cache:
            return cache["g"]
        a_plus, a_minus = self.slopes
        q = 0.5 * (a_plus - a_minus)
        _, Ms, v = self.unpack(theta)
        rn = self.layer_divisor
        slope, s = cache["slope"], cache["s"]                       # sigma'(s^l) or None
        vr = (v / rn).unsqueeze(1)
        if slope[-1] is None:                                       # ReLU: q v (1 + sign s^L)
            half = vr * q
            g = [torch.addcmul(half, torch.sign(s[-1]), half)]
        else:
            g = [slope[-1] * vr]
        for layer in range(self.num_layers - 1, 0, -1):            # l = L .. 2
            back = torch.matmul(g[0], Ms[layer - 1]).div_(rn)      # M_(l-1)^T g^l / sqrt n
            if slope[layer - 1] is None:
                back.addcmul_(back, torch.sign(s[layer - 1]))
                if q != 1.0:
                    back.mul_(q)
            else:
                back.mul_(slope[layer - 1])
            g.insert(0, back)
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
        rn = self.layer_divisor
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
        rn = self.layer_divisor
        w = eps * (eta / eps.shape[-1])[:, None]                    # eta eps_a / D, (G, D)
        x = feats.x["train"]
        if x.shape[-1] < self.width:       # weight the (D, k) inputs, not the (D, n) g^1
            U.baddbmm_(g[0].transpose(-1, -2), w.unsqueeze(-1) * x, alpha=-1.0)   # dL/dU
        else:
            U.baddbmm_((w.unsqueeze(-1) * g[0]).transpose(-1, -2),
                       x.expand(theta.shape[0], -1, -1), alpha=-1.0)
        for layer in range(1, self.num_layers):                                   # dL/dM_l
            Ms[layer - 1].baddbmm_((w.unsqueeze(-1) * g[layer]).transpose(-1, -2),
                                   a[layer - 1], alpha=-1.0 / rn)
        for row in range(theta.shape[0]):                                         # dL/dv
            v[row].addmv_(a[-1][row].T, w[row], alpha=-1.0 / rn)

    def ntk(self, feats, theta, cache):
        """Exact NTK (eq. 4), layer-wise closed form (module docstring; eq. 54 for k = 0)."""
        cache = self._cache(feats, theta, cache)
        g = self._output_gradients(theta, cache)
        a = cache["a"]
        n = self.layer_divisor ** 2               # n (NTK parameterisation) or 1 (standard)
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

    def hidden_preactivations(self, feats, theta, split="train", cache=None
                              ) -> list[torch.Tensor]:
        """``[s^1, ..., s^L]``, each (G, D, n); layer 1 is the one next to the input.  On
        the training split ``cache`` (``forward``'s, for this ``theta``) saves the pass."""
        if split == "train":
            return self._cache(feats, theta, cache)["s"]
        return self.propagate(feats, theta, split)[1]

    # -- several seeds in one batch ----------------------------------------------------
    def can_stack_seeds(self):
        """Every seed shares the inputs (and, in span coordinates, the basis Q); what
        belongs to a seed -- ``U_0perp x`` of the other splits and ``|U_0perp,i|^2`` --
        becomes per-row (a (T, n) matrix per run on a test split)."""
        return True

    def stack_seeds(self, features, rows):
        first = features[0]

        def per_row(tensors):
            return torch.stack(tensors)[rows]

        return dataclasses.replace(
            first,
            offset={s: per_row([f.offset[s] for f in features]) for s in first.offset},
            row_norm_offset=(None if first.row_norm_offset is None
                             else per_row([f.row_norm_offset for f in features])))

    def take_rows(self, features, keep):
        return dataclasses.replace(
            features,
            offset={s: o[keep] for s, o in features.offset.items()},
            row_norm_offset=(None if features.row_norm_offset is None
                             else features.row_norm_offset[keep]))

    # -- the trivial phase ------------------------------------------------------------
    def is_trivial(self, feats, theta, cache, ntk, lambda0):
        """A dead ReLU net (module docstring): some layer dead on every training input,
        or ``tr H <= 1e-12 lambda_max(H_0)`` with the engine's lambda_0 per row.  None for
        a_- > 0 (no trivial phase)."""
        if not self.is_relu:
            return None
        s = self.hidden_preactivations(feats, theta, cache=cache)
        dead = torch.zeros(theta.shape[0], dtype=torch.bool, device=theta.device)
        for s_l in s:
            dead |= (s_l <= 0).flatten(1).all(-1)
        trace = torch.diagonal(ntk, dim1=-2, dim2=-1).sum(-1)
        vanished = torch.isfinite(trace) & (trace <= TRIVIAL_NTK_RTOL * lambda0)
        return dead | vanished


__all__ = ["FeedForward", "INPUT_SPAN", "NetFeatures", "PARAMETERIZATION", "READOUT_VARIANCE",
           "SCALE_OPTIONS", "WEIGHT_VARIANCE", "initial_stds", "layer_divisor", "net_inputs",
           "sigma", "sigma_prime", "span_basis", "width_option"]
