"""Observables that apply to every model: test loss, generalisation gap and (opt-in)
the loss Hessian's sharpness."""

from __future__ import annotations

from phasekit import hookimpl
from phasekit.linalg import hessian_max
from phasekit.observables import Observable, Snapshot


def test_loss(snap: Snapshot):
    """``L_test = 1/(2T) sum_alpha (z_alpha - y_alpha)^2`` on the test split
    (docs/theory.md §1)."""
    return snap.split_loss("test")


def generalisation_gap(snap: Snapshot):
    """``L_test - L_train`` (Fig. 3g), both with the loss of docs/theory.md §1."""
    return snap.split_loss("test") - snap.loss


TEST_LOSS = Observable(
    name="test_loss",
    long_name="loss on the test split, 1/(2T) sum (z - y)^2",
    compute=test_loss,
    applies=lambda model, data: data.has_test,
    equation="docs/theory.md §1 (the training loss's formula on the test split)",
)


GENERALISATION_GAP = Observable(
    name="generalisation_gap",
    long_name="generalisation gap: test loss minus training loss",
    compute=generalisation_gap,
    applies=lambda model, data: data.has_test,
    equation="docs/theory.md §1 (Fig. 3g)",
)


def hessian_sharpness(snap: Snapshot):
    """``eta lambda^H_t``: eta times the top eigenvalue of the loss Hessian at theta_t
    (docs/theory.md §1, "Loss Hessian"), by Hessian-vector products and Lanczos, every
    row of the batch at once."""
    return snap.eta * hessian_max(snap.model, snap.features, snap.theta)


HESSIAN_SHARPNESS = Observable(
    name="hessian_sharpness",
    long_name="eta * lambda_max of the loss Hessian, (1/D) J^T J + (1/D) sum (z - y) "
              "grad^2 z, at theta_t",
    compute=hessian_sharpness,
    equation="docs/theory.md §1 (loss Hessian)",
    opt_in=True,
)


@hookimpl
def phasekit_register_observables(register):
    register(TEST_LOSS)
    register(GENERALISATION_GAP)
    register(HESSIAN_SHARPNESS)
