"""``phasekit run --dry-run``: grid size, chunking, memory and a calibrated time estimate."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from .config import ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .sweep import Engine, make_chunks


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


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def dry_run_report(config: ResolvedConfig, data: Data, manager: PluginManager,
                   calibration_steps: int = 20) -> str:
    sweep = config.sweep
    chunks = make_chunks(sweep)
    n_points = len(sweep["seeds"]) * len(sweep["eta_lambda0"])
    g_max = max(len(c.c_values) for c in chunks)
    engine = Engine(config, data, manager)
    model = engine.model

    prepared = engine.prepare(chunks[0].seed)
    feats, theta0 = prepared.features, prepared.theta0
    theta = theta0.expand(g_max, -1).clone()
    _, cache = model.forward(feats, theta)
    per_chunk = (tensor_bytes(feats) + tensor_bytes(cache)
                 + 4 * theta.numel() * theta.element_size())  # theta, gradient, update, spare

    steps = min(calibration_steps, sweep["max_steps"])
    calib = Engine(dataclasses.replace(config, sweep={**sweep, "max_steps": steps,
                                                      "tol": 0.0}), data, manager)
    calib.run_chunk(chunks[0], prepared=prepared)  # warm-up
    started = time.perf_counter()
    calib.run_chunk(chunks[0], prepared=prepared)
    per_step = (time.perf_counter() - started) / max(steps, 1)
    worst = per_step * sweep["max_steps"] * len(chunks)

    lines = [
        f"model {config.model['name']} on dataset {config.dataset['name']} "
        f"(D = {data.num_train}), device {sweep['device']}, {sweep['dtype']}",
        f"grid: {len(sweep['seeds'])} seed(s) x {len(sweep['eta_lambda0'])} learning rates "
        f"= {n_points} runs",
        f"chunks: {len(chunks)} (up to {g_max} runs advancing together; "
        f"chunk_size = {sweep['chunk_size'] or 'all rates of a seed'})",
        f"parameters per run: {theta0.numel():,}",
        f"memory per chunk: about {_fmt_bytes(per_chunk)} (features, cache, parameters)",
        f"calibration: {per_step * 1e3:.2f} ms per step of a full chunk "
        f"({steps} steps timed)",
        f"estimated time: at most {_fmt_time(worst)} if every run went to max_steps = "
        f"{sweep['max_steps']}; runs that converge or diverge leave earlier",
    ]
    return "\n".join(lines)
