"""Observables: quantities recorded along every run besides the core three.

The engine itself records the loss, the weight norm and the sharpness (they
define the schema and the stopping rule).  Everything else -- test loss, the
quantity of eq. 79, activation sparsity, ... -- is an :class:`Observable`
registered by a plugin through ``phasekit_register_observables``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .dataset import Data
from .model import Model


@dataclass
class Snapshot:
    """Everything known about the active grid points at one step ``t``.

    Tensors have the leading grid dimension ``G`` of the active runs.
    """

    model: Model
    data: Data
    features: Any
    theta: torch.Tensor        # (G, P), theta_t
    theta0: torch.Tensor       # (P,), this seed's initialisation
    z: torch.Tensor            # (G, D) outputs on the training set
    eps: torch.Tensor          # (G, D) errors z - y
    loss: torch.Tensor         # (G,)
    ntk: torch.Tensor          # (G, D, D), eq. 4
    eta: torch.Tensor          # (G,)
    lambda0: float
    step: int


def _always(model: Model, data: Data) -> bool:
    return True


@dataclass(frozen=True)
class Observable:
    """A recorded quantity.

    ``compute(snapshot)`` returns a tensor of shape ``(G, *sizes)`` where the
    extra axes are named by ``dims`` and labelled by ``coords(model, data)``
    (a mapping ``dim -> list of labels``).  ``applies(model, data)`` says
    whether the observable exists for a sweep.  ``equation`` cites the paper.
    """

    name: str
    long_name: str
    compute: Callable[[Snapshot], torch.Tensor]
    applies: Callable[[Model, Data], bool] = _always
    equation: str = ""
    dims: tuple[str, ...] = ()
    coords: Callable[[Model, Data], dict[str, list]] | None = None
