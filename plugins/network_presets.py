"""Presets reproducing the paper's network experiments, figures 2, 3 and 8-16
(docs/theory.md §4).

Image presets use the paper's dataset.  The MNIST ones (figures 3, 11, 14) set
``dataset.fallback = "fmnist"``: where the MNIST files are absent they train on
two-class Fashion-MNIST instead, warn, and record it as the sweep attribute
``dataset_fallback`` (see ``phasekit_plugins.images``).  Runs stop when the
training loss changes by less than 1e-8 per step (the paper's rule, the
engine's default ``tol``) or at ``max_steps``.
"""

from __future__ import annotations

from phasekit import hookimpl

WIDTH = 1024


def _grid(start: float, stop: float, num: int) -> dict:
    return {"start": start, "stop": stop, "num": num}


def _toy_homogeneous(a_minus: float) -> dict:
    return {
        "model": {"name": "homogeneous", "width": WIDTH, "a_plus": 1.0, "a_minus": a_minus},
        "dataset": {"name": "toy", "x": [1.0], "y": 0.0},
        "sweep": {"eta_lambda0": _grid(0.25, 6.0, 24), "seeds": [0], "max_steps": 20000},
    }


def _images(model: dict, dataset: str, grid: dict, **dataset_options) -> dict:
    return {
        "model": model,
        "dataset": {"name": dataset, "num_train": 128, **dataset_options},
        # Large matrix products: use every core (sweep.threads = 0, torch's default).
        "sweep": {"eta_lambda0": grid, "seeds": [0], "max_steps": 20000, "threads": 0},
    }


RELU = {"name": "relu", "width": WIDTH}
DEEP = {"name": "deep_relu", "width": WIDTH, "hidden_layers": 1}
MNIST = {"fallback": "fmnist"}
GRID_TWO_LAYER = _grid(0.5, 8.0, 16)
GRID_THREE_LAYER = _grid(0.5, 6.0, 12)

PRESETS = {
    "fig2": ("Figure 2: two-layer homogeneous net a_+ = 1, a_- = 1/2, width 1024, toy data "
             "(1, 0); bounds eq. 95 and eq. 102", _toy_homogeneous(0.5)),
    "fig8": ("Figure 8: two-layer homogeneous net a_+ = 1, a_- = 3/4, width 1024, toy data "
             "(1, 0); bounds eq. 95 and eq. 102", _toy_homogeneous(0.75)),
    "fig9": (
        "Figure 9: homogeneous net a_+ = 1, a_- = 1/2, width 1024, random data x, y ~ "
        "U[-1/2, 1/2], d = 1, D = 32, 1000 epochs; bound eq. 180",
        {"model": {"name": "homogeneous", "width": WIDTH, "a_plus": 1.0, "a_minus": 0.5},
         "dataset": {"name": "random", "num_train": 32, "input_dim": 1, "k": 0.5},
         "sweep": {"eta_lambda0": _grid(0.25, 5.0, 20), "seeds": [0], "max_steps": 1000}},
    ),
    "fig10": (
        "Figure 10: two-layer ReLU net, width 1024, one point (x, y) = (4, 2); bound eq. 124 "
        "(c = 4), trivial near c = 4.5",
        {"model": dict(RELU), "dataset": {"name": "point", "x": [4.0], "y": 2.0},
         "sweep": {"eta_lambda0": _grid(0.25, 6.0, 24), "seeds": [0], "max_steps": 20000}},
    ),
    "fig3": ("Figure 3: two-layer ReLU net, width 1024, two-class MNIST 0/1 (128 train, all "
             "0/1 test images); Fashion-MNIST if MNIST is absent",
             _images(dict(RELU), "mnist", GRID_TWO_LAYER, **MNIST)),
    "fig11": ("Figure 11: as fig3, zoomed to eta_lambda0 <= 5 (theta^2 evolution); "
              "Fashion-MNIST if MNIST is absent",
              _images(dict(RELU), "mnist", _grid(0.5, 5.0, 10), **MNIST)),
    "fig12": ("Figure 12: two-layer ReLU net, width 1024, two-class Fashion-MNIST "
              "T-shirt/trouser", _images(dict(RELU), "fmnist", GRID_TWO_LAYER)),
    "fig13": ("Figure 13: two-layer ReLU net, width 1024, two-class CIFAR-10 "
              "airplane/automobile", _images(dict(RELU), "cifar10", GRID_TWO_LAYER)),
    "fig14": ("Figure 14: three-layer ReLU net (k = 1), width 1024, two-class MNIST 0/1; "
              "Fashion-MNIST if MNIST is absent",
              _images(dict(DEEP), "mnist", GRID_THREE_LAYER, **MNIST)),
    "fig15": ("Figure 15: three-layer ReLU net (k = 1), width 1024, two-class Fashion-MNIST",
              _images(dict(DEEP), "fmnist", GRID_THREE_LAYER)),
    "fig16": ("Figure 16: three-layer ReLU net (k = 1), width 1024, two-class CIFAR-10",
              _images(dict(DEEP), "cifar10", GRID_THREE_LAYER)),
}


@hookimpl
def phasekit_register_presets(register):
    for name, (description, config) in PRESETS.items():
        register(name, config, description)
