"""Memory of a chunk, and the chunk size that fits ``sweep.memory_budget``.

A chunk of G grid points holds its seed's fixed objects once (features and
theta_0) and, per grid point, the parameters, the forward cache, the NTK and
the temporaries of a step.  A model states the per-point peak through
:meth:`phasekit.model.Model.memory_per_point`; otherwise it is measured from
the tensors of one forward pass and NTK.  With ``sweep.memory_budget`` (GiB)
and ``chunk_size = 0`` each axis point's chunks hold the largest G that fits it;
the estimate depends on the config alone, so a resumed or distributed run cuts
the grid the same way; an explicit ``chunk_size`` is checked against the budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from phasekit.config.limits import (  # noqa: F401  (the memory limit lives with the sizes)
    MEMORY_LIMIT_ENV,
    describe_memory_limit,
    machine_memory,
    memory_limit,
)
from phasekit.errors import ConfigError, fmt_bytes

GIB = 2 ** 30


def tensor_bytes(obj: Any, seen: set | None = None) -> int:
    """Bytes held by the tensors inside ``obj`` (dataclasses, dicts, lists, attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(tensor_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


def memory_estimate(engine, prepared) -> tuple[int, int]:
    """``(fixed, per_point)`` bytes of a chunk: a chunk of G points needs about
    ``fixed + G * per_point``."""
    model = engine.model
    feats, theta0 = prepared.features, prepared.theta0
    fixed = tensor_bytes(feats) + tensor_bytes(theta0)
    per_point = model.memory_per_point(feats, theta0)
    if per_point is None:
        theta = theta0[None].clone()
        z, cache = model.forward(feats, theta)
        ntk = model.ntk(feats, theta, cache)
        per_point = (tensor_bytes(cache) + tensor_bytes(ntk) + 3 * tensor_bytes(z)
                     + 4 * tensor_bytes(theta))          # theta, its update and copies
    return fixed, int(per_point)


def fitted_chunk_size(engine, prepared) -> int:
    """Runs per chunk at one axis point under ``sweep.memory_budget`` (module docstring):
    ``sweep.chunk_size`` if given and it fits, else the most runs that fit."""
    sweep = engine.sweep
    budget = sweep["memory_budget"]
    n_rates = len(sweep["eta_lambda0"])
    if not budget:
        return sweep["chunk_size"] or n_rates
    fixed, per_point = memory_estimate(engine, prepared)
    fits = int((budget * GIB - fixed) // per_point) if per_point else n_rates
    at = f" at {engine.where}" if engine.where else ""
    need = (f"about {fmt_bytes(fixed)} for the seed's features plus {fmt_bytes(per_point)} "
            f"per run advancing together{at}")
    if fits < 1:
        raise ConfigError(f"sweep.memory_budget = {budget} GiB is too small for even one run: "
                          f"a chunk needs {need}; raise the budget (or use a smaller model "
                          f"or dataset)")
    if sweep["chunk_size"] > fits:
        raise ConfigError(f"sweep.chunk_size = {sweep['chunk_size']} does not fit "
                          f"sweep.memory_budget = {budget} GiB ({need}, so at most {fits} "
                          f"runs); lower chunk_size, or set it to 0 to derive it from the "
                          f"budget")
    return sweep["chunk_size"] or min(fits, n_rates)


#: memory a batch of several seeds may take when ``sweep.memory_budget`` is not set
AUTO_BATCH_BYTES = GIB


def seeds_fitting(engine, prepared, chunk_size: int) -> int:
    """How many seeds' chunks of ``chunk_size`` runs fit one batch: within
    ``sweep.memory_budget``, or :data:`AUTO_BATCH_BYTES` without one (at least 1).

    Stacked features hold per-row copies of a seed's fixed objects, so each run is
    charged its share of a step (:func:`memory_estimate`) plus a whole copy of them."""
    budget = engine.sweep["memory_budget"] * GIB or AUTO_BATCH_BYTES
    fixed, per_point = memory_estimate(engine, prepared)
    per_seed = chunk_size * (per_point + fixed) + fixed
    return max(1, int(budget // per_seed)) if per_seed else 1
