"""``phasekit bench`` workload M: networks written as torch.nn.Module subclasses
(:class:`phasekit.module.ModuleModel`) against their closed-form built-ins and against
the per-rate autograd loop a user writes without phasekit.

The nets are the two-layer uv net (homogeneous, a_+ = a_- = 1) and the two-layer ReLU
net, ``z = v . sigma(U x) / sqrt(n)`` (eq. 7, 53), width :data:`WIDTH`, on 128
two-class Fashion-MNIST images, 16 rates of one seed (4 under ``--quick``), 200 steps
(5), the default record schedule (the sharpness at every recorded step) and no other
observable:

* ``M-uv``, ``M-relu``: run-steps per second of the ModuleModel and of the built-in
  (``homogeneous``, ``relu``, closed-form gradient and NTK, input-span coordinates),
  and their ratio (module / built-in);
* ``M-loop``: the ReLU ModuleModel against a loop over the rates, each trained with
  ``loss.backward()`` on the same module and its NTK from ``torch.func.jacrev`` at
  the same recorded steps, and their ratio (phasekit / loop).

Nothing here asserts a speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from phasekit import hookimpl
from phasekit.config.registry import PluginManager
from phasekit.module import ModuleModel
from phasekit.options import Option, positive

#: hidden units of the nets (their first layer holds 784 x WIDTH weights)
WIDTH = 256
#: grid points (rates of one seed) and steps per run, full and under --quick
POINTS = (16, 4)
STEPS = (200, 5)


class TwoLayer(nn.Module):
    """``z = v . act(U x) / sqrt(n)``, weights N(0, 1) (eq. 53), no biases."""

    def __init__(self, d: int, n: int, act: nn.Module):
        super().__init__()
        self.U = nn.Linear(d, n, bias=False)
        self.v = nn.Linear(n, 1, bias=False)
        nn.init.normal_(self.U.weight)
        nn.init.normal_(self.v.weight)
        self.act, self.root_n = act, math.sqrt(n)

    def forward(self, x):
        return self.v(self.act(self.U(x))) / self.root_n


class UVModule(ModuleModel):
    name = "bench_uv_module"
    description = "the uv net as a torch.nn.Module (bench workload M)"
    options = {"width": Option(WIDTH, "hidden units", check=positive)}

    def build(self):
        return TwoLayer(self.data.input_dim, self.settings["width"], nn.Identity())


class ReLUModule(UVModule):
    name = "bench_relu_module"
    description = "the two-layer ReLU net as a torch.nn.Module (bench workload M)"

    def build(self):
        return TwoLayer(self.data.input_dim, self.settings["width"], nn.ReLU())


class _Modules:
    @hookimpl
    def phasekit_register_models(self, register):
        register(UVModule)
        register(ReLUModule)


def module_manager() -> PluginManager:
    """The installed plugins and the two bench modules."""
    pm = PluginManager()
    pm.register(_Modules(), name="bench_modules")
    return pm


def _engine(model: dict, quick: bool, dtype: str, threads: int, device: str, manager,
            grid: Callable[[int], list[float]]):
    from phasekit.config.resolve import resolve_config
    from phasekit.engine.engine import Engine

    points, steps = (POINTS[1], STEPS[1]) if quick else (POINTS[0], STEPS[0])
    raw = {"model": model, "dataset": {"name": "fmnist", "num_train": 128},
           "sweep": {"eta_lambda0": grid(points), "seeds": [0], "device": device,
                     "max_steps": steps, "tol": 0.0, "dtype": dtype, "observables": [],
                     "threads": threads, "divergence_loss": 1e300}}
    config, data = resolve_config(raw, manager)
    return Engine(config, data, manager)


def loop_rate(engine, seed: int, sync: Callable[[torch.device], None]) -> float:
    """Run-steps per second of the per-rate loop (module docstring) on ``engine``'s
    ModuleModel: its module, data, rates and record schedule (``sync`` waits for the
    device)."""
    model = engine.model
    rates = engine.sweep["eta_lambda0"]
    feats, theta0 = model.setup(seed, engine.device, engine.dtype)
    module, x = feats.module, feats.x["train"]
    y = engine.data.y_train.to(engine.device, engine.dtype)
    lam0 = engine.prepare(seed).lambda0
    recorded = {int(s) for s in engine.schedule}
    steps = engine.sweep["max_steps"]

    def outputs(params):
        return torch.func.functional_call(module, params, (x,)).reshape(-1)

    t = time.perf_counter()
    for c in rates:                                           # one rate at a time
        eta = c / lam0
        params = {n: p.detach().clone().requires_grad_(True)
                  for n, p in feats.unflatten(theta0).items()}
        for step in range(steps + 1):
            loss = 0.5 * ((outputs(params) - y) ** 2).mean()
            if step in recorded:
                with torch.no_grad():
                    jac = torch.func.jacrev(outputs)({n: p.detach() for n, p in params.items()})
                    J = torch.cat([j.reshape(len(y), -1) for j in jac.values()], 1)
                    eta * torch.linalg.eigvalsh(J @ J.T / len(y))[-1]   # the sharpness
            if step == steps:
                break
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p -= eta * g
    sync(engine.device)
    return len(rates) * (steps + 1) / (time.perf_counter() - t)


def module_rows(quick: bool, dtype: str, threads: int, device: str, bench) -> list[dict]:
    """The rows of workload M (module docstring): name, the two rates and their ratio.
    ``bench`` is :mod:`phasekit.cli.bench`, whose grid, timing and device sync the rows
    share with the other workloads (passed in: this module is its helper)."""
    from phasekit.engine.engine import torch_threads

    manager = module_manager()
    rows = []
    common = (dtype, threads, device, manager, bench._grid)
    with torch_threads(threads):
        relu = _engine({"name": "bench_relu_module"}, quick, *common)
        for label, module, builtin in [
                ("M-uv", {"name": "bench_uv_module"},
                 {"name": "homogeneous", "width": WIDTH, "a_plus": 1.0, "a_minus": 1.0}),
                ("M-relu", {"name": "bench_relu_module"}, {"name": "relu", "width": WIDTH})]:
            mine = relu if label == "M-relu" else _engine(module, quick, *common)
            points = len(mine.sweep["eta_lambda0"])
            rate = bench.phasekit_rate(mine, 0, points)[0]
            other = bench.phasekit_rate(_engine(builtin, quick, *common), 0, points)[0]
            rows.append({"row": label, "module": rate, "other": other, "ratio": rate / other})
        loop = loop_rate(relu, 0, bench._sync)
        rows.append({"row": "M-loop", "module": rows[-1]["module"], "other": loop,
                     "ratio": rows[-1]["module"] / loop})
    return rows


__all__ = ["POINTS", "ReLUModule", "STEPS", "UVModule", "WIDTH", "loop_rate", "module_manager",
           "module_rows"]
