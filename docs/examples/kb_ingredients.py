"""Which ingredient of Kalra & Barkeshli's set-up moves c_loss and c_sharp?

    python docs/examples/kb_ingredients.py        # the table of docs/phases.md, `kb_depth_width`

starts from phasekit's eq. 193 set-up (variance-1 weights, NTK parameterisation,
full-batch descent, c = eta lambda_0 of the NTK) and turns on one ingredient of Kalra &
Barkeshli (2023) at a time -- He initialisation (weight_variance = 2), standard
parameterisation, mini-batch SGD, c measured by the loss Hessian's lambda^H_0 -- then
all four together (the ``kb_depth_width`` preset's set-up). For ``deep_relu`` on two-class
Fashion-MNIST (128 training images) at a few (hidden_layers k, width w), it prints the
seed-averaged c_loss and c_sharp (docs/phases.md, "Seed-averaged critical rates") of 4
seeds, from runs of 12 steps on a c grid of step 0.25 in [1, 4].
"""

from __future__ import annotations

import math

from phasekit import api

#: (label, the options that differ from eq. 193's set-up, as "table.key": value)
SETUPS = [
    ("eq. 193 (σ_w² = 1, ntk, full batch, c by λ_0)", {}),
    ("He (σ_w² = 2)", {"model.weight_variance": 2.0}),
    ("standard parameterisation", {"model.parameterization": "standard"}),
    ("SGD, B = 32", {"sweep.batch_size": 32}),
    ("c by λ^H_0 (Hessian)", {"sweep.normalize": "hessian"}),
    ("all four (kb_depth_width)", {"model.weight_variance": 2.0,
                                   "model.parameterization": "standard",
                                   "sweep.batch_size": 32, "sweep.normalize": "hessian"}),
]
#: (hidden_layers k, width w) of the table
POINTS = [(0, 64), (2, 64), (6, 64), (0, 256), (2, 256)]
GRID = [0.5] + [1.0 + 0.25 * i for i in range(13)] + [4.5, 5.0]


def config(options: dict, points, dataset: dict, grid, seeds: int = 4,
           max_steps: int = 12) -> dict:
    """The sweep of one set-up over ``points`` = [(k, w), ...]: eq. 193's deep ReLU net,
    changed by ``options``; runs of ``max_steps`` steps that never stop early (tol = 0),
    every step recorded."""
    raw = {"model": {"name": "deep_relu", "width": points[0][1],
                     "hidden_layers": points[0][0]},
           "dataset": dict(dataset),
           "sweep": {"eta_lambda0": list(grid), "seeds": seeds, "max_steps": max_steps,
                     "tol": 0.0, "early_window": 10, "record_dense": max_steps + 1,
                     "observables": [], "threads": 1}}
    for key, value in options.items():
        table, name = key.split(".")
        raw[table][name] = value
    return raw


def averaged_rates(options: dict, points, dataset: dict, grid, seeds: int = 4,
                   max_steps: int = 12) -> dict:
    """``{(k, w): (c_loss, c_sharp)}`` seed-averaged, one sweep per point."""
    out = {}
    for k, w in points:
        ds = api.run(config(options, [(k, w)], dataset, grid, seeds, max_steps))
        crit = ds.phasekit.critical(average="seeds")
        out[(k, w)] = (float(crit.c_loss), float(crit.c_sharp))
    return out


def _cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:g}"


def main() -> None:
    dataset = {"name": "fmnist", "num_train": 128}
    head = " | ".join(f"k = {k}, w = {w}" for k, w in POINTS)
    print(f"| set-up | {head} |")
    print("|---|" + "---|" * len(POINTS))
    for label, options in SETUPS:
        rates = averaged_rates(options, POINTS, dataset, GRID)
        cells = " | ".join(f"{_cell(rates[p][0])} / {_cell(rates[p][1])}" for p in POINTS)
        print(f"| {label} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
