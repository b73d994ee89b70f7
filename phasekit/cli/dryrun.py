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
  calibrated per axis point by timing single steps of a full chunk and of one run,
  recorded and unrecorded, through the engine's progress callback;
* the steps each run takes, the expensive unknown: a **pilot** runs every learning
  rate of the first seed with the real stopping rule for as many steps as fit a time
  budget (the whole run when it fits).  Runs that stop within it (early divergence,
  fast convergence) take that many steps.  For the others, gradient descent on the
  model linearised at initialisation (:func:`linear_stop`: the residual along each
  eigenvector of ``H_0`` shrinks by ``1 - eta lam`` per step; the directions the
  catapult removes, ``eta lam >= 2``, left out) gives the step where ``|L_t -
  L_(t-1)|`` falls below ``tol``.  Every seed is assumed to take the first seed's
  steps;
* **assembling** the dataset and its critical learning rates, timed on stand-in
  results of the sweep's shape (writing the file is not modelled).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from phasekit.config.registry import PluginManager
from phasekit.config.resolve import ResolvedConfig
from phasekit.dataset import Data
from phasekit.engine.chunks import Chunk, ChunkResult, make_chunks
from phasekit.engine.engine import Engine, record_schedule, torch_threads
from phasekit.engine.memory import memory_estimate
from phasekit.engine.points import PointEngines, describe_point
from phasekit.errors import fmt_bytes

#: seconds the pilots of all axis points may take together
PILOT_BUDGET = 2.0
#: the shortest pilot, in steps
MIN_PILOT_STEPS = 10
#: recorded and unrecorded steps timed when calibrating a full chunk (a recorded
#: step of many runs is the expensive one) and one run
CALIBRATION_FULL = (1, 4)
CALIBRATION_ONE = (2, 5)


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


def _time_steps(engine: Engine, chunk: Chunk, prepared, recorded: int, plain: int
                ) -> tuple[float, float]:
    """Median seconds of a recorded and of an unrecorded step of ``chunk``'s runs
    advancing together (no run stops: ``tol = 0``): steps ``1..recorded`` are recorded,
    the ``plain`` steps after them not."""
    last = recorded + plain + 1
    calib = _variant(engine, schedule=np.array([*range(1, recorded + 1), last]),
                     max_steps=last, tol=0.0)
    clock = _StepClock()
    calib.run_chunk(chunk, clock, prepared=prepared)
    dt = np.diff(clock.stamps)          # dt[k]: step k + 1 (forward, record?, update)
    if len(dt) < recorded + plain:
        raise RuntimeError(f"calibration runs stopped early ({len(dt)} steps timed)")
    return float(np.median(dt[:recorded])), float(np.median(dt[recorded:]))


def calibrate(engine: Engine, chunk: Chunk, prepared) -> StepCosts:
    """Step costs of ``engine`` from a full ``chunk`` and from its first run alone,
    after a warm-up."""
    # Runs that never stop (tol = 0, a stable rate c <= 1), as many as the chunk holds;
    # a step costs the same at any rate.
    c = min(min(chunk.c_values), 1.0)
    full = dataclasses.replace(chunk, c_values=[c] * len(chunk.c_values))
    one = dataclasses.replace(chunk, c_index=chunk.c_index[:1], c_values=[c])
    _variant(engine, max_steps=2, tol=0.0).run_chunk(one, prepared=prepared)      # warm-up
    rec_g, plain_g = _time_steps(engine, full, prepared, *CALIBRATION_FULL)
    g = len(full.c_values)
    if g == 1:
        return StepCosts(Linear(0.0, plain_g), Linear(0.0, max(rec_g - plain_g, 0.0)), 1)
    rec_1, plain_1 = _time_steps(engine, one, prepared, *CALIBRATION_ONE)

    def line(at_g: float, at_1: float) -> Linear:
        per_run = max((at_g - at_1) / (g - 1), 0.0)
        return Linear(max(at_1 - per_run, 0.0), per_run)

    unrec = line(plain_g, plain_1)
    return StepCosts(unrec, line(max(rec_g - plain_g, 0.0), max(rec_1 - plain_1, 0.0)), g)


def chunk_seconds(stops: np.ndarray, schedule: np.ndarray, costs: StepCosts) -> float:
    """Seconds to train one chunk whose runs stop after ``stops`` updates.

    In closed form over the runs' stops ``s_0 <= ... <= s_(n-1)`` (never a per-step
    array: ``max_steps`` may be astronomically large): during the ``s_k - s_(k-1)``
    steps after ``s_(k-1)`` (``s_(-1) = -1``), ``n - k`` runs are evaluated."""
    stops = np.sort(np.asarray(stops, dtype=np.int64))
    last = int(stops[-1])
    lengths = np.diff(stops, prepend=-1).astype(np.float64)          # steps per stretch
    active = len(stops) - np.arange(len(stops))
    seconds = float((lengths * costs.unrecorded(active)).sum())
    recorded = np.union1d(schedule[schedule <= last], stops)
    at = len(stops) - np.searchsorted(stops, recorded, side="left")   # runs evaluated there
    return seconds + float(costs.recording(at).sum())


def initial_modes(engine: Engine, prepared) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``lam_i`` of the NTK ``H_0`` of ``prepared``'s seed and the squared
    components ``r_i^2`` of the initial residual ``eps_0 = z_0 - y`` along its
    eigenvectors."""
    model = engine.model
    theta = prepared.theta0[None]
    with torch_threads(engine.sweep["threads"]):
        z, cache = model.forward(prepared.features, theta)
        eps = (z - engine.data.y_train.to(z))[0]
        lam, vec = torch.linalg.eigh(model.ntk(prepared.features, theta, cache)[0])
        r2 = (vec.mT @ eps) ** 2
    return lam.to("cpu", torch.float64).numpy(), r2.to("cpu", torch.float64).numpy()


def linear_stop(lam: np.ndarray, r2: np.ndarray, eta: float, tol: float,
                horizon: int) -> int:
    """Updates after which gradient descent on the model linearised at initialisation
    has ``|L_s - L_(s-1)| < tol`` (``horizon`` when not by then).

    The residual moves as ``eps_s = (I - eta H_0)^s eps_0``; along the eigenvector of
    ``lam_i`` it shrinks by ``1 - eta lam_i`` per step, so with ``q_i = (1 - eta
    lam_i)^2``, ``|L_s - L_(s-1)| = sum_i r_i^2 (1 - q_i) q_i^(s-1) / (2D)``, which
    decreases in ``s``.  Directions with ``eta lam_i >= 2`` are left out: in the
    linearised model they grow, in the network the catapult removes them (the NTK's
    top shrinks until ``eta lam < 2``), and the small eigenvalues, which set the
    time to converge, are what remains."""
    q = (1.0 - eta * lam) ** 2
    keep = eta * lam < 2.0
    w = r2[keep] * (1.0 - q[keep]) / (2 * len(lam))
    log_q = np.log(np.maximum(q[keep], 1e-300))

    def dloss(s: int) -> float:
        return float(np.sum(w * np.exp((s - 1) * log_q)))

    if dloss(horizon) >= tol:
        return horizon
    lo, hi = 0, horizon                     # dloss(hi) < tol <= dloss(lo) (lo = 0: none yet)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dloss(mid) < tol:
            hi = mid
        else:
            lo = mid
    return hi


@dataclasses.dataclass
class Pilot:
    steps: np.ndarray         # predicted updates per learning rate (first seed)
    pilot_steps: int          # how far the pilot ran
    stopped: int              # runs that stopped within it
    modelled: int             # runs whose stop the linearised model predicts
    at_max: int               # runs predicted to reach max_steps
    seconds: float


def pilot(engine: Engine, chunks: list[Chunk], prepared, costs: StepCosts,
          budget: float) -> Pilot:
    """Predicted updates of every learning rate of the first seed (see the module
    docstring): run its chunks with the real stopping rule for as many steps as
    ``budget`` seconds allow; runs still training then get :func:`linear_stop`."""
    sweep = engine.sweep
    max_steps, tol = sweep["max_steps"], sweep["tol"]
    steps = np.zeros(len(sweep["eta_lambda0"]), dtype=np.int64)
    started = time.perf_counter()
    stopped = modelled = length = 0
    modes = None
    share = budget / max(len(chunks), 1)
    for chunk in chunks:
        g = len(chunk.c_values)
        length = int(min(max_steps, max((share - costs.recording(g))
                                        / max(costs.unrecorded(g), 1e-9), MIN_PILOT_STEPS)))
        # Recorded only where runs stop, without observables: only the stopping rule
        # matters here.
        run = _variant(engine, schedule=np.array([length]), max_steps=length)
        run.observables = []
        result = run.run_chunk(chunk, prepared=prepared)
        for j, ci in enumerate(chunk.c_index):
            if result.status[j] != "max_steps" or length == max_steps:
                steps[ci] = result.steps[j]
                stopped += result.status[j] != "max_steps"
                continue
            if modes is None:
                modes = initial_modes(engine, prepared)
            eta = chunk.c_values[j] / engine.c_unit(prepared)
            steps[ci] = max(linear_stop(*modes, eta, tol, max_steps), length + 1)
            modelled += 1
    steps = np.minimum(steps, max_steps)
    return Pilot(steps, length, stopped, modelled, int((steps >= max_steps).sum()),
                 time.perf_counter() - started)


def _stand_in(engine: Engine, chunk: Chunk, prepared, steps: np.ndarray) -> ChunkResult:
    """A result of ``chunk``'s shape (every trajectory and observable, the recorded
    steps, the extra dimensions) whose runs stop after ``steps`` updates."""
    sizes = {name: tuple(len(v) for v in coords.values())
             for name, coords in engine.observable_coords().items()}
    names = ["loss", "weight_norm", "sharpness", *(o.name for o in engine.observables)]
    g, rec = len(chunk.c_values), len(engine.schedule)
    traj = {n: np.ones((g, rec, *sizes.get(n, ()))) for n in names}
    return ChunkResult(chunk, prepared.lambda0, prepared.bounds, np.ones(g), traj,
                       {n: v[:, 0] for n, v in traj.items()}, np.asarray(steps),
                       np.full(g, "converged"), {o.name: o.dims for o in engine.observables})


def finishing_seconds(engines: PointEngines, results: list[ChunkResult]) -> float:
    """Seconds to assemble the dataset and its critical learning rates from ``results``
    (what the run does after its last chunk, writing the file aside)."""
    from phasekit.analysis.phases import add_critical
    from phasekit.io.netcdf import build_dataset

    started = time.perf_counter()
    add_critical(build_dataset(engines, results))
    return time.perf_counter() - started


def dry_run_report(config: ResolvedConfig, data: Data | None, manager: PluginManager,
                   budget: float = PILOT_BUDGET) -> str:
    """What ``phasekit run --dry-run`` prints: the grid, then per axis point its chunks,
    memory, calibration and pilot, then the estimated time of the whole sweep."""
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
    stand_ins = []
    for i in range(len(engines)):
        point_lines, prepare_s, per_seed, longest, point_stand_ins = _point_estimate(
            engines, i, budget / len(engines))
        lines += point_lines
        stand_ins += point_stand_ins
        preparing += prepare_s * n_seeds
        training += per_seed * n_seeds
        worst += (prepare_s + longest) * n_seeds
    finishing = finishing_seconds(engines, stand_ins)
    total = preparing + training + finishing + (startup or 0.0)
    parts = ([f"{_fmt_time(startup)} start-up"] if startup is not None else []) + [
        f"{_fmt_time(preparing)} preparing seeds", f"{_fmt_time(training)} training",
        f"{_fmt_time(finishing)} assembling the dataset"]
    lines += [
        f"estimated time: {_fmt_time(total)} in one process ({', '.join(parts)}; each seed "
        f"assumed to take the pilot seed's steps)",
        f"at most {_fmt_time(worst + finishing + (startup or 0.0))} if every run went to "
        f"max_steps = {sweep['max_steps']}",
    ]
    return "\n".join(lines)


def _point_estimate(engines: PointEngines, i: int, budget: float
                    ) -> tuple[list[str], float, float, float, list]:
    """Axis point ``i``: its report lines, the seconds to prepare a seed, to train one
    seed (pilot seed's steps) and at most (every run to max_steps), and the stand-in
    results of its chunks (for the assembly time)."""
    config, engine, point = engines.config, engines[i], engines.points[i]
    sweep = config.sweep
    started = time.perf_counter()
    prepared = engines.prepared(i, sweep["seeds"][0])
    prepare_s = time.perf_counter() - started
    size = engines.chunk_size(i)
    together = engines.seeds_per_batch(i)
    chunks = make_chunks(sweep, i, size)
    first_seed = [c for c in chunks if c.seed_index == 0]
    fixed, per_point = memory_estimate(engine, prepared)
    costs = calibrate(engine, chunks[0], prepared)
    pil = pilot(engine, first_seed, prepared, costs, budget)
    per_seed = sum(chunk_seconds(pil.steps[c.c_index], engine.schedule, costs)
                   for c in first_seed)
    longest = sum(chunk_seconds(np.full(len(c.c_values), sweep["max_steps"]),
                                engine.schedule, costs) for c in first_seed)
    stand_ins = [_stand_in(engine, c, prepared, pil.steps[c.c_index]) for c in chunks]
    g = costs.batch
    head = f"axis point {describe_point(point)}: " if config.axes else ""
    exact = pil.pilot_steps >= sweep["max_steps"]
    lines = [
        f"{head}D = {point.data.num_train}, {prepared.theta0.numel():,} parameters per run; "
        f"{len(chunks)} chunk(s) of up to {size} runs, "
        + (f"{together} seeds per batch (up to {together * size} runs advancing together)"
           if together > 1 else "each advancing on its own (one seed per batch)"),
        f"  memory per chunk: about {fmt_bytes(fixed + size * per_point)} "
        f"({fmt_bytes(fixed)} fixed + {fmt_bytes(per_point)} per run; "
        f"sweep.memory_budget caps it)",
        f"  calibration: {costs.unrecorded(g) * 1e3:.2f} ms per step of a full chunk "
        f"({g} runs), {(costs.unrecorded(g) + costs.recording(g)) * 1e3:.2f} ms per "
        f"recorded step (NTK, sharpness, observables); {prepare_s:.2f} s to prepare a seed",
        f"  pilot (seed {sweep['seeds'][0]}, every rate, {pil.seconds:.1f} s): "
        + ("ran every run to its stop" if exact else
           f"{pil.pilot_steps} steps; {pil.stopped} run(s) stopped within them, "
           f"{pil.modelled} predicted by the model linearised at initialisation, "
           f"{pil.at_max} of them to reach max_steps")
        + f"; steps per run: median {int(np.median(pil.steps))}, max "
          f"{int(pil.steps.max())} of {sweep['max_steps']}",
        f"  estimate: {_fmt_time(per_seed)} of training per seed",
    ]
    return lines, prepare_s, per_seed, longest, stand_ins
