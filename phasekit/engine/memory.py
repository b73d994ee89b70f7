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
import os
from pathlib import Path
from typing import Any

import torch

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


#: Environment variable overriding :func:`memory_limit` (GiB).
MEMORY_LIMIT_ENV = "PHASEKIT_MEMORY_LIMIT_GIB"


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or the cgroup limit
    where that is lower (a container); ``None`` where unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            sizes.append(int(text))
    sizes = [s for s in sizes if s > 0]
    return min(sizes) if sizes else None


def memory_limit() -> float:
    """The most bytes phasekit builds or loads as one dataset: half of
    :func:`machine_memory` (``$PHASEKIT_MEMORY_LIMIT_GIB`` GiB where set)."""
    text = os.environ.get(MEMORY_LIMIT_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"{MEMORY_LIMIT_ENV} must be a positive number of GiB, got "
                              f"{text!r}")
        return value * 2 ** 30
    total = machine_memory()
    return total / 2 if total else float("inf")


def describe_memory_limit() -> str:
    """:func:`memory_limit` in words, saying where it comes from."""
    if os.environ.get(MEMORY_LIMIT_ENV):
        return f"{fmt_bytes(memory_limit())}, set by {MEMORY_LIMIT_ENV}"
    total = fmt_bytes(machine_memory() or 0)
    return (f"{fmt_bytes(memory_limit())}, half of this machine's {total}; "
            f"{MEMORY_LIMIT_ENV} sets another limit")
