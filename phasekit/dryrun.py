"""``phasekit run --dry-run``: grid size, chunking, memory and a calibrated time estimate."""

from __future__ import annotations

import dataclasses
import time

from .config import ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .memory import fmt_bytes, memory_estimate
from .sweep import Engine, make_chunks


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

    prepared = engine.prepare(chunks[0].seed)
    theta0 = prepared.theta0
    fixed, per_point = memory_estimate(engine, prepared)
    per_chunk = fixed + g_max * per_point

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
        f"memory per chunk: about {fmt_bytes(per_chunk)} ({fmt_bytes(fixed)} fixed + "
        f"{fmt_bytes(per_point)} per run; sweep.memory_budget caps it)",
        f"calibration: {per_step * 1e3:.2f} ms per step of a full chunk "
        f"({steps} steps timed)",
        f"estimated time: at most {_fmt_time(worst)} if every run went to max_steps = "
        f"{sweep['max_steps']}; runs that converge or diverge leave earlier",
    ]
    return "\n".join(lines)
