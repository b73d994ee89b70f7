"""Datasets: the container the engine trains on and the plugin base class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from phasekit.errors import DataError
from phasekit.options import Option


@dataclass
class Data:
    """Training (and optionally test) data, as float64 tensors on the CPU.

    ``x_train`` has shape ``(D, d)`` and ``y_train`` shape ``(D,)`` (docs/theory.md §1).
    ``extras`` carries dataset-specific objects a model may use (for example
    the student's feature functions of the teacher-student set-up, eq. 190-191);
    ``attrs`` are stored in the sweep's attributes.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.x_train.ndim != 2 or self.y_train.ndim != 1:
            raise DataError("x_train must be (D, d) and y_train (D,)")
        if self.x_train.shape[0] != self.y_train.shape[0]:
            raise DataError("x_train and y_train disagree on the number of points D")
        if (self.x_test is None) != (self.y_test is None):
            raise DataError("x_test and y_test must be given together")

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    def inputs(self, split: str) -> torch.Tensor:
        x = self.x_train if split == "train" else self.x_test
        if x is None:
            raise DataError(f"this dataset has no {split!r} split")
        return x

    def labels(self, split: str) -> torch.Tensor:
        y = self.y_train if split == "train" else self.y_test
        if y is None:
            raise DataError(f"this dataset has no {split!r} split")
        return y


class DatasetPlugin:
    """Base class of dataset plugins.

    Subclasses set ``name``, ``description`` and ``options`` (a mapping of
    :class:`~phasekit.options.Option`) and implement :meth:`load`.  The
    validated option values arrive in ``self.settings``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    def load(self) -> Data:  # pragma: no cover - abstract
        raise NotImplementedError
