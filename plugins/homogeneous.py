"""Two-layer homogeneous nets (docs/theory.md §2.4-§2.5): ``homogeneous`` and ``relu``.

``z = v . sigma(U x) / sqrt(n)`` (eq. 7, 53) with the scale-invariant activation
of eq. 8, slopes (a_+, a_-), ``0 <= a_- <= a_+``; the ReLU net is the case
(a_+, a_-) = (1, 0).  The layers, closed-form gradient and NTK (eq. 54),
input-span coordinates and the trivial phase come from
:class:`phasekit_plugins.feedforward.FeedForward`; this module adds the two
models and the docs/theory.md §3 bounds of two-layer nets (:func:`two_layer_bounds`),
which the deep ReLU net with k = 0 shares.
"""

from __future__ import annotations

import torch

from phasekit import hookimpl
from phasekit.errors import ConfigError
from phasekit.model import Bound
from phasekit.options import Option, non_negative, positive

from .feedforward import INPUT_SPAN, SCALE_OPTIONS, FeedForward, NetFeatures, width_option


def two_layer_bounds(model: FeedForward, feats: NetFeatures, theta0: torch.Tensor,
                     lambda0: float) -> list[Bound]:
    """The docs/theory.md §3 bounds of two-layer nets, for a general dataset.

    The paper states eq. 95/102 for the toy point x = 1.  For one point x in R^d
    the same proof runs with ``H <= a_+^2 |x|^2 theta^2 / n`` (Cauchy-Schwarz,
    |U_i . x| <= |U_i| |x|), which is eq. 177 with D = 1, so we implement the
    formulas below.  They are statements about theta_0 itself, whatever distribution
    drew it (``weight_variance``, ``readout_variance``), and in standard
    parameterisation (z = v . sigma(U x), no 1/sqrt(n)) every proof runs unchanged with
    n replaced by the squared layer divisor r^2 = 1 (docs/theory.md §2.6, §3):

    * eq. 95:  eta < 4n / (a_+^2 |x|^2 theta_0^2)         (one point, a_- > 0);
    * eq. 102: eta > 4n / (a_-^2 x^2 theta_0^2)           (one point, d = 1, a_- > 0:
      the lower bound H >= a_-^2 x^2 theta^2 / n needs every weight to see x,
      which fails for d > 1, where weights orthogonal to x never move);
    * eq. 180: eta < 4nD / (a_+^2 lambda_max(X X^T) theta_0^2)  (D > 1, a_- > 0);
      for D = 1 it coincides with our eq. 95;
    * eq. 124: eta < 4 / H_0 (one point, ReLU, a_- = 0): for any x, at t = 0 every
      active unit has sigma = a_+ s so H_0 = a_+^2 |x|^2 theta_(+,par)^2 / n exactly
      (theta_(+,par): active units, U rows projected on x), giving c = eta lambda_0 = 4.
      Its theorem is about the reduced weight norm (:func:`reduced_weight_norm`).

    ReLU nets never get eq. 180 (docs/theory.md §5); deeper nets get no bound.
    """
    if model.hidden_layers:
        return []
    a_plus, a_minus = model.slopes
    n = model.layer_divisor ** 2            # the n of eq. 95/102/180; 1 in standard param.
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


def reduced_weight_norm(model: FeedForward, feats: NetFeatures, theta: torch.Tensor,
                        theta0: torch.Tensor) -> torch.Tensor:
    """``theta_+^2 = |U_+|^2 + |v_+|^2`` over the units active at initialisation,
    ``U_i0 . x >= 0`` (eq. 107-115, P^+ of eq. 112), ``(G,)``, for a two-layer net on
    one point; it obeys eq. 122 and decreases at every step below eq. 124.  ``theta0``
    holds each row's initialisation, ``(G, P)`` like ``theta``."""
    _, _, v = model.unpack(theta)
    s0 = model.propagate(feats, theta0)[1][0][:, 0]                   # U_0 x, (G, n)
    active = (s0 >= 0).to(theta.dtype)
    return ((model.first_layer_row_norms(feats, theta) + v * v) * active).sum(-1)


def two_layer_bound_quantity(model: FeedForward, bound: Bound, feats: NetFeatures,
                             theta: torch.Tensor, theta0: torch.Tensor
                             ) -> torch.Tensor | None:
    """The quantity a bound of :func:`two_layer_bounds` makes monotone: theta_+^2 for
    eq. 124 (eq. 122), theta^2 (``None``: the model's ``weight_norm``) otherwise."""
    if bound.name == "eq124":
        return reduced_weight_norm(model, feats, theta, theta0)
    return None


def _check_slopes(settings: dict) -> None:
    a_plus, a_minus = settings["a_plus"], settings["a_minus"]
    if not 0.0 <= a_minus <= a_plus:
        raise ConfigError(f"model.a_minus must satisfy 0 <= a_minus <= a_plus (eq. 8); got "
                          f"a_minus = {a_minus}, a_plus = {a_plus}")


class TwoLayerNet(FeedForward):
    """A two-layer net (k = 0, eq. 53) with the bounds of :func:`two_layer_bounds`."""

    name = "two_layer"      # not registered; Homogeneous and ReLU are

    def bounds(self, feats, theta0, lambda0):
        """docs/theory.md §3 bounds; see :func:`two_layer_bounds`."""
        return two_layer_bounds(self, feats, theta0, lambda0)

    def bound_quantity(self, bound, feats, theta, theta0):
        """See :func:`two_layer_bound_quantity` (read by :mod:`phasekit.testing`)."""
        return two_layer_bound_quantity(self, bound, feats, theta, theta0)


class Homogeneous(TwoLayerNet):
    """Two-layer homogeneous net ``z = v . sigma(U x) / sqrt(n)`` (eq. 7, 53;
    docs/theory.md §2.4)."""

    name = "homogeneous"
    description = "two-layer net z = v.sigma(Ux)/sqrt(n), sigma of slopes (a_+, a_-) (eq. 53)"
    options = {
        "width": width_option(),
        "a_plus": Option(1.0, "a_+, slope of sigma for s >= 0 (eq. 8)", check=positive),
        "a_minus": Option(0.5, "a_-, slope of sigma for s < 0; 0 <= a_- <= a_+ (eq. 8)",
                          check=non_negative),
        "input_span": INPUT_SPAN,
        **SCALE_OPTIONS,
    }
    homogeneous = True

    @classmethod
    def resolve(cls, settings, data):
        _check_slopes(settings)
        return super().resolve(settings, data)

    @property
    def slopes(self):
        return float(self.settings["a_plus"]), float(self.settings["a_minus"])


class ReLU(TwoLayerNet):
    """Two-layer ReLU net: the homogeneous net with (a_+, a_-) = (1, 0)
    (docs/theory.md §2.5; the slopes of :class:`FeedForward`)."""

    name = "relu"
    description = "two-layer ReLU net z = v.relu(Ux)/sqrt(n) (eq. 7 with a_- = 0)"
    options = {"width": width_option(), "input_span": INPUT_SPAN, **SCALE_OPTIONS}
    homogeneous = True


@hookimpl
def phasekit_register_models(register):
    register(Homogeneous)
    register(ReLU)


__all__ = ["Homogeneous", "ReLU", "TwoLayerNet", "reduced_weight_norm", "two_layer_bound_quantity",
           "two_layer_bounds"]
