"""Presets reproducing the paper's quadratic-model experiments (docs/theory.md §4)."""

from __future__ import annotations

from phasekit import hookimpl

FIG1 = {
    "model": {"name": "quadratic", "width": 1000, "eigen_low": 1.0, "eigen_high": 2.0,
              "activation": "identity"},
    "dataset": {"name": "toy", "x": [1.0], "y": 0.0},
    # Eight seeds: where the catapult window closes depends on the initialisation
    # (c_max = 3.86-4.02 over seeds 0-7), so the preset reports mean and spread.
    "sweep": {"eta_lambda0": {"start": 0.2, "stop": 4.6, "num": 23}, "seeds": 8,
              "max_steps": 20000},
}

PRESETS = {
    "default": (
        "fig1's setting on a coarse grid, 8 seeds x 46 rates",
        {**FIG1, "sweep": {**FIG1["sweep"], "eta_lambda0": {"start": 0.1, "stop": 4.6,
                                                             "num": 46}}},
    ),
    "fig1": ("Figure 1: pure quadratic model, toy data (1, 0), n = 1000, eigenvalues "
             "+/-U[1,2], seeds 0-7; bound eq. 60", FIG1),
    "fig4": (
        "Figure 4: pure quadratic model on random 2-d data, n = 500, identity g, eigenvalues "
        "+/-U[0.9,1.1], 100 epochs; methods 1 and 2 (eq. 138, 154)",
        {"model": {"name": "quadratic", "width": 500, "eigen_low": 0.9, "eigen_high": 1.1,
                   "activation": "identity"},
         "dataset": {"name": "random", "num_train": 32, "input_dim": 2, "k": 0.5},
         "sweep": {"eta_lambda0": {"start": 0.2, "stop": 4.6, "num": 23}, "seeds": [0],
                   "max_steps": 100}},
    ),
    "fig5": (
        "Figure 5: pure quadratic teacher (rank 500) and student (400), tanh g, eigenvalues "
        "+/-1, 32 train / 1000 test points; methods 1 and 2",
        {"model": {"name": "quadratic", "width": 400, "activation": "tanh"},
         "dataset": {"name": "teacher_student", "teacher_width": 500, "student_width": 400,
                     "activation": "tanh", "num_train": 32, "num_test": 1000, "k": 0.5},
         "sweep": {"eta_lambda0": {"start": 0.2, "stop": 4.6, "num": 23}, "seeds": [0],
                   "max_steps": 20000}},
    ),
    "fig6": (
        "Figure 6: quadratic model with bias, toy data, n_psi = 100, n_phi = 10, identity g, "
        "eigenvalues +/-1; bound eq. 77",
        {"model": {"name": "quadratic_bias", "width": 100, "feature_width": 10,
                   "activation": "identity"},
         "dataset": {"name": "toy", "x": [1.0], "y": 0.0},
         "sweep": {"eta_lambda0": {"start": 0.2, "stop": 4.6, "num": 23}, "seeds": [0],
                   "max_steps": 20000}},
    ),
    "fig7": (
        "Figure 7: quadratic model with bias, teacher (n_psi 200, n_phi 20) and student "
        "(150, 10), d = 1, tanh g; bound eq. 163",
        {"model": {"name": "quadratic_bias", "width": 150, "feature_width": 10,
                   "activation": "tanh"},
         "dataset": {"name": "teacher_student", "teacher_width": 200,
                     "teacher_feature_width": 20, "student_width": 150,
                     "student_feature_width": 10, "activation": "tanh", "num_train": 32,
                     "num_test": 1000, "k": 0.5},
         "sweep": {"eta_lambda0": {"start": 0.2, "stop": 4.6, "num": 23}, "seeds": [0],
                   "max_steps": 20000}},
    ),
}


@hookimpl
def phasekit_register_presets(register):
    for name, (description, config) in PRESETS.items():
        register(name, config, description)
