"""``phasekit run --dry-run``: grid size, chunking, memory and a time estimate, per axis
point, in a few seconds.

The time of a sweep run in one process is modelled as

* **start-up** (imports, config, data): what this process took so far, when it is the
  ``phasekit`` command;
* **preparing** each (axis point, seed): features, initialisation, ``lambda_0`` and the
  bounds, timed once per axis point;
* **training** every chunk: at step ``t`` the ``a_t`` runs still training make one
  update, costing ``U(a) = u0 + u1 a`` seconds; at a recorded step (the
  ``record_schedule`` of the config) and at a step where runs stop, the NTK, the
  sharpness and the observables add ``R(a) = r0 + r1 a``.  ``U`` and ``R`` are
  calibrated by timing single steps of a full chunk and of one run, both recorded and
  unrecorded, through the engine's progress callback;
* the steps each run takes, the expensive unknown: a **pilot** runs every learning
  rate of the first seed with the real stopping rule for as many steps as fit a time
  budget (the whole run when it fits).  Runs that stop within the pilot take that many
  steps; for the others the pilot records the loss at pairs of consecutive steps, and
  the decay of ``|L_t - L_(t-1)|`` (fitted as geometric over the last pairs) is
  extrapolated to the step where it falls below ``tol``, or to ``max_steps`` when it
  does not decay.  Every seed is assumed to take the first seed's steps.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .config import ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .memory import fmt_bytes, memory_estimate
from .sweep import Chunk, Engine, PointEngines, describe_point, make_chunks, record_schedule

#: seconds the pilots of all axis points may take together
PILOT_BUDGET = 3.0
#: consecutive-step pairs at which a pilot records the loss
PILOT_PAIRS = 12
#: steps timed per kind (recorded, unrecorded) when calibrating
CALIBRATION_STEPS = 6


def _fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _startup_seconds() -> float | None:
    """Seconds since this process started, when it is the ``phasekit`` command (Linux
    ``/proc``); None otherwise (a library call: its process did other things)."""
    if Path(sys.argv[0]).name != "phasekit":
        return None
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = float(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def _variant(engine: Engine, schedule: np.ndarray | None = None, **sweep) -> Engine:
    """``engine`` with some ``[sweep]`` values replaced and, optionally, its own record
    schedule (the model, data and observables are shared, not rebuilt)."""
    out = copy.copy(engine)
    out.sweep = {**engine.sweep, **sweep}
    out.config = dataclasses.replace(engine.config, sweep=out.sweep)
    out.schedule = (record_schedule(out.sweep["max_steps"], out.sweep["record_dense"],
                                    out.sweep["record_per_decade"])
                    if schedule is None else schedule)
    return out


class _StepClock:
    """A progress callback that notes the time after every update."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, steps: int, finished=(), at: int = 0) -> None:
        if steps:
            self.stamps.append(time.perf_counter())


@dataclasses.dataclass
class Linear:
    """Seconds per step as a function of the runs ``a`` advancing together."""

    fixed: float
    per_run: float

    def __call__(self, a):
        return self.fixed + self.per_run * a


@dataclasses.dataclass
class StepCosts:
    unrecorded: Linear        # forward + update
    recording: Linear         # what a recorded step adds: NTK, sharpness, observables
    batch: int                # the full chunk's runs


def _time_steps(engine: Engine, chunk: Chunk, prepared, steps: int) -> tuple[float, float]:
    """Median seconds of a recorded and of an unrecorded step of ``chunk``'s runs
    advancing together (no run stops: ``tol = 0``)."""
    calib = _variant(engine, max_steps=2 * steps + 1, tol=0.0, record_dense=steps + 1,
                     record_per_decade=0)
    clock = _StepClock()
    calib.run_chunk(chunk, clock, prepared=prepared)
    dt = np.diff(clock.stamps)          # dt[k]: step k + 1 (forward, record?, update)
    recorded, plain = dt[:steps], dt[steps:]
    if not (len(recorded) and len(plain)):
        raise RuntimeError(f"calibration runs stopped early ({len(dt)} steps timed)")
    return float(np.median(recorded)), float(np.median(plain))


def calibrate(engine: Engine, chunk: Chunk, prepared, steps: int = CALIBRATION_STEPS
              ) -> StepCosts:
    """Step costs of ``engine`` from a full ``chunk`` and from its first run alone,
    each timed after a warm-up."""
    # Runs that never stop (tol = 0, a stable rate c <= 1), as many as the chunk holds;
    # a step costs the same at any rate.
    c = min(min(chunk.c_values), 1.0)
    full = dataclasses.replace(chunk, c_values=[c] * len(chunk.c_values))
    one = dataclasses.replace(chunk, c_index=chunk.c_index[:1], c_values=[c])
    _variant(engine, max_steps=2, tol=0.0).run_chunk(one, prepared=prepared)      # warm-up
    rec_g, plain_g = _time_steps(engine, full, prepared, steps)
    g = len(full.c_values)
    if g == 1:
        return StepCosts(Linear(0.0, plain_g), Linear(0.0, max(rec_g - plain_g, 0.0)), 1)
    rec_1, plain_1 = _time_steps(engine, one, prepared, steps)

    def line(at_g: float, at_1: float) -> Linear:
        per_run = max((at_g - at_1) / (g - 1), 0.0)
        return Linear(max(at_1 - per_run, 0.0), per_run)

    unrec = line(plain_g, plain_1)
    return StepCosts(unrec, line(max(rec_g - plain_g, 0.0), max(rec_1 - plain_1, 0.0)), g)


def chunk_seconds(stops: np.ndarray, schedule: np.ndarray, costs: StepCosts) -> float:
    """Seconds to train one chunk whose runs stop after ``stops`` updates."""
    stops = np.sort(np.asarray(stops, dtype=np.int64))
    last = int(stops[-1])
    t = np.arange(last + 1)
    active = len(stops) - np.searchsorted(stops, t, side="left")     # runs evaluated at t
    seconds = float(costs.unrecorded(active).sum())
    recorded = np.union1d(schedule[schedule <= last], stops)
    return seconds + float(costs.recording(active[recorded]).sum())


def _geometric_stop(t: np.ndarray, dloss: np.ndarray, tol: float) -> float | None:
    """The step where ``|L_t - L_(t-1)|``, geometric through its last three finite
    values, falls below ``tol``; None when it does not decay."""
    ok = np.isfinite(dloss) & (dloss > 0)
    t, d = t[ok][-3:], np.log(dloss[ok][-3:])
    if len(t) < 2 or t[-1] == t[0]:
        return None
    slope, intercept = np.polyfit(t, d, 1)
    if not slope < 0:
        return None
    return (math.log(tol) - intercept) / slope


@dataclasses.dataclass
class Pilot:
    steps: np.ndarray         # predicted updates per learning rate (first seed)
    pilot_steps: int          # how far the pilot ran
    stopped: int              # runs that stopped within it
    extrapolated: int         # runs whose stop was extrapolated from the loss decay
    at_max: int               # runs predicted to reach max_steps
    seconds: float


def pilot(engine: Engine, chunks: list[Chunk], prepared, costs: StepCosts,
          budget: float) -> Pilot:
    """Predicted updates of every learning rate of the first seed (see the module
    docstring): run its chunks with the real stopping rule for as many steps as
    ``budget`` seconds allow, then extrapolate the runs still training."""
    sweep = engine.sweep
    max_steps, tol = sweep["max_steps"], sweep["tol"]
    steps = np.full(len(sweep["eta_lambda0"]), max_steps, dtype=np.float64)
    started = time.perf_counter()
    stopped = extrapolated = 0
    length = 0
    share = budget / max(len(chunks), 1)
    for chunk in chunks:
        g = len(chunk.c_values)
        per_step = costs.unrecorded(g)
        pair_cost = 2 * PILOT_PAIRS * costs.recording(g)
        length = int(min(max_steps, max((share - pair_cost) / max(per_step, 1e-9), 20)))
        pairs = np.unique(np.round(np.geomspace(2, max(length, 2), PILOT_PAIRS)).astype(int))
        schedule = np.unique(np.concatenate([[0, length], pairs - 1, pairs]))
        run = _variant(engine, schedule=schedule, max_steps=length)
        result = run.run_chunk(chunk, prepared=prepared)
        loss = result.traj["loss"]
        pos = {int(s): k for k, s in enumerate(schedule)}
        for j, ci in enumerate(chunk.c_index):
            if result.status[j] != "max_steps" or length == max_steps:
                steps[ci] = result.steps[j]
                stopped += result.status[j] != "max_steps"
                continue
            dloss = np.abs(loss[j, [pos[int(p)] for p in pairs]]
                           - loss[j, [pos[int(p) - 1] for p in pairs]])
            stop = _geometric_stop(pairs.astype(float), dloss, tol)
            if stop is not None and stop < max_steps:
                steps[ci] = max(stop, length + 1)
                extrapolated += 1
    at_max = int((steps >= max_steps).sum())
    return Pilot(np.minimum(np.ceil(steps), max_steps).astype(np.int64), length, stopped,
                 extrapolated, at_max, time.perf_counter() - started)


def dry_run_report(config: ResolvedConfig, data: Data | None, manager: PluginManager,
                   budget: float = PILOT_BUDGET) -> str:
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
    startup = _startup_seconds()
    preparing = training = worst = 0.0
    for i, point in enumerate(engines.points):
        engine = engines[i]
        started = time.perf_counter()
        prepared = engines.prepared(i, sweep["seeds"][0])
        prepare_s = time.perf_counter() - started
        size = engines.chunk_size(i)
        chunks = make_chunks(sweep, i, size)
        first_seed = [c for c in chunks if c.seed_index == 0]
        fixed, per_point = memory_estimate(engine, prepared)
        costs = calibrate(engine, chunks[0], prepared)
        pil = pilot(engine, first_seed, prepared, costs, budget / len(engines))
        per_seed = sum(chunk_seconds(pil.steps[c.c_index], engine.schedule, costs)
                       for c in first_seed)
        longest = sum(chunk_seconds(np.full(len(c.c_values), sweep["max_steps"]),
                                    engine.schedule, costs) for c in first_seed)
        preparing += prepare_s * n_seeds
        training += per_seed * n_seeds
        worst += (prepare_s + longest) * n_seeds
        g = costs.batch
        head = f"axis point {describe_point(point)}: " if config.axes else ""
        exact = pil.pilot_steps >= sweep["max_steps"]
        lines += [
            f"{head}D = {point.data.num_train}, {prepared.theta0.numel():,} parameters per run; "
            f"{len(chunks)} chunk(s) of up to {size} runs advancing together",
            f"  memory per chunk: about {fmt_bytes(fixed + size * per_point)} "
            f"({fmt_bytes(fixed)} fixed + {fmt_bytes(per_point)} per run; "
            f"sweep.memory_budget caps it)",
            f"  calibration: {costs.unrecorded(g) * 1e3:.2f} ms per step of a full chunk "
            f"({g} runs), {(costs.unrecorded(g) + costs.recording(g)) * 1e3:.2f} ms per "
            f"recorded step (NTK, sharpness, observables); {prepare_s:.2f} s to prepare a seed",
            f"  pilot (seed {sweep['seeds'][0]}, every rate, {pil.seconds:.1f} s): "
            + ("ran every run to its stop" if exact else
               f"{pil.pilot_steps} steps; {pil.stopped} run(s) stopped within them, "
               f"{pil.extrapolated} extrapolated from the loss decay, {pil.at_max} "
               f"predicted to reach max_steps")
            + f"; steps per run: median {int(np.median(pil.steps))}, max "
              f"{int(pil.steps.max())} of {sweep['max_steps']}",
            f"  estimate: {_fmt_time(per_seed)} of training per seed",
        ]
    total = preparing + training + (startup or 0.0)
    parts = ([f"{_fmt_time(startup)} start-up"] if startup is not None else []) + [
        f"{_fmt_time(preparing)} preparing seeds", f"{_fmt_time(training)} training"]
    lines += [
        f"estimated time: {_fmt_time(total)} in one process ({', '.join(parts)}; each seed "
        f"assumed to take the pilot seed's steps)",
        f"at most {_fmt_time(worst + (startup or 0.0))} if every run went to max_steps "
        f"= {sweep['max_steps']}",
    ]
    return "\n".join(lines)
