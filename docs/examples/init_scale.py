"""The output and the NTK of a deep ReLU net at initialisation, against depth, for the
initial variances and the two parameterisations of docs/theory.md §2.6.

    python docs/examples/init_scale.py            # the table of docs/theory.md §2.6

prints, for ``deep_relu`` on two-class Fashion-MNIST (128 training images, as the
``depth_width`` preset) at width 256 and k = 0..3 hidden n x n layers, the rms of the
initial outputs z_0 over the training inputs and seeds 0-3 (in brackets: the smallest
and largest rms of one seed), next to its large-width value
``sqrt(sigma_v^2 sigma_w^2 <|x|^2> (sigma_w^2/2)^k / 2)``, and lambda_0 = lambda_max(H_0),
mean and standard deviation over the seeds, for eq. 193's variances
(sigma_w^2 = sigma_v^2 = 1) and He initialisation (sigma_w^2 = 2) in NTK and in
standard parameterisation.
"""

from __future__ import annotations

import statistics

import torch

from phasekit.api import build_model

#: (label, model options) of the four initialisations compared
SETTINGS = [
    ("eq. 193 (σ_w² = 1), ntk", {"weight_variance": 1.0, "parameterization": "ntk"}),
    ("eq. 193 (σ_w² = 1), standard", {"weight_variance": 1.0, "parameterization": "standard"}),
    ("He (σ_w² = 2), ntk", {"weight_variance": 2.0, "parameterization": "ntk"}),
    ("He (σ_w² = 2), standard", {"weight_variance": 2.0, "parameterization": "standard"}),
]


def initial_scale(model: dict, dataset: dict, seed: int) -> tuple[float, float]:
    """``(rms of z_0 over the training inputs, lambda_max(H_0))`` of one seed, float64."""
    m = build_model({"model": model, "dataset": dataset})
    feats, theta0 = m.setup(seed, torch.device("cpu"), torch.float64)
    z0, cache = m.forward(feats, theta0[None])
    H0 = m.ntk(feats, theta0[None], cache)[0]
    return float(z0.square().mean().sqrt()), float(torch.linalg.eigvalsh(H0)[-1])


def table(dataset: dict, width: int, ks, seeds) -> list[tuple[str, int, list, list]]:
    """``(setting, k, [z_0 rms per seed], [lambda_0 per seed])`` for every setting and k."""
    rows = []
    for label, options in SETTINGS:
        for k in ks:
            model = {"name": "deep_relu", "width": width, "hidden_layers": k, **options}
            values = [initial_scale(model, dataset, seed) for seed in seeds]
            rows.append((label, k, [v[0] for v in values], [v[1] for v in values]))
    return rows


def predicted_rms(dataset: dict, weight_variance: float, k: int) -> float:
    """Large-width rms of z_0 (docs/theory.md §2.6): every ReLU layer multiplies the mean
    square pre-activation by sigma_w^2/2, so E[z_0^2] = sigma_w^2 <|x|^2> (sigma_w^2/2)^k / 2
    (sigma_v^2 = 1), the same in both parameterisations."""
    x = build_model({"model": {"name": "relu", "width": 1}, "dataset": dataset}).data.x_train
    x2 = float(x.double().square().sum(-1).mean())
    return (weight_variance * x2 * (weight_variance / 2) ** k / 2) ** 0.5


def _rms_cell(values: list[float]) -> str:
    pooled = statistics.fmean(v * v for v in values) ** 0.5
    return f"{pooled:.3g} [{min(values):.2g}–{max(values):.2g}]"


def _mean_cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {spread:.2g}"


def main() -> None:
    dataset = {"name": "fmnist", "num_train": 128}
    ks = range(4)
    rows = table(dataset, 256, ks, seeds=range(4))
    print("| initialisation | quantity | " + " | ".join(f"k = {k}" for k in ks) + " |")
    print("|---|---|" + "---|" * len(ks))
    for label, options in SETTINGS:
        mine = [r for r in rows if r[0] == label]
        print(f"| {label} | z_0 rms | " + " | ".join(_rms_cell(r[2]) for r in mine) + " |")
        if options["parameterization"] == "ntk":
            print(f"| {label} | z_0 rms, large width | " + " | ".join(
                f"{predicted_rms(dataset, options['weight_variance'], k):.3g}" for k in ks)
                + " |")
        print(f"| {label} | λ_0 | " + " | ".join(_mean_cell(r[3]) for r in mine) + " |")


if __name__ == "__main__":
    main()
