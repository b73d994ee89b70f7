"""Observables of the network models (docs/theory.md §2.5, §4): ``sparsity``,
``test_accuracy`` and ``reduced_weight_norm``."""

from __future__ import annotations

import torch

from phasekit import hookimpl
from phasekit.observables import Observable, Snapshot

from .feedforward import FeedForward
from .homogeneous import reduced_weight_norm as reduced_norm


def _is_relu_net(model, data) -> bool:
    return isinstance(model, FeedForward) and model.is_relu


def activation_sparsity(snap: Snapshot) -> torch.Tensor:
    """Per hidden layer: the fraction of units that are zero after the ReLU for one
    input, averaged over the training inputs (docs/theory.md §2.5; Fig. 3f).  ``(G, L)``,
    layer 1 next to the input.  A unit is zero after the ReLU when its pre-activation
    is ``<= 0``."""
    pre = snap.model.hidden_preactivations(snap.features, snap.theta, cache=snap.cache)
    # one reduction per layer over the training cache the step already holds (the count
    # of zeros, summed in theta's dtype, is exact): no forward pass of its own
    return torch.stack([(s <= 0).sum(dim=(-1, -2), dtype=snap.theta.dtype)
                        / (s.shape[-1] * s.shape[-2]) for s in pre], -1)


SPARSITY = Observable(
    name="sparsity",
    long_name="activation sparsity: fraction of hidden units that are zero after the ReLU, "
              "per input, averaged over the training inputs",
    compute=activation_sparsity,
    applies=_is_relu_net,
    equation="docs/theory.md §2.5 (Fig. 3f)",
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
    equation="docs/theory.md §4 (two-class images, labels -1/+1)",
)


def _one_point_two_layer_relu(model, data) -> bool:
    return (isinstance(model, FeedForward) and model.is_relu and model.hidden_layers == 0
            and data.num_train == 1)


def reduced_weight_norm(snap: Snapshot) -> torch.Tensor:
    """``theta_+^2 = |U_+|^2 + |v_+|^2`` over the units active at initialisation,
    ``U_i0 . x >= 0`` (eq. 107-115, P^+ of eq. 112); it obeys eq. 122
    (:func:`phasekit_plugins.homogeneous.reduced_weight_norm`)."""
    return reduced_norm(snap.model, snap.features, snap.theta, snap.theta0)


REDUCED_WEIGHT_NORM = Observable(
    name="reduced_weight_norm",
    long_name="reduced weight norm theta_+^2 = |u_+|^2 + |v_+|^2 over units active at init",
    compute=reduced_weight_norm,
    applies=_one_point_two_layer_relu,
    equation="eq. 107-123",
)


@hookimpl
def phasekit_register_observables(register):
    for obs in (SPARSITY, TEST_ACCURACY, REDUCED_WEIGHT_NORM):
        register(obs)


__all__ = ["REDUCED_WEIGHT_NORM", "SPARSITY", "TEST_ACCURACY", "activation_sparsity",
           "reduced_weight_norm", "test_accuracy"]
