"""The deep ReLU net without biases (eq. 193, docs/theory.md §2.5): ``deep_relu``.

``z = n^(-(k+1)/2) v . relu(W_1 relu(... W_k relu(U x))))`` with k = ``hidden_layers``
n x n matrices between the hidden layers (k = 1: the paper's three-layer net).
Everything numerical is :class:`phasekit_plugins.feedforward.FeedForward`'s; for
k = 0 it is the two-layer ReLU net and takes that net's bound (eq. 124).
"""

from __future__ import annotations

from phasekit import hookimpl
from phasekit.options import Option, non_negative

from .feedforward import INPUT_SPAN, SCALE_OPTIONS, FeedForward, width_option
from .homogeneous import two_layer_bound_quantity, two_layer_bounds


class DeepReLU(FeedForward):
    """ReLU MLP without biases, eq. 193; ``hidden_layers`` = k (k = 1: three layers)."""

    name = "deep_relu"
    description = ("ReLU MLP without biases, z = n^(-(k+1)/2) v.relu(W_1 ... relu(Ux)) "
                   "(eq. 193)")
    options = {
        "width": width_option(),
        "hidden_layers": Option(1, "k of eq. 193: n x n weight matrices W_1..W_k (k = 0 is "
                                "the two-layer net, k = 1 the paper's three-layer net)",
                                check=non_negative),
        "input_span": INPUT_SPAN,
        **SCALE_OPTIONS,
    }
    homogeneous = False     # z(l theta) = l^(k+2) z(theta): degree 2 only for k = 0

    def __init__(self, settings, data):
        super().__init__(settings, data)
        self.homogeneous = self.hidden_layers == 0

    @property
    def hidden_layers(self):
        return int(self.settings["hidden_layers"])

    def bounds(self, feats, theta0, lambda0):
        """The two-layer ReLU net's eq. 124 for k = 0 (one point); none for k > 0
        (:func:`phasekit_plugins.homogeneous.two_layer_bounds`)."""
        return two_layer_bounds(self, feats, theta0, lambda0)

    def bound_quantity(self, bound, feats, theta, theta0):
        """theta_+^2 for eq. 124 (read by :mod:`phasekit.testing`)."""
        return two_layer_bound_quantity(self, bound, feats, theta, theta0)


@hookimpl
def phasekit_register_models(register):
    register(DeepReLU)


__all__ = ["DeepReLU"]
