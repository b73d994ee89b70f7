"""Two-layer linear net with output bias (eq. 86, docs/theory.md §2.3): ``linear_bias``.

``z = v . (U x) / sqrt(n) + b``, theta = (vec U, v, b); in standard parameterisation
(docs/theory.md §2.6) ``z = v . (U x) + b`` with v drawn with variance sigma_v^2 / n, and
every formula below holds with the layer divisor r = 1 in place of sqrt(n).  It is a quadratic model
with bias (eq. 90-91: phi_b = 1, psi couples U and v through x, zeta^2 = 1/n), so
it carries the quantity of eq. 79, here ``theta^2 + b^2``, which decreases at every
step below eq. 92 (one point); this module registers the model and that quantity
as the observable ``linear_bias_norm``.
"""

from __future__ import annotations

import torch

from phasekit import hookimpl
from phasekit.linalg import matvec
from phasekit.model import Bound, Model
from phasekit.observables import Observable, Snapshot
from phasekit.options import Option, positive

from .feedforward import (
    PARAMETERIZATION,
    NetFeatures,
    initial_stds,
    layer_divisor,
    net_inputs,
    width_option,
)


class LinearBias(Model):
    """``z = v . (U x) / r + b`` (eq. 86 for x = 1, r = sqrt(n); r = 1 in standard
    parameterisation, :func:`phasekit_plugins.feedforward.layer_divisor`),
    theta = (vec U, v, b), U ~ N(0, sigma_w^2), v ~ N(0, sigma_v^2 r^2 / n).

    NTK (eq. 87 for one point x = 1):
    ``H_ab = (1/(r^2 D)) [(U x_a).(U x_b) + (x_a . x_b) v^2] + 1/D``.
    It is a quadratic model with bias (eq. 90-91: phi_b = 1, psi couples U and v
    through x, zeta^2 = 1/n), so for one point the eq. 77 bound reads
    ``eta < 4 / (2 + |x|^2 (U^2 + v^2 + 2 b^2) / r^2)`` (eq. 92; lambda_max(psi^2) = |x|^2,
    zeta^2 = 1/r^2; the proof holds for any theta_0, whatever variances drew it)
    and ``theta^2 + b^2`` (eq. 79) decreases below it.
    """

    name = "linear_bias"
    description = "two-layer linear net with output bias, z = v.Ux/sqrt(n) + b (eq. 86)"
    options = {
        "width": width_option(),
        "bias_init": Option(0.0, "initial output bias b_0 (eq. 93 takes b_0 = 0)"),
        "weight_variance": Option(1.0, "sigma_w^2, initial variance of the first layer U "
                                  "(docs/theory.md §2.6); 1 is eq. 86", check=positive),
        "readout_variance": Option(1.0, "sigma_v^2, initial variance of v: v ~ "
                                   "N(0, sigma_v^2), or N(0, sigma_v^2/n) in standard "
                                   "parameterisation (docs/theory.md §2.6); 1 is eq. 86",
                                   check=positive),
        "parameterization": PARAMETERIZATION,
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
        sw, sv = initial_stds(self.settings, 0)                     # docs/theory.md §2.6
        U, v = U * sw, v * sv
        b = torch.tensor([self.settings["bias_init"]], dtype=torch.float64)
        x, gram = net_inputs(self.data, device, dtype)
        return NetFeatures(x, gram), torch.cat([U, v, b]).to(device, dtype)

    # The fixed objects are the data alone (every seed's are equal): several seeds share
    # them as they are, and only theta carries the seed.
    def can_stack_seeds(self):
        return True

    def stack_seeds(self, features, rows):
        return features[0]

    def take_rows(self, features, index):
        return features

    def forward(self, feats, theta, split="train"):
        U, v, b = self.split(theta)
        h = torch.matmul(feats.x[split], U.transpose(-1, -2))      # (G, D, n), U x
        rn = layer_divisor(self.settings)
        z = matvec(h, v) / rn + b.unsqueeze(-1)                     # eq. 86
        return z, {"split": split, "h": h}

    def loss_gradient(self, feats, theta, cache, eps):
        if cache is None or cache.get("split") != "train":
            _, cache = self.forward(feats, theta)
        U, v, b = self.split(theta)
        rn = layer_divisor(self.settings)
        w = eps / eps.shape[-1]                                     # (G, D)
        grad_v = matvec(cache["h"].transpose(-1, -2), w) / rn      # h^T w
        grad_U = v.unsqueeze(-1) * (w @ feats.x["train"]).unsqueeze(1) / rn
        grad_b = w.sum(-1, keepdim=True)
        return torch.cat([grad_U.flatten(1), grad_v, grad_b], dim=1)

    def ntk(self, feats, theta, cache):
        if cache is None or cache.get("split") != "train":
            _, cache = self.forward(feats, theta)
        _, v, _ = self.split(theta)
        h = cache["h"]
        n, D = layer_divisor(self.settings) ** 2, h.shape[1]       # r^2 = n or 1
        H = (torch.matmul(h, h.transpose(-1, -2))
             + feats.gram * (v * v).sum(-1)[:, None, None]) / n + 1.0   # eq. 87
        return H / D

    def bounds(self, feats, theta0, lambda0):
        x = feats.x["train"]
        if x.shape[0] != 1:
            return []
        n = layer_divisor(self.settings) ** 2                       # r^2 = n or 1
        b0 = float(theta0[-1])
        w2 = float((theta0[:-1] ** 2).sum())
        x2 = float((x * x).sum())
        return [Bound("eq92", 4.0 / (2.0 + x2 * (w2 + 2.0 * b0 ** 2) / n), "catapult",
                      "eq. 92", "theta^2 + b^2 decreases below this (linear net with bias, "
                      "one point; eq. 77 applied to eq. 86)")]

    def bound_quantity(self, bound, feats, theta, theta0):
        """eq. 92's quantity, ``theta^2 + b^2`` (eq. 79; read by :mod:`phasekit.testing`)."""
        return bias_quantity(theta)


def bias_quantity(theta: torch.Tensor) -> torch.Tensor:
    """``theta^2 + (phi.theta)^2/phi^2 = theta^2 + b^2`` for eq. 86 (eq. 79), ``(G,)``."""
    return (theta * theta).sum(-1) + theta[:, -1] ** 2


def linear_bias_norm(snap: Snapshot) -> torch.Tensor:
    """The observable of :func:`bias_quantity`."""
    return bias_quantity(snap.theta)


LINEAR_BIAS_NORM = Observable(
    name="linear_bias_norm",
    long_name="theta^2 + b^2 of the linear net with bias, decreasing below eq. 92",
    compute=linear_bias_norm,
    applies=lambda model, data: isinstance(model, LinearBias),
    equation="eq. 79 with phi_b = 1 (eq. 91)",
)


@hookimpl
def phasekit_register_models(register):
    register(LinearBias)


@hookimpl
def phasekit_register_observables(register):
    register(LINEAR_BIAS_NORM)


__all__ = ["LINEAR_BIAS_NORM", "LinearBias", "bias_quantity", "linear_bias_norm"]
