"""``phasekit run --dry-run``: grid size, chunking, memory and a calibrated time estimate,
per axis point."""

from __future__ import annotations

import dataclasses
import time

from .config import ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .memory import fmt_bytes, memory_estimate
from .sweep import Engine, PointEngines, describe_point, make_chunks


def _fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def dry_run_report(config: ResolvedConfig, data: Data | None, manager: PluginManager,
                   calibration_steps: int = 20) -> str:
    sweep = config.sweep
    engines = PointEngines(config, data, manager)
    n_rates, n_seeds = len(sweep["eta_lambda0"]), len(sweep["seeds"])
    axes = " x ".join(f"{len(v)} {k.split('.', 1)[1]}" for k, v in config.axes.items())
    lines = [
        f"model {config.model['name']} on dataset {config.dataset['name']}, device "
        f"{sweep['device']}, {sweep['dtype']}",
        f"grid: {axes + ' x ' if axes else ''}{n_seeds} seed(s) x {n_rates} learning rates "
        f"= {len(engines) * n_seeds * n_rates} runs",
    ]
    total = 0.0
    for i, point in enumerate(engines.points):
        engine = engines[i]
        prepared = engines.prepared(i, sweep["seeds"][0])
        size = engines.chunk_size(i)
        chunks = make_chunks(sweep, i, size)
        fixed, per_point = memory_estimate(engine, prepared)
        steps = min(calibration_steps, sweep["max_steps"])
        calib = Engine(dataclasses.replace(point.config, sweep={
            **point.config.sweep, "max_steps": steps, "tol": 0.0}), point.data, manager)
        calib.run_chunk(chunks[0], prepared=prepared)  # warm-up
        started = time.perf_counter()
        calib.run_chunk(chunks[0], prepared=prepared)
        per_step = (time.perf_counter() - started) / max(steps, 1)
        worst = per_step * sweep["max_steps"] * len(chunks)
        total += worst
        head = f"axis point {describe_point(point)}: " if config.axes else ""
        lines += [
            f"{head}D = {point.data.num_train}, {prepared.theta0.numel():,} parameters per run; "
            f"{len(chunks)} chunk(s) of up to {size} runs advancing together",
            f"  memory per chunk: about {fmt_bytes(fixed + size * per_point)} "
            f"({fmt_bytes(fixed)} fixed + {fmt_bytes(per_point)} per run; "
            f"sweep.memory_budget caps it)",
            f"  calibration: {per_step * 1e3:.2f} ms per step of a full chunk ({steps} steps "
            f"timed); at most {_fmt_time(worst)} if every run went to max_steps",
        ]
    lines.append(f"estimated time: at most {_fmt_time(total)} if every run went to max_steps "
                 f"= {sweep['max_steps']}; runs that converge or diverge leave earlier")
    return "\n".join(lines)
