"""Model plugin base class and the autograd reference implementations.

Every model works on a *batch of grid points*: parameters are a tensor
``theta`` of shape ``(G, P)``, one flat parameter vector per grid point, and
every method returns tensors with that leading grid dimension.  The engine
never loops over grid points.

A new model subclasses :class:`Model`, sets ``name`` and ``options`` and
implements :meth:`Model.setup` and :meth:`Model.forward`.  Gradients and the NTK
then come from autograd (:func:`autograd_loss_gradient`, :func:`autograd_ntk`), and
so do the loss Hessian's products (:func:`autograd_loss_hvp`); a model with closed
forms overrides :meth:`Model.loss_gradient`, :meth:`Model.ntk` or
:meth:`Model.loss_hvp`, and the test suite checks them against these references.  A
model whose NTK matrix is costly offers NTK-vector products instead
(:meth:`Model.ntk_operator`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from phasekit.dataset import Data
from phasekit.options import Option

#: the NTK of a trivial (dead) network vanishes: a converged run whose NTK is below this
#: fraction of lambda_0 counts as trivial (docs/theory.md §1, :meth:`Model.is_trivial`)
TRIVIAL_NTK_RTOL = 1e-12


@dataclass(frozen=True)
class Bound:
    """A sufficient condition on the learning rate (docs/theory.md §3), for one seed.

    ``eta`` is the bound on the (unnormalised) learning rate; the engine stores
    ``eta * lambda0`` as ``bound_<name>`` in ``eta_lambda0`` units.
    ``kind`` is ``"catapult"`` (below it the weight norm, or the quantity of
    eq. 79, decreases at every step) or ``"divergence"`` (above it the weight
    norm increases at every step).
    """

    name: str
    eta: float
    kind: str
    equation: str
    long_name: str


class Model:
    """Base class of model plugins (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    #: True when z(lambda*theta) = lambda^2 z(theta) (eq. 11), so that eq. 12 holds
    #: on the toy dataset.
    homogeneous: ClassVar[bool] = False

    def __init__(self, settings: dict[str, Any], data: Data):
        self.settings = settings
        self.data = data

    # -- configuration ------------------------------------------------------------
    @classmethod
    def resolve(cls, settings: dict[str, Any], data: Data) -> dict[str, Any]:
        """Fill in derived defaults and check the settings against the data.

        Called before any training; raise :class:`phasekit.options.ConfigError`
        naming the key for an invalid combination.  Returns the settings that
        are stored in the sweep's config.
        """
        return dict(settings)

    # -- numerics, batched over the grid ---------------------------------------
    def setup(self, seed: int, device: torch.device, dtype: torch.dtype
              ) -> tuple[Any, torch.Tensor]:
        """Draw this seed's fixed random objects and its initial parameters.

        Returns ``(features, theta0)`` with ``theta0`` of shape ``(P,)``.  All
        randomness must come from ``seed`` (draw on the CPU in float64 with a
        ``torch.Generator`` and move the result, so devices agree).
        """
        raise NotImplementedError

    def forward(self, features: Any, theta: torch.Tensor, split: str = "train"
                ) -> tuple[torch.Tensor, Any]:
        """Outputs ``z`` of shape ``(G, D)`` on ``split`` and a cache for the
        gradient and NTK of the same parameters."""
        raise NotImplementedError

    def loss_gradient(self, features: Any, theta: torch.Tensor, cache: Any,
                      eps: torch.Tensor) -> torch.Tensor:
        """``grad_theta L = (1/D) sum_alpha eps_alpha dz_alpha/dtheta`` (docs/theory.md §1),
        ``(G, P)``."""
        return autograd_loss_gradient(self, features, theta, eps)

    def ntk(self, features: Any, theta: torch.Tensor, cache: Any) -> torch.Tensor:
        """The NTK of eq. 4, ``H = (1/D) J J^T``, shape ``(G, D, D)``."""
        return autograd_ntk(self, features, theta)

    def ntk_operator(self, features: Any, theta: torch.Tensor, cache: Any
                     ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """NTK-vector products, an optional route for models whose NTK matrix is costly
        (a network with many parameters): a function ``u (G, D) -> H u`` for the NTK
        ``H`` of eq. 4 at every row of ``theta``, or ``None`` (the default).

        With ``None`` the engine forms the ``(G, D, D)`` matrix with :meth:`ntk` at every
        recorded step.  With products, ``lambda_0`` and the sharpness come from Lanczos
        on them (:func:`phasekit.engine.spectrum.operator_lambda_max`, rows independent)
        and the matrix is formed only when an observable reads
        :attr:`phasekit.observables.Snapshot.ntk` (:meth:`is_trivial` then gets
        ``ntk=None`` unless an observable formed it)."""
        return None

    def loss_hvp(self, features: Any, theta: torch.Tensor
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Hessian-vector products of the training loss at ``theta`` (G, P): a function
        ``v -> nabla^2 L(theta_g) v_g`` on ``(G, P)`` batches, row by row, with
        ``nabla^2 L = (1/D) J^T J + (1/D) sum_a (z_a - y_a) nabla^2 z_a`` (docs/theory.md
        §1, "Loss Hessian").  Called once per Lanczos solve and then once per iteration,
        so work shared by every product belongs before the returned function.  The
        default differentiates :meth:`forward` twice (:func:`autograd_loss_hvp`); a model
        with a closed form overrides it."""
        return autograd_loss_hvp(self, features, theta)

    def weight_norm(self, features: Any, theta: torch.Tensor) -> torch.Tensor:
        """``theta^2 = sum_mu theta_mu^2`` (docs/theory.md §1), shape ``(G,)``."""
        return torch.linalg.vector_norm(theta, dim=-1).square()   # one fused pass, no temporary

    def descend(self, features: Any, theta: torch.Tensor, cache: Any, eps: torch.Tensor,
                eta: torch.Tensor) -> None:
        """One gradient-descent step in place: ``theta <- theta - eta grad L`` (docs/theory.md §1).

        ``eta`` has shape ``(G,)``.  The default forms the gradient with
        :meth:`loss_gradient`; a model may fuse gradient and update (no ``(G, P)``
        temporary), and must then match this default to rounding.
        """
        grad = self.loss_gradient(features, theta, cache, eps)
        theta.addcmul_(eta[:, None], grad, value=-1.0)

    def is_trivial(self, features: Any, theta: torch.Tensor, cache: Any, ntk: torch.Tensor,
                   lambda0: torch.Tensor) -> torch.Tensor | None:
        """For converged runs: which ones ended as a *trivial* model (docs/theory.md §1:
        every unit dead, NTK ~ 0, constant output).  ``cache`` is :meth:`forward`'s for
        ``theta``, ``ntk`` its NTK -- or ``None`` for a model offering NTK-vector products
        (:meth:`ntk_operator`) when nothing formed the matrix, so that is_trivial does not
        force it -- and ``lambda0`` the ``(G,)`` lambda_max(H_0) of each row's seed (the
        engine's, the scale of a vanishing NTK, :data:`TRIVIAL_NTK_RTOL`).  ``(G,)``
        booleans, or ``None`` when the model has no trivial phase."""
        return None

    def memory_per_point(self, features: Any, theta0: torch.Tensor) -> int | None:
        """Peak bytes one grid point adds to a chunk during a step (parameters, the
        forward cache, the NTK, observables' passes over other splits, temporaries),
        used to chunk a grid to ``sweep.memory_budget``.  ``None`` (the default): the
        engine measures the tensors of one forward pass and NTK instead
        (:func:`phasekit.engine.memory.memory_estimate`)."""
        return None

    def bounds(self, features: Any, theta0: torch.Tensor, lambda0: float) -> list[Bound]:
        """The bounds of docs/theory.md §3 that apply to this model and dataset, for one seed."""
        return []

    # -- several seeds in one batch -----------------------------------------------------
    def can_stack_seeds(self) -> bool:
        """Whether :meth:`stack_seeds` can put several seeds' features into one batch.

        ``False`` (the default) keeps one seed per batch: always correct, only slower
        for sweeps of many seeds.  A model that returns ``True`` implements
        :meth:`stack_seeds` and :meth:`take_rows`, and its numerics must give every
        row what a batch of that row's seed alone gives, within
        :data:`phasekit.engine.batched.BATCH_RTOL` (``phasekit.testing`` checks it)."""
        return False

    def stack_seeds(self, features: list[Any], rows: torch.Tensor) -> Any:
        """The features of a batch mixing seeds: ``features[s]`` are seed ``s``'s (from
        :meth:`setup`) and ``rows`` (a ``(G,)`` long tensor on the device) names the seed
        of each batch row.  Per-seed tensors become per-row ones (gathered with ``rows``);
        what every seed shares (the data) stays as it is.  Every method then receives
        these features with a ``theta`` of the same ``G`` rows."""
        raise NotImplementedError(f"model {self.name!r} does not stack seeds")

    def take_rows(self, features: Any, keep: torch.Tensor) -> Any:
        """Stacked features restricted to the batch rows where the ``(G,)`` boolean mask
        ``keep`` is true (runs that stopped leave the batch).  Called only on
        :meth:`stack_seeds`' results."""
        raise NotImplementedError(f"model {self.name!r} does not stack seeds")


# -- autograd references ------------------------------------------------------------

def autograd_loss_gradient(model: Model, features: Any, theta: torch.Tensor,
                           eps: torch.Tensor) -> torch.Tensor:
    """``(1/D) sum_alpha eps_alpha dz_alpha/dtheta`` by reverse-mode autograd.

    Grid points are independent, so one backward pass of the summed objective
    gives every point's gradient.
    """
    with torch.enable_grad():
        th = theta.detach().requires_grad_(True)
        z, _ = model.forward(features, th)
        objective = (z * eps.detach()).sum() / z.shape[-1]
        (grad,) = torch.autograd.grad(objective, th)
    return grad


def autograd_jacobian(model: Model, features: Any, theta: torch.Tensor,
                      split: str = "train") -> torch.Tensor:
    """Per-sample Jacobian ``dz_alpha/dtheta_mu``, shape ``(G, D, P)``, via torch.func."""

    def outputs(th: torch.Tensor) -> torch.Tensor:
        return model.forward(features, th.unsqueeze(0), split)[0][0]

    with torch.enable_grad():
        return torch.func.vmap(torch.func.jacrev(outputs))(theta.detach())


def autograd_ntk(model: Model, features: Any, theta: torch.Tensor) -> torch.Tensor:
    """NTK of eq. 4 from the autograd Jacobian: ``H = J J^T / D``."""
    jac = autograd_jacobian(model, features, theta)
    return jac @ jac.transpose(-1, -2) / jac.shape[1]


def autograd_loss_hvp(model: Model, features: Any, theta: torch.Tensor
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Hessian-vector products of ``L = 1/(2D) sum_a (z_a - y_a)^2`` by reverse-over-reverse
    autograd: the gradient's graph is built once, each product is one more backward
    pass through it.  Rows are independent (the summed loss has a block-diagonal
    Hessian), so one pass serves every row."""
    y = model.data.y_train.to(theta)
    with torch.enable_grad():
        th = theta.detach().requires_grad_(True)
        z, _ = model.forward(features, th)
        loss = 0.5 * ((z - y) ** 2).mean(-1).sum()                # docs/theory.md §1, per row
        (grad,) = torch.autograd.grad(loss, th, create_graph=True)

    def product(v: torch.Tensor) -> torch.Tensor:
        if not grad.requires_grad:          # the gradient is constant: no curvature
            return torch.zeros_like(v)
        with torch.enable_grad():
            (out,) = torch.autograd.grad(grad, th, grad_outputs=v, retain_graph=True,
                                         allow_unused=True)
        return torch.zeros_like(v) if out is None else out

    return product
