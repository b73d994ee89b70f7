"""Any ``torch.nn.Module`` as a phasekit model: the author writes ``build()``.

::

    class SmallCNN(ModuleModel):
        name = "small_cnn"
        options = {"channels": Option(8, "convolution channels", check=positive)}

        def build(self):
            c = self.settings["channels"]
            return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, c, 5),
                                 nn.ReLU(), nn.Flatten(), nn.LazyLinear(1))

``build`` runs under a random generator seeded by the run's seed (and with float64
as the default dtype, so every initial weight is drawn in double precision on the
CPU), so a seed's initialisation is reproducible and the same on every device.  The
module maps the dataset's inputs ``(D, d)`` to ``D`` outputs, ``(D,)`` or ``(D, 1)``; a
module that needs another input shape reshapes inside itself.  Its trainable
parameters, flattened in ``named_parameters()`` order, are the model's ``theta``;
buffers stay fixed, and the module runs in eval mode (no dropout noise, batch norm
with its running statistics), so that z is a function of theta alone, as the
theory assumes (docs/theory.md §1).

Everything else comes from the core, batched over the grid's parameter rows without
a Python loop over rates: the forward pass is ``torch.func.functional_call`` under
``vmap``; the gradient step is reverse-mode autograd of the summed losses; the NTK
matrix is ``J J^T / D`` from ``vmap(jacrev)`` for the observables that read it, while
``lambda_0`` and the sharpness come from Lanczos on NTK-vector products
``H u = J (J^T u) / D`` (a ``vjp`` then a ``jvp``), without forming the Jacobian
(:meth:`ModuleModel.ntk_operator`; the engine's operator route,
:meth:`phasekit.model.Model.ntk_operator`).  There are no bounds unless the author
adds them (:meth:`~phasekit.model.Model.bounds`), and seeds share a batch only when
the module has no buffers (:meth:`ModuleModel.can_stack_seeds`).  A converged run
whose NTK vanishes, a dead ReLU net, is ``trivial`` (:meth:`ModuleModel.is_trivial`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from phasekit.errors import PluginError
from phasekit.model import TRIVIAL_NTK_RTOL, Model


@dataclass
class ModuleFeatures:
    """A seed's module skeleton and the inputs of every split."""

    module: torch.nn.Module
    names: list[str]                     # trainable parameters, in named_parameters() order
    shapes: list[torch.Size]
    buffers: dict[str, torch.Tensor]
    x: dict[str, torch.Tensor] = field(default_factory=dict)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """One row ``theta`` (P,) as the module's parameters (views, no copy)."""
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name] = theta[start:start + size].view(shape)
            start += size
        return out


class ModuleModel(Model):
    """A model whose author writes only :meth:`build` (module docstring)."""

    name = "module_model"   # not registered; a plugin subclasses it
    _stackable: bool | None = None      # can_stack_seeds' answer, once known

    def build(self) -> torch.nn.Module:
        """The network, freshly initialised (called once per seed, under that seed)."""
        raise NotImplementedError(f"model {self.name!r} must define build()")

    # -- set-up --------------------------------------------------------------------
    def setup(self, seed, device, dtype):
        module = self._built(seed)
        x = {split: self.data.inputs(split).to(device, dtype)
             for split in ["train"] + (["test"] if self.data.has_test else [])}
        module = module.to(device=device, dtype=dtype).eval()
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not params:
            raise PluginError(f"model {self.name!r}: build() returned a module without "
                              f"trainable parameters")
        feats = ModuleFeatures(module, [n for n, _ in params], [p.shape for _, p in params],
                               {n: b.detach() for n, b in module.named_buffers()}, x)
        theta0 = torch.cat([p.detach().reshape(-1) for _, p in params])
        return feats, theta0

    def _built(self, seed: int) -> torch.nn.Module:
        """``build()`` under ``seed``, drawing in float64 on the CPU, then one call on a
        training input so that lazy layers (``nn.LazyLinear``) draw their weights under
        the same seed; the caller's random state and default dtype are left as they
        were."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            before = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)
            try:
                module = self.build()
                if not isinstance(module, torch.nn.Module):
                    raise PluginError(f"model {self.name!r}: build() must return a "
                                      f"torch.nn.Module; it returned {type(module).__name__}")
                with torch.no_grad():            # lazy layers draw their weights now
                    module.eval()(self.data.inputs("train")[:1].double())
            finally:
                torch.set_default_dtype(before)
        return module

    # -- numerics, batched over the grid -------------------------------------------
    def _function(self, feats: ModuleFeatures, split: str = "train"
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``theta (P,) -> z (D,)`` on ``split``, the module run on one parameter row."""
        x = feats.x[split]
        D = x.shape[0]

        def z(theta: torch.Tensor) -> torch.Tensor:
            out = torch.func.functional_call(feats.module, (feats.unflatten(theta),
                                                            feats.buffers), (x,))
            if not isinstance(out, torch.Tensor) or out.shape not in ((D,), (D, 1)) \
                    or not out.is_floating_point():
                got = (f"shape {tuple(out.shape)}, dtype {out.dtype}"
                       if isinstance(out, torch.Tensor) else type(out).__name__)
                raise PluginError(f"model {self.name!r}: the module must map inputs ({D}, "
                                  f"{x.shape[-1]}) to floating-point outputs of shape "
                                  f"({D},) or ({D}, 1); it returned {got}")
            return out.reshape(D)

        return z

    def forward(self, feats, theta, split="train"):
        return torch.func.vmap(self._function(feats, split))(theta), None

    def ntk_operator(self, feats, theta, cache) -> Callable[[torch.Tensor], torch.Tensor]:
        """``u (G, D) -> H u``, with ``H u = J (J^T u) / D`` per row: a vjp and a jvp of the
        module (eq. 4), never the (D, P) Jacobian."""
        f = self._function(feats)

        def product(th: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            _, pullback = torch.func.vjp(f, th)
            (tangent,) = pullback(u)
            return torch.func.jvp(f, (th,), (tangent,))[1] / u.shape[-1]

        rows = theta.detach()
        return lambda u: torch.func.vmap(product)(rows, u)

    # -- several seeds in one batch -----------------------------------------------------
    def can_stack_seeds(self) -> bool:
        """Seeds share a batch when the module holds no tensor but its parameters (no
        buffers, no tensor attributes, which a seed could have drawn): a seed's features
        are then its skeleton and the inputs, the same for every seed once
        ``functional_call`` replaces the parameters, so a stacked row runs exactly the
        computation of a one-seed batch (``vmap`` over rows; the ``batching`` check of
        :mod:`phasekit.testing` bounds the rest by BATCH_RTOL)."""
        if self._stackable is None:
            module = self._built(0)
            self._stackable = not any(True for _ in module.buffers()) and not any(
                isinstance(v, torch.Tensor) for m in module.modules() for v in vars(m).values())
        return self._stackable

    def stack_seeds(self, features, rows):
        return features[0]

    def take_rows(self, features, keep):
        return features

    def is_trivial(self, feats, theta, cache, ntk, lambda0):
        """A dead network (docs/theory.md §1): the NTK's Rayleigh quotient along a fixed
        random direction ``u``, ``u.H u / |u|^2 = |J^T u|^2 / (D |u|^2)`` (eq. 4; one vjp,
        no Jacobian), at most ``TRIVIAL_NTK_RTOL lambda_0``.  It is 0 exactly when every
        output's gradient vanishes (a ReLU net with a dead layer) and, as H is positive
        semi-definite, positive otherwise unless ``u`` misses the range of H (probability
        zero); for one training point it is the NTK itself."""
        f = self._function(feats)
        D = feats.x["train"].shape[0]
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(D, generator=gen, dtype=torch.float64).to(theta)

        def pulled(th: torch.Tensor) -> torch.Tensor:
            (grad,) = torch.func.vjp(f, th)[1](u)
            return grad.square().sum()

        quotient = torch.func.vmap(pulled)(theta.detach()) / (D * u.square().sum())
        return torch.isfinite(quotient) & (quotient <= TRIVIAL_NTK_RTOL * lambda0)

    def memory_per_point(self, feats, theta0):
        """A step's peak for one grid point: the parameters and their gradient, and the
        (D, P) Jacobian rows and (D, D) NTK an observable reading the NTK matrix forms at
        a recorded step (the sharpness does without them), in the model's dtype."""
        D, P = feats.x["train"].shape[0], theta0.numel()
        return (4 * P + D * (P + D)) * theta0.element_size()


__all__ = ["ModuleFeatures", "ModuleModel"]
