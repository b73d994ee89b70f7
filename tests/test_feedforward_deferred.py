"""FeedForward's deferred first-layer update (``defer_updates``): the pre-activations
are updated in place of U, ``s^1 <- s^1 - (X X^T) diag(w) g^1``, and U catches up in
``sync``.  Same runs as the plain step, to rounding; off by default."""

from __future__ import annotations

import pytest
import torch

from phasekit.config.resolve import resolve_config
from phasekit.engine.engine import Engine

DATA = {"name": "random", "num_train": 12, "num_test": 30, "input_dim": 20}
MODELS = [{"name": "relu", "width": 48},                                   # span, k = D
          {"name": "relu", "width": 48, "input_span": False},              # full, k = d
          {"name": "deep_relu", "width": 32, "hidden_layers": 1},
          {"name": "homogeneous", "width": 40, "a_minus": 0.5, "input_span": True}]


def _close(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12, msg=what)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m['name']}-{m.get('input_span')}")
def test_deferred_updates_give_the_plain_run(manager, model):
    config, data = resolve_config({"model": model, "dataset": DATA, "sweep": {}}, manager)
    plain, deferred = Engine(config, data, manager).model, Engine(config, data, manager).model
    assert not plain.defer_updates                                # off by default
    deferred.defer_updates = True
    feats, theta0 = plain.setup(0, torch.device("cpu"), torch.float64)
    H0 = plain.ntk(feats, theta0[None], None)[0]
    eta = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64) / torch.linalg.eigvalsh(H0)[-1]
    y = data.y_train.to(torch.float64)
    th_p, th_d = theta0.expand(3, -1).clone(), theta0.expand(3, -1).clone()
    for t in range(25):
        z_p, c_p = plain.forward(feats, th_p)
        z_d, c_d = deferred.forward(feats, th_d)
        _close(z_d, z_p, f"outputs at step {t}")
        if t % 6 == 5:               # what a recorded step reads; U catches up on its own
            _close(deferred.weight_norm(feats, th_d), plain.weight_norm(feats, th_p),
                   "weight norm")
            _close(deferred.forward(feats, th_d, "test")[0],
                   plain.forward(feats, th_p, "test")[0], "test outputs")
            _close(deferred.ntk(feats, th_d, c_d), plain.ntk(feats, th_p, c_p), "NTK")
            _close(th_d, th_p, f"theta after the model synced itself at step {t}")
            assert deferred.forward(feats, th_d)[1] is c_d     # the step's cache still holds
        plain.descend(feats, th_p, c_p, z_p - y, eta)
        deferred.descend(feats, th_d, c_d, z_d - y, eta)
    pending = not torch.equal(th_d, th_p)
    deferred.sync(feats, th_d)
    _close(th_d, th_p, "theta after sync")
    assert pending                                   # U really was behind before sync


def test_no_deferral_where_it_would_cost_more(manager):
    """D >= 2k: tracking s^1 (D^2 n a step) would cost more than U's own two products."""
    config, data = resolve_config({"model": {"name": "relu", "width": 16}, "dataset": {
        "name": "random", "num_train": 8, "num_test": 4, "input_dim": 2}, "sweep": {}}, manager)
    model = Engine(config, data, manager).model
    model.defer_updates = True
    feats, theta0 = model.setup(0, torch.device("cpu"), torch.float64)
    theta = theta0[None].clone()
    z, cache = model.forward(feats, theta)
    before = theta.clone()
    model.descend(feats, theta, cache, z - data.y_train.double(), torch.tensor([0.1]))
    U, _, _ = model.unpack(theta)
    assert not torch.equal(U, model.unpack(before)[0])              # U moved at once
    assert model._deferred_state(theta) is None
