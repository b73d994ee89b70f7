"""Presets of two-dimensional phase diagrams: the critical learning rates against
width, depth/width and data, as the literature draws them (docs/theory.md §6,
docs/phases.md).

Each is an ordinary sweep with ``sweep.axes``; ``phasekit plot`` draws the
diagram and ``phasekit boundary --preset NAME`` refines c_loss, c_sharp and
c_max by bisection over the whole axis at once.
"""

from __future__ import annotations

from phasekit import hookimpl

#: widths on a geometric grid (drawn on a log axis)
UV_WIDTHS = [16, 64, 256, 1024, 4096]
QUADRATIC_WIDTHS = [50, 100, 200, 400, 800, 1600]
#: 64-1024: width 2048 adds over an hour on 2 cores (recorded steps evaluate the test split)
RELU_WIDTHS = [64, 128, 256, 512, 1024]
#: 32-256 rather than 128-1024: the same depth/width ratios shifted up (where the
#: sharpness-reduction phase is expected), at a cost a 2-core CPU can pay
DEPTH_WIDTHS = [32, 64, 128, 256]
#: kb_depth_width: d = hidden_layers + 2 weight layers (U, W_1..W_k, v) over widths
#: 32-512, so d/w runs from 2/512 = 1/256 to 4/32 = 1/8
KB_WIDTHS = [32, 64, 128, 256, 512]
KB_HIDDEN_LAYERS = [0, 2]
#: c in steps of 0.25 up to 8 (c_loss, c_sharp and the deep nets' c_max), then coarser
#: to 20, then a geometric tail (ratios 4/3 and 3/2) to 512: the two-layer nets (k = 0)
#: first diverge at c = 96-192, so the tail brackets their seed-averaged c_max
KB_TAIL = [24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0]
KB_GRID = [0.25 * i for i in range(1, 33)] + [9.0, 10.0, 12.0, 16.0, 20.0] + KB_TAIL


def _grid(start: float, stop: float, num: int) -> dict:
    return {"start": start, "stop": stop, "num": num}


def _fmnist(model: dict, widths: list[int], grid, max_steps: int = 3000, max_test: int = 0,
            **axes) -> dict:
    return {
        "model": model,
        "dataset": {"name": "fmnist", "num_train": 128, "max_test": max_test},
        # Large matrix products: use every core (sweep.threads = 0, torch's default).
        # Runs stop when |dL| < 1e-6 per step or after max_steps (then 'max_steps').
        "sweep": {"eta_lambda0": grid, "seeds": [0], "max_steps": max_steps, "tol": 1e-6,
                  "threads": 0, "axes": {"model.width": widths, **axes}},
    }


PRESETS = {
    "uv_width": (
        "uv model (homogeneous net a_+ = a_- = 1, the two-layer linear net of Lewkowycz et "
        "al. 2020) on one point (1, 0), widths 16-4096, 4 seeds: lazy below c = 2, "
        "catapult up to c_max -> 4 (bounds eq. 95 = eq. 102 = 4)",
        {"model": {"name": "homogeneous", "width": 1024, "a_plus": 1.0, "a_minus": 1.0},
         "dataset": {"name": "toy", "x": [1.0], "y": 0.0},
         "sweep": {"eta_lambda0": _grid(0.1, 6.0, 60), "seeds": 4, "max_steps": 5000,
                   "axes": {"model.width": UV_WIDTHS}}},
    ),
    "quadratic_width": (
        "pure quadratic model of figure 1 (toy data, eigenvalues +/-U[1,2]) over widths "
        "n = 50-1600, 4 seeds; the eq. 60 bound as a curve against n",
        {"model": {"name": "quadratic", "width": 1000, "eigen_low": 1.0, "eigen_high": 2.0,
                   "activation": "identity"},
         "dataset": {"name": "toy", "x": [1.0], "y": 0.0},
         "sweep": {"eta_lambda0": _grid(0.2, 4.6, 23), "seeds": 4, "max_steps": 20000,
                   "axes": {"model.width": QUADRATIC_WIDTHS}}},
    ),
    "relu_width": (
        "two-layer ReLU net on two-class Fashion-MNIST (128 images), widths 64-1024",
        _fmnist({"name": "relu", "width": 1024}, RELU_WIDTHS, _grid(0.5, 8.0, 16)),
    ),
    "depth_width": (
        "deep ReLU net (hidden_layers k = 0-3, i.e. 1-4 hidden layers) x widths 32-256 on "
        "two-class Fashion-MNIST (512 test images), 1000 steps; plot against "
        "hidden_layers/width (Kalra & Barkeshli 2023)",
        _fmnist({"name": "deep_relu", "width": 1024, "hidden_layers": 1}, DEPTH_WIDTHS,
                [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0], max_steps=1000,
                max_test=512, **{"model.hidden_layers": [0, 1, 2, 3]}),
    ),
    "kb_depth_width": (
        "Kalra & Barkeshli 2023's set-up: deep ReLU in standard parameterisation with He "
        "variance (weight_variance = 2), d = hidden_layers + 2 = 2 or 4 layers x widths "
        "32-512 (d/w = 1/256 to 1/8), full-batch descent on two-class Fashion-MNIST (128 "
        "images), c = eta lambda^H_0 (sweep.normalize = hessian), 4 seeds; 20-step runs "
        "(tol = 0) at c = 0.25-8 in steps of 0.25, 9-20, then a geometric tail 24-512: "
        "c_loss and c_sharp per seed and seed-averaged from the early window t = 1-10, "
        "c_max only seed-averaged (the largest c at which no seed diverged within 20 "
        "steps: 3.5-7.75 for the 4-layer nets, 64-128 in the tail for the 2-layer ones; "
        "no run converges, so the per-seed c_max is NaN); plot with --x "
        "'(hidden_layers+2)/width' --average seeds --ylog",
        {"model": {"name": "deep_relu", "width": 64, "hidden_layers": 0,
                   "weight_variance": 2.0, "parameterization": "standard"},
         "dataset": {"name": "fmnist", "num_train": 128},
         # Only the early window is read: record it densely (steps 0-10) and nothing after
         # but the last step; tol = 0 so that no run stops inside the window.
         "sweep": {"eta_lambda0": KB_GRID, "seeds": 4, "max_steps": 20, "tol": 0.0,
                   "normalize": "hessian", "early_window": 10, "record_dense": 11,
                   "record_per_decade": 0, "observables": [], "threads": 0,
                   "axes": {"model.width": KB_WIDTHS, "model.hidden_layers": KB_HIDDEN_LAYERS}}},
    ),
}


@hookimpl
def phasekit_register_presets(register):
    for name, (description, config) in PRESETS.items():
        register(name, config, description)
