"""Synthetic datasets (docs/theory.md §2.1, §4): ``toy``, ``point`` (one arbitrary datapoint,
figure 10), ``random`` and ``teacher_student``."""

from __future__ import annotations

import math

import torch

from phasekit import hookimpl
from phasekit.dataset import Data, DatasetPlugin
from phasekit.errors import ConfigError
from phasekit.options import Option, non_negative, positive

from .quadratic import ACTIVATIONS, FeatureMap, draw_meta_feature_matrices


class Toy(DatasetPlugin):
    """One datapoint, by default the paper's toy dataset (x, y) = (1, 0) (Table 1)."""

    name = "toy"
    description = "a single datapoint, default (x, y) = (1, 0)"
    options = {
        "x": Option([1.0], "the input, a list of d numbers", type=list, item=float),
        "y": Option(0.0, "the label"),
    }

    def load(self) -> Data:
        x = self.settings["x"]
        if not x:
            raise ConfigError("dataset.x must hold at least one number")
        return Data(torch.tensor([x], dtype=torch.float64),
                    torch.tensor([self.settings["y"]], dtype=torch.float64),
                    attrs={"num_train": 1, "input_dim": len(x)})


def _uniform(gen: torch.Generator, shape, k: float) -> torch.Tensor:
    return (2.0 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1.0) * k


class Random(DatasetPlugin):
    """x ~ U([-k, k]^d), y ~ U([-k, k]) (figures 4 and 9), optionally with a test split."""

    name = "random"
    description = "random inputs x ~ U([-k,k]^d) and labels y ~ U([-k,k]) (or N(0,1))"
    options = {
        "num_train": Option(32, "D, number of training points", check=positive),
        "num_test": Option(0, "number of test points (0: no test split)", check=non_negative),
        "input_dim": Option(1, "d, input dimension", check=positive),
        "k": Option(0.5, "half-width of the input and label ranges", check=positive),
        "labels": Option("uniform", "label distribution: U([-k,k]) or N(0,1) (the authors' "
                         "code, docs/theory.md §5)", choices=("uniform", "normal")),
        "seed": Option(0, "seed of the data (the same for every model seed)",
                       check=non_negative),
    }

    def load(self) -> Data:
        s = self.settings
        gen = torch.Generator().manual_seed(s["seed"])

        def draw(num):
            x = _uniform(gen, (num, s["input_dim"]), s["k"])
            if s["labels"] == "uniform":
                y = _uniform(gen, (num,), s["k"])
            else:
                y = torch.randn(num, generator=gen, dtype=torch.float64)
            return x, y

        x, y = draw(s["num_train"])
        xt, yt = draw(s["num_test"]) if s["num_test"] else (None, None)
        return Data(x, y, xt, yt, attrs={"num_train": s["num_train"],
                                         "num_test": s["num_test"]})


class TeacherStudent(DatasetPlugin):
    """Labels from a teacher quadratic model; the student's features are its projection.

    Teacher (eq. 188): ``y = phi_t . theta_t + (zeta_t/2) theta_t^T psi_t theta_t`` with
    theta_t ~ N(0, 1).  Student (eq. 190-191): ``phi_s = Q phi_t``,
    ``psi_s = Q psi_t Q^T``, Q keeping a random subset of the teacher's coordinates.
    The student's maps reach the model as ``extras["quadratic_features"]``, so the
    model's ``width`` (and ``feature_width``) must equal the student sizes here.
    """

    name = "teacher_student"
    description = "labels from a teacher quadratic model; student features by projection"
    options = {
        "teacher_width": Option(500, "n_psi of the teacher", check=positive),
        "teacher_feature_width": Option(0, "n_phi of the teacher (0: pure quadratic teacher)",
                                        check=non_negative),
        "student_width": Option(400, "n_psi of the student (kept coordinates)",
                                check=positive),
        "student_feature_width": Option(0, "n_phi of the student", check=non_negative),
        "teacher_zeta": Option(None, "zeta of the teacher; default sqrt(2/teacher_width)",
                               type=float, check=positive),
        "activation": Option("tanh", "element-wise g of the meta-feature function",
                             choices=ACTIVATIONS),
        "leaky_slope": Option(0.01, "negative slope of g = leaky_relu"),
        "eigen_low": Option(1.0, "teacher eigenvalues ~ +/-U[eigen_low, eigen_high]",
                            check=positive),
        "eigen_high": Option(1.0, "upper end of the eigenvalue distribution", check=positive),
        "input_dim": Option(1, "d, input dimension", check=positive),
        "k": Option(0.5, "inputs x ~ U([-k, k]^d)", check=positive),
        "num_train": Option(32, "D, number of training points", check=positive),
        "num_test": Option(1000, "number of test points", check=non_negative),
        "seed": Option(0, "seed of the teacher, the projection and the data",
                       check=non_negative),
    }

    def load(self) -> Data:
        s = self.settings
        if s["teacher_width"] % 2:
            raise ConfigError("dataset.teacher_width must be even (eigenvalue pairs)")
        if s["student_width"] > s["teacher_width"]:
            raise ConfigError("dataset.student_width must not exceed dataset.teacher_width")
        if s["student_feature_width"] > s["teacher_feature_width"]:
            raise ConfigError("dataset.student_feature_width must not exceed "
                              "dataset.teacher_feature_width")
        if s["eigen_low"] > s["eigen_high"]:
            raise ConfigError("dataset.eigen_low must not exceed dataset.eigen_high")
        gen = torch.Generator().manual_seed(s["seed"])
        d, n_t, n_phi = s["input_dim"], s["teacher_width"], s["teacher_feature_width"]
        W = draw_meta_feature_matrices(gen, n_t, d, s["eigen_low"], s["eigen_high"])
        U = torch.randn(n_phi, d, generator=gen, dtype=torch.float64) if n_phi else None
        teacher = FeatureMap(W, U, s["activation"], s["leaky_slope"],
                             1.0 / math.sqrt(d * n_phi) if n_phi else 0.0)
        theta_t = torch.randn(n_phi + n_t, generator=gen, dtype=torch.float64)
        zeta_t = s["teacher_zeta"] or math.sqrt(2.0 / n_t)
        psi_idx = torch.randperm(n_t, generator=gen)[:s["student_width"]].sort().values
        phi_idx = (torch.randperm(n_phi, generator=gen)[:s["student_feature_width"]]
                   .sort().values if n_phi else None)

        def labels(x: torch.Tensor) -> torch.Tensor:
            out = []
            for start in range(0, x.shape[0], 64):  # the teacher's psi is never stored whole
                xb = x[start:start + 64]
                th_psi = theta_t[n_phi:]
                v = teacher.psi(xb) @ th_psi
                z = 0.5 * zeta_t * (v @ th_psi)                          # eq. 188
                if n_phi:
                    z = z + teacher.phi(xb) @ theta_t[:n_phi]
                out.append(z)
            return torch.cat(out)

        x = _uniform(gen, (s["num_train"], d), s["k"])
        xt = _uniform(gen, (s["num_test"], d), s["k"]) if s["num_test"] else None
        student = teacher.project(psi_idx, phi_idx)                       # eq. 190-191
        return Data(x, labels(x), xt, labels(xt) if xt is not None else None,
                    extras={"quadratic_features": student, "teacher_features": teacher,
                            "teacher_theta": theta_t, "student_index": psi_idx,
                            "student_feature_index": phi_idx},
                    attrs={"num_train": s["num_train"], "num_test": s["num_test"],
                           "teacher_zeta": zeta_t})


class Point(Toy):
    """One arbitrary datapoint (x, y), default (4, 2) of figure 10 (Appendix D.2)."""

    name = "point"
    description = "a single datapoint (x, y), default (4, 2) (figure 10)"
    options = {
        "x": Option([4.0], "the input, a list of d numbers", type=list, item=float),
        "y": Option(2.0, "the label"),
    }


@hookimpl
def phasekit_register_datasets(register):
    register(Toy)
    register(Random)
    register(TeacherStudent)
    register(Point)
