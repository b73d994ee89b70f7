"""Observables that apply to every model: the test loss."""

from __future__ import annotations

from phasekit import hookimpl
from phasekit.observables import Observable, Snapshot


def test_loss(snap: Snapshot):
    """``L_test = 1/(2T) sum_alpha (z_alpha - y_alpha)^2`` on the test split (SPEC 1)."""
    z, _ = snap.model.forward(snap.features, snap.theta, "test")
    y = snap.data.y_test.to(z)
    return 0.5 * ((z - y) ** 2).mean(-1)


TEST_LOSS = Observable(
    name="test_loss",
    long_name="loss on the test split, 1/(2T) sum (z - y)^2",
    compute=test_loss,
    applies=lambda model, data: data.has_test,
    equation="SPEC 1 (the training loss's formula on the test split)",
)


@hookimpl
def phasekit_register_observables(register):
    register(TEST_LOSS)
