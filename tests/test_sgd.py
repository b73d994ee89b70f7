"""Mini-batch SGD (sweep.batch_size): each epoch visits every training point once, in an
order set by the run's seed alone; an update is the model's own step on the batch's
weighted errors, which is the gradient of the mini-batch loss; B = D is full-batch
gradient descent exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phasekit.config.registry import get_plugin_manager
from phasekit.config.resolve import resolve_config
from phasekit.engine.sgd import MiniBatches
from phasekit.errors import ConfigError
from phasekit.runner.execute import execute

RANDOM = {"name": "random", "num_train": 10, "input_dim": 3}


def config(model, batch_size, **sweep):
    raw = {"model": model, "dataset": RANDOM,
           "sweep": {"seeds": [0, 1], "eta_lambda0": [0.5, 1.5, 2.5], "max_steps": 60,
                     "tol": 0.0, "batch_size": batch_size, **sweep}}
    return resolve_config(raw, get_plugin_manager())


def test_every_epoch_visits_every_point_once_in_the_seeds_order():
    mb = MiniBatches(4, 10, np.array([7, 7, 8]), torch.device("cpu"), torch.float64)
    assert mb.per_epoch == 3
    for seed in (7, 8):
        for epoch in range(3):
            seen = np.concatenate([mb.batch(seed, epoch * 3 + k) for k in range(3)])
            assert sorted(seen.tolist()) == list(range(10))
        assert [len(mb.batch(seed, k)) for k in range(3)] == [4, 4, 2]
    assert not np.array_equal(mb.order(7, 0), mb.order(8, 0))
    assert not np.array_equal(mb.order(7, 0), mb.order(7, 1))
    again = MiniBatches(4, 10, np.array([8]), torch.device("cpu"), torch.float64)
    assert np.array_equal(again.batch(8, 5), mb.batch(8, 5))       # the seed alone decides
    w = mb.weights(4, torch.tensor([0, 2]))
    assert w.shape == (2, 10)
    assert torch.equal(w[0] > 0, torch.isin(torch.arange(10), torch.as_tensor(mb.batch(7, 4))))
    assert set(w[1][w[1] > 0].tolist()) == {10 / 4}


@pytest.mark.parametrize("model", [{"name": "relu", "width": 16},
                                   {"name": "deep_relu", "width": 12, "hidden_layers": 1},
                                   {"name": "linear_bias", "width": 8},
                                   {"name": "quadratic", "width": 12}])
def test_an_update_is_the_gradient_of_the_minibatch_loss(model):
    """The model's step on the weighted errors equals autograd's step on the loss of the
    batch alone, 1/(2|B|) sum_(alpha in B) (z_alpha - y_alpha)^2."""
    from phasekit.api import build_model

    m = build_model({"model": model, "dataset": RANDOM})
    feats, theta0 = m.setup(0, torch.device("cpu"), torch.float64)
    theta = theta0[None].repeat(2, 1) * torch.tensor([[1.0], [1.1]], dtype=torch.float64)
    y = m.data.y_train.to(torch.float64)
    mb = MiniBatches(3, m.data.num_train, np.array([0, 0]), torch.device("cpu"),
                     torch.float64)
    step, eta = 4, torch.tensor([0.05, 0.1], dtype=torch.float64)
    z, cache = m.forward(feats, theta)
    stepped = theta.clone()
    m.descend(feats, stepped, cache, (z - y) * mb.weights(step, torch.arange(2)), eta)
    batch = torch.as_tensor(mb.batch(0, step))
    th = theta.clone().requires_grad_(True)
    zb = m.forward(feats, th)[0][:, batch]
    loss = 0.5 * ((zb - y[batch]) ** 2).mean(-1).sum()
    (grad,) = torch.autograd.grad(loss, th)
    torch.testing.assert_close(stepped, theta - eta[:, None] * grad, rtol=1e-12, atol=1e-14)


def test_a_batch_of_every_point_is_full_batch_gradient_descent_to_the_bit():
    model = {"name": "relu", "width": 24}
    full = execute(*config(model, 0), get_plugin_manager())
    whole = execute(*config(model, RANDOM["num_train"]), get_plugin_manager())
    for name in ("loss", "weight_norm", "sharpness", "steps"):
        np.testing.assert_array_equal(whole[name].values, full[name].values)


def test_sgd_reruns_and_chunks_are_bit_identical_and_differ_from_full_batch():
    model = {"name": "relu", "width": 24}
    manager = get_plugin_manager()
    a = execute(*config(model, 4), manager)
    b = execute(*config(model, 4, chunk_size=1, seed_batch=1), manager)
    np.testing.assert_array_equal(a.loss.values, b.loss.values)
    full = execute(*config(model, 0), manager)
    assert not np.allclose(a.loss.values[..., 2:6], full.loss.values[..., 2:6])
    assert np.array_equal(a.loss.values[..., 0], full.loss.values[..., 0])   # same init


def test_a_batch_larger_than_the_training_set_is_refused():
    with pytest.raises(ConfigError, match="sweep.batch_size = 11 is more than the 10 "
                                          "training points"):
        execute(*config({"name": "relu", "width": 8}, 11), get_plugin_manager())
