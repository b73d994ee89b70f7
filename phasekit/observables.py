"""Observables: quantities recorded along every run besides the core three.

The engine itself records the loss, the weight norm and the sharpness (they
define the schema and the stopping rule).  Everything else -- test loss, the
quantity of eq. 79, activation sparsity, ... -- is an :class:`Observable`
registered by a plugin through ``phasekit_register_observables``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from phasekit.dataset import Data
from phasekit.model import Model


@dataclass
class Snapshot:
    """Everything known about the active grid points at one step ``t``.

    Tensors have the leading grid dimension ``G`` of the active runs, whether or not
    seeds share the batch: ``theta0`` and ``lambda0`` are per row (with one seed, views
    of that seed's ``(P,)`` and scalar, expanded without a copy).  ``cache`` is what
    ``model.forward`` returned with ``z`` (the training split), for methods that take a
    cache; outputs on other splits come from :meth:`outputs`, computed once per step,
    and the NTK from :attr:`ntk`, formed at most once.
    """

    model: Model
    data: Data
    features: Any
    theta: torch.Tensor        # (G, P), theta_t
    theta0: torch.Tensor       # (G, P) each row's initialisation theta_0
    z: torch.Tensor            # (G, D) outputs on the training set
    eps: torch.Tensor          # (G, D) errors z - y
    loss: torch.Tensor         # (G,)
    #: the NTK (G, D, D) of eq. 4 if the engine formed it, else None: read :attr:`ntk`
    ntk_matrix: torch.Tensor | None
    eta: torch.Tensor          # (G,)
    lambda0: torch.Tensor      # (G,) each row's lambda_max(H_0)
    step: int
    cache: Any = None          # model.forward's cache of the training split, for theta
    _outputs: dict = field(default_factory=dict, repr=False)

    @property
    def ntk(self) -> torch.Tensor:
        """The NTK ``(G, D, D)`` of eq. 4 at ``theta``: formed by ``model.ntk`` on the first
        read when the engine did not need it (a model offering NTK-vector products,
        :meth:`phasekit.model.Model.ntk_operator`), then kept for the other readers."""
        if self.ntk_matrix is None:
            self.ntk_matrix = self.model.ntk(self.features, self.theta, self.cache)
        return self.ntk_matrix

    def outputs(self, split: str) -> torch.Tensor:
        """Outputs ``z`` of shape ``(G, D_split)`` on ``split``, computed once per snapshot
        and shared by every observable that needs them (``"train"`` is ``z`` itself)."""
        if split == "train":
            return self.z
        if split not in self._outputs:
            self._outputs[split] = self.model.forward(self.features, self.theta, split)[0]
        return self._outputs[split]

    def split_loss(self, split: str) -> torch.Tensor:
        """``1/(2 D_split) sum_alpha (z_alpha - y_alpha)^2`` on ``split`` (docs/theory.md §1),
        ``(G,)``."""
        if split == "train":
            return self.loss
        z = self.outputs(split)
        y = self.data.labels(split).to(z)
        return 0.5 * ((z - y) ** 2).mean(-1)


def _always(model: Model, data: Data) -> bool:
    return True


@dataclass(frozen=True)
class Observable:
    """A recorded quantity.

    ``compute(snapshot)`` returns a tensor of shape ``(G, *sizes)`` where the
    extra axes are named by ``dims`` and labelled by ``coords(model, data)``
    (a mapping ``dim -> list of labels``).  ``applies(model, data)`` says
    whether the observable exists for a sweep.  ``equation`` cites the paper.
    ``opt_in``: left out of ``sweep.observables = ["all"]``, recorded only by name.
    """

    name: str
    long_name: str
    compute: Callable[[Snapshot], torch.Tensor]
    applies: Callable[[Model, Data], bool] = _always
    equation: str = ""
    dims: tuple[str, ...] = ()
    coords: Callable[[Model, Data], dict[str, list]] | None = None
    #: recorded only when ``sweep.observables`` names it, not with ``"all"`` (a costly one)
    opt_in: bool = False
