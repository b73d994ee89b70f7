"""``phasekit run --dry-run``: grid size, chunking, memory and a time estimate, per axis
point, in a few seconds.

The time of a sweep run in one process is modelled as

* **start-up** (imports, config, data): what this process took so far, when it is the
  ``phasekit`` command;
* **preparing** each (axis point, seed): features, initialisation, ``lambda_0`` and the
  bounds, timed on the first seed (one-off costs included) and on the further seeds
  the pilot prepares;
* **training** every batch the run will train (:meth:`PointEngines.batches`: blocks of
  seeds stacked): at step ``t`` the ``a_t`` runs still training make one update,
  costing ``U(a)`` seconds; at a recorded step (the ``record_schedule`` of the
  config) and at a step where runs stop, the NTK, the sharpness and the observables
  add ``R(a)``; where some runs stop and others go on, the kept runs' forward pass is
  recomputed, one more ``U``.  ``U`` and ``R`` are piecewise linear in ``a`` through
  the mean times of the run's own steps, pooled per half-octave of run counts and made
  non-decreasing (:func:`fit_curve`): a full batch and one run timed after a warm-up
  (:func:`calibrate`), then every step of the pilot in which no run stops, its first
  pass recording as the run does (:func:`refit`), all through the engine's progress
  callback;
* the steps each run takes, the expensive unknown: a **pilot** runs every learning
  rate of the first batch's seeds (as many as fit its budget) with the real stopping
  rule for as many steps as fit a time budget (the whole run when it fits), then the
  runs still training alone, longer, while they fit (:func:`_pilot_chunk`).  Runs
  that stop within it (early divergence, fast convergence) take that many steps.
  For the others, gradient descent on the model linearised at initialisation
  (:func:`linear_stop`: the residual along each eigenvector of ``H_0`` shrinks by
  ``1 - eta lam`` per step; the directions the catapult removes, ``eta lam >= 2``,
  left out) gives the step where ``|L_t - L_(t-1)|`` falls below ``tol``.  The seeds
  beyond the piloted ones are assumed to take the piloted seeds' steps;
* **assembling** the dataset and its critical learning rates, timed on stand-in
  results of the sweep's shape after a warm-up (writing the file is not modelled).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from collections.abc import Callable
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
#: the rate c of the calibration's runs
CALIBRATION_RATE = 0.01
#: seconds one calibration may fill with repeated steps: a cheap step (a fraction of a
#: millisecond on small models) is timed up to 8 times as often, since single timings
#: of a loaded machine scatter by more than the step itself
CALIBRATION_SECONDS = 0.2


def fmt_time(s: float) -> str:
    """A duration in seconds for an estimate: ``95.0 s``, ``3.5 min``, ``2.1 h``."""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def startup_seconds() -> float | None:
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


def engine_variant(engine: Engine, schedule: np.ndarray | None = None, **sweep) -> Engine:
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
class Curve:
    """Seconds per step against the runs ``a`` advancing together, piecewise linear
    through timed means (:func:`fit_curve`), flat beyond the first and last."""

    at: np.ndarray
    seconds: np.ndarray

    def __call__(self, a):
        return np.interp(a, self.at, self.seconds)


#: timed steps are pooled per bin of run counts this many to an octave
BINS_PER_OCTAVE = 2


def fit_curve(samples: list[tuple[int, float, int]]) -> Curve:
    """The :class:`Curve` through ``samples`` (runs advancing, mean seconds, steps
    timed): per bin of run counts (:data:`BINS_PER_OCTAVE`), the means of ``a`` and of
    the seconds weighted by the steps behind each, made non-decreasing in ``a`` (more
    runs never cost less: a bin that waited for a core is pooled with its neighbours,
    :func:`_increasing`) and never below 0.  Not a line through one run and a full
    batch: a step's cost is not linear in the runs (on ``uv_width`` at width 16, 240
    runs step in 13 ms, 120 in 1.5 ms)."""
    a, t, w = (np.array([s[k] for s in samples], dtype=np.float64) for k in range(3))
    keep = w > 0
    a, t, w = a[keep], t[keep], w[keep]
    bins = np.round(BINS_PER_OCTAVE * np.log2(a)).astype(np.int64)
    knots = np.unique(bins)
    at = np.array([np.average(a[bins == b], weights=w[bins == b]) for b in knots])
    seconds = np.array([np.average(t[bins == b], weights=w[bins == b]) for b in knots])
    weights = np.array([w[bins == b].sum() for b in knots])
    return Curve(at, np.maximum(_increasing(seconds, weights), 0.0))


def _increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest to ``values`` in weighted least squares
    (pool adjacent violators: a value above the next is replaced, with it, by their
    weighted mean, until none is)."""
    blocks: list[list[float]] = []              # [mean, weight, values pooled]
    for v, w in zip(values, weights, strict=True):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])


@dataclasses.dataclass
class StepCosts:
    unrecorded: Callable      # U(a): forward + update
    recording: Callable       # R(a): what a recorded step adds: NTK, sharpness, observables
    batch: int                # the full chunk's runs
    #: the timed steps behind ``unrecorded`` and ``recording``: (runs advancing, mean
    #: seconds, steps timed), the calibration's and, after :func:`refit`, the pilot's
    plain: list[tuple[int, float, int]] = dataclasses.field(default_factory=list)
    recorded: list[tuple[int, float, int]] = dataclasses.field(default_factory=list)


class PilotClock:
    """A progress callback that keeps ``(runs advancing, seconds, recorded)`` of every
    step of a pass in which no run stops (a stop adds a recording of the stopping runs
    and a second forward pass); :meth:`begin` starts a pass and says where it
    records."""

    def __init__(self):
        self.steps: list[tuple[int, float, bool]] = []
        self._last: float | None = None
        self._stopped = False
        self._t = -1
        self._schedule: set[int] = set()

    def begin(self, schedule: np.ndarray) -> None:
        """A new pass, recording at ``schedule``: its first step (which sets up the
        batch) is not timed."""
        self._last, self._t, self._schedule = None, -1, set(schedule.tolist())

    def __call__(self, steps: int, finished=(), at: int = 0) -> None:
        now = time.perf_counter()
        if not steps:
            self._stopped = True
            return
        self._t += 1
        if self._last is not None and not self._stopped:
            self.steps.append((steps, now - self._last, self._t in self._schedule))
        self._last, self._stopped = now, False


def _means(steps: list[tuple[int, float]]) -> list[tuple[int, float, int]]:
    """``(a, seconds)`` pooled per run count: ``(a, mean seconds, steps)``."""
    by_a: dict[int, list[float]] = {}
    for a, dt in steps:
        by_a.setdefault(a, []).append(dt)
    return [(a, float(np.mean(v)), len(v)) for a, v in sorted(by_a.items())]


def refit(costs: StepCosts, steps: list[tuple[int, float, bool]]) -> StepCosts:
    """``costs`` with ``U`` fitted to the calibration's and the pilot's unrecorded steps
    and ``R`` to their recorded ones, less ``U`` (``steps``: :class:`PilotClock`'s).
    The pilot times hundreds to thousands of the run's own steps at the run counts its
    runs pass through, where the calibration times a few at two: on a shared machine
    a step of a millisecond scatters by a factor of ten (a wait for a core)."""
    plain = costs.plain + _means([(a, dt) for a, dt, rec in steps if not rec])
    unrecorded = fit_curve(plain)
    recorded = costs.recorded + _means([(a, dt - float(unrecorded(a)))
                                        for a, dt, rec in steps if rec])
    return dataclasses.replace(costs, unrecorded=unrecorded, recording=fit_curve(recorded),
                               plain=plain, recorded=recorded)


def _time_steps(engine: Engine, chunks: list[Chunk], prepared, recorded: int, plain: int
                ) -> tuple[float, float, int, int]:
    """Mean seconds of a recorded and of an unrecorded step of the batch ``chunks``
    advancing together (no run stops: ``tol = 0``): steps ``1..recorded`` are recorded,
    the ``plain`` steps after them not; and how many of each were timed."""
    first = _step_times(engine, chunks, prepared, recorded, plain)
    repeat = min(int(CALIBRATION_SECONDS / max(first[0] * recorded + first[1] * plain, 1e-9)),
                 8)
    repeat = max(repeat, 1)
    if repeat == 1:
        return (*first, recorded, plain)
    return (*_step_times(engine, chunks, prepared, recorded * repeat, plain * repeat),
            recorded * repeat, plain * repeat)


def _step_times(engine: Engine, chunks: list[Chunk], prepared, recorded: int, plain: int
                ) -> tuple[float, float]:
    """One timing of :func:`_time_steps`."""
    last = recorded + plain + 1
    # Step 0 is recorded too, untimed: the batch's first evaluation pays one-off costs
    # (a network's copy of the test split per row, say) that the run pays once a batch.
    calib = engine_variant(engine, schedule=np.array([*range(recorded + 1), last]),
                     max_steps=last, tol=0.0)
    clock = _StepClock()
    calib.run_batch(chunks, clock, prepared=[prepared] * len(chunks))
    dt = np.diff(clock.stamps)          # dt[k]: step k + 1 (forward, record?, update)
    if len(dt) < recorded + plain:
        raise RuntimeError(f"calibration runs stopped early ({len(dt)} steps timed)")
    # Means, not medians: on a shared machine a step now and then waits for a core, and
    # the run pays those waits too.
    return float(np.mean(dt[:recorded])), float(np.mean(dt[recorded:]))


def calibrate(engine: Engine, chunk: Chunk, prepared, seeds: int = 1) -> StepCosts:
    """Step costs of ``engine`` from a full batch (``seeds`` copies of the full ``chunk``
    stacked, as the run batches that many seeds; the first seed's objects stand in for
    the others) and from the chunk's first run alone, after a warm-up."""
    # Runs that never stop (tol = 0, a small rate: c = 1 diverges on narrow deep ReLU
    # nets), as many as the batch holds; a step costs the same at any rate.
    c = CALIBRATION_RATE
    full = [dataclasses.replace(chunk, seed_index=k, c_values=[c] * len(chunk.c_values))
            for k in range(seeds)]
    one = dataclasses.replace(chunk, c_index=chunk.c_index[:1], c_values=[c])
    engine_variant(engine, max_steps=2, tol=0.0).run_chunk(one, prepared=prepared)      # warm-up
    rec_g, plain_g, m_g, n_g = _time_steps(engine, full, prepared, *CALIBRATION_FULL)
    g = len(chunk.c_values) * seeds
    plain, recorded = [(g, plain_g, n_g)], [(g, rec_g - plain_g, m_g)]
    if g > 1:
        rec_1, plain_1, m_1, n_1 = _time_steps(engine, [one], prepared, *CALIBRATION_ONE)
        plain.append((1, plain_1, n_1))
        recorded.append((1, rec_1 - plain_1, m_1))
    return StepCosts(fit_curve(plain), fit_curve(recorded), g, plain, recorded)


def chunk_seconds(stops: np.ndarray, schedule: np.ndarray, costs: StepCosts) -> float:
    """Seconds to train one batch whose runs stop after ``stops`` updates.

    In closed form over the runs' stops ``s_0 <= ... <= s_(n-1)`` (never a per-step
    array: ``max_steps`` may be astronomically large): during the ``s_k - s_(k-1)``
    steps after ``s_(k-1)`` (``s_(-1) = -1``), ``n - k`` runs are evaluated.  A step
    where some runs stop and others go on evaluates the kept runs once more (the
    engine recomputes their forward pass for the smaller batch): one more ``U``."""
    stops = np.sort(np.asarray(stops, dtype=np.int64))
    last = int(stops[-1])
    lengths = np.diff(stops, prepend=-1).astype(np.float64)          # steps per stretch
    active = len(stops) - np.arange(len(stops))
    seconds = float((lengths * costs.unrecorded(active)).sum())
    recorded = np.union1d(schedule[schedule <= last], stops)
    at = len(stops) - np.searchsorted(stops, recorded, side="left")   # runs evaluated there
    stopping = np.unique(stops)[:-1]                                  # runs go on after them
    kept = len(stops) - np.searchsorted(stops, stopping, side="right")
    return seconds + float(costs.recording(at).sum()) + float(costs.unrecorded(kept).sum())


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
    by_seed: np.ndarray       # predicted updates (piloted seed, learning rate)
    status: np.ndarray        # their status: the pilot's where the run stopped in it, else
    #                           'converged' (or 'max_steps' where predicted to reach it)
    pilot_steps: int          # how far the pilot ran
    stopped: int              # runs that stopped within it
    modelled: int             # runs whose stop the linearised model predicts
    at_max: int               # runs predicted to reach max_steps
    seconds: float
    timed: list[tuple[int, float, bool]]  # its steps (:class:`PilotClock`)

    @property
    def steps(self) -> np.ndarray:
        """The first seed's predicted updates per learning rate."""
        return self.by_seed[0]


def pilot(engine: Engine, chunks: list[Chunk], prepared, costs: StepCosts,
          budget: float) -> Pilot:
    """Predicted updates of every learning rate of the first seed, or of the first
    seeds with ``prepared`` a list (their chunks batched as the run batches them; see
    the module docstring): run ``chunks`` (the first seed's) with the real stopping
    rule as far as ``budget`` seconds allow (:func:`_pilot_chunk`); runs still training
    then get :func:`linear_stop`."""
    sweep = engine.sweep
    max_steps, tol = sweep["max_steps"], sweep["tol"]
    seeds = prepared if isinstance(prepared, list) else [prepared]
    steps = np.zeros((len(seeds), len(sweep["eta_lambda0"])), dtype=np.int64)
    status = np.full(steps.shape, "converged", dtype=object)
    started = time.perf_counter()
    stopped = modelled = length = 0
    modes: dict[int, tuple] = {}
    clock = PilotClock()
    for n, chunk in enumerate(chunks):
        share = (budget - (time.perf_counter() - started)) / (len(chunks) - n)
        length, going = _pilot_chunk(engine, chunk, seeds, costs, share, steps, status,
                                     clock)
        stopped += len(seeds) * len(chunk.c_values) - len(going)
        for k, j in going:
            ci = chunk.c_index[j]
            if k not in modes:
                modes[k] = initial_modes(engine, seeds[k])
            eta = chunk.c_values[j] / engine.c_unit(seeds[k])
            steps[k, ci] = max(linear_stop(*modes[k], eta, tol, max_steps), length + 1)
            status[k, ci] = "max_steps" if steps[k, ci] >= max_steps else "converged"
            modelled += 1
    steps = np.minimum(steps, max_steps)
    return Pilot(steps, status.astype(str), length, stopped, modelled,
                 int((steps >= max_steps).sum()), time.perf_counter() - started, clock.steps)


def _pilot_chunk(engine: Engine, chunk: Chunk, seeds: list, costs: StepCosts, share: float,
                 steps: np.ndarray, status: np.ndarray, clock: PilotClock
                 ) -> tuple[int, list]:
    """Run ``chunk``'s rates for every prepared seed in ``seeds`` (one batch) with the
    real stopping rule for as many steps as ``share`` seconds allow, then again, longer,
    for the runs still training, while they fit what is left (few runs step faster than
    many: a lone slow run near a critical rate is followed far); fills ``steps`` and
    ``status`` (piloted seed, rate) of the runs that stopped (at ``max_steps`` too), and
    returns the steps the last pass ran and the ``(seed, run)`` still training then.
    ``clock`` times every pass's steps (:func:`refit`)."""
    max_steps = engine.sweep["max_steps"]
    deadline = time.perf_counter() + share
    going = [(k, j) for k in range(len(seeds)) for j in range(len(chunk.c_values))]
    length = 0
    while going and length < max_steps:
        # The first pass records as the run does (observables too, within half the
        # share), so that the clock times the run's own recorded steps at the run counts
        # it passes through, unless that leaves fewer than MIN_PILOT_STEPS; other passes
        # record only where runs stop, without observables: only the stopping rule
        # matters there.
        left = deadline - time.perf_counter()
        schedule = engine.schedule
        fit = pass_length(costs, len(going), left / 2, schedule, max_steps)
        if length or fit < MIN_PILOT_STEPS:
            schedule = np.array([], dtype=np.int64)
            fit = pass_length(costs, len(going), left, schedule, max_steps)
        if length and fit < 2 * length:
            break
        length = max(fit, MIN_PILOT_STEPS)
        run = engine_variant(engine, schedule=np.union1d(schedule[schedule < length], [length]),
                       max_steps=length)
        if len(schedule) == 0:
            run.observables = []
        rows = {k: [j for kk, j in going if kk == k] for k, _ in going}
        batch = [dataclasses.replace(chunk, seed_index=k, seed=engine.sweep["seeds"][k],
                                     c_index=[chunk.c_index[j] for j in js],
                                     c_values=[chunk.c_values[j] for j in js])
                 for k, js in rows.items()]
        clock.begin(run.schedule)
        results = run.run_batch(batch, clock, prepared=[seeds[k] for k in rows])
        going = []
        for (k, js), result in zip(rows.items(), results, strict=True):
            for j, done, st in zip(js, result.steps, result.status, strict=True):
                if st != "max_steps" or length == max_steps:
                    steps[k, chunk.c_index[j]], status[k, chunk.c_index[j]] = done, st
                else:
                    going.append((k, j))
    return length, going


def pass_length(costs: StepCosts, runs: int, seconds: float, schedule: np.ndarray,
                max_steps: int) -> int:
    """The most updates (up to ``max_steps``) that ``runs`` runs which never stop make
    within ``seconds`` by :func:`chunk_seconds`, recording at ``schedule`` and at their
    end (0: not one)."""
    def cost(n: int) -> float:
        return chunk_seconds(np.full(runs, n), schedule[schedule < n], costs)

    if cost(max_steps) <= seconds:
        return max_steps
    lo, hi = 0, max_steps                   # the answer is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(mid) <= seconds:
            lo = mid
        else:
            hi = mid
    return lo


def pilot_seeds(prepare_s: float, together: int, budget: float) -> int:
    """How many seeds the pilot runs: the first batch's (``together``), as far as
    preparing them fits half the pilot's ``budget``.  The batch trains until its last run
    stops, and which run is last differs from seed to seed (a run near a critical rate
    converges slowly), so the first seed alone underestimates a batch of several."""
    if together == 1 or budget / 2 >= prepare_s * (together - 1):
        return together
    return 1 + int(budget / 2 / max(prepare_s, 1e-9))


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
    (what the run does after its last chunk, writing the file aside).  Timed after a
    warm-up on the first result alone: the first assembly in a process pays one-off
    costs (xarray's and pandas' lazy set-up) that the run, timed on its own, pays once."""
    from phasekit.analysis.phases import add_critical
    from phasekit.io.netcdf import build_dataset

    def assemble(some: list[ChunkResult]) -> None:
        add_critical(build_dataset(engines, some))

    assemble(results[:1])                    # the rest of the grid stays pending
    started = time.perf_counter()
    assemble(results)
    return time.perf_counter() - started


@dataclasses.dataclass
class StepCounts:
    """What a batch does, in closed form (:func:`step_counts`)."""

    steps: int                # steps of the batch and forward passes after stops
    run_steps: int            # the runs in them, summed (each run's stop + 1, and more)
    recorded: int             # recorded steps (schedule and stops)
    recorded_runs: int        # runs evaluated at them, summed


def step_counts(stops: np.ndarray, schedule: np.ndarray) -> StepCounts:
    """The counts :func:`chunk_seconds` charges, by :func:`chunk_seconds` itself with
    unit costs (one rule for counts and seconds)."""
    zero, fixed, per_run = Linear(0.0, 0.0), Linear(1.0, 0.0), Linear(0.0, 1.0)
    count = [round(chunk_seconds(stops, schedule, StepCosts(u, r, 1)))
             for u, r in ((fixed, zero), (per_run, zero), (zero, fixed), (zero, per_run))]
    return StepCounts(*count)


def batch_stops(steps: np.ndarray, chunks: list[Chunk], seeds: int, together: int
                ) -> list[np.ndarray]:
    """The stops of every batch of one axis point, as the run cuts them
    (:meth:`PointEngines.batches`): blocks of ``together`` seeds, each block's chunks of
    the same rates in one batch.  ``steps`` (piloted seed, rate) are the updates of the
    piloted seeds (or ``(rate,)``, of the first); the ``k``-th seed of every block takes
    those of piloted seed ``k`` (modulo their number).  ``chunks`` are the first seed's."""
    steps = np.atleast_2d(steps)
    blocks = [min(together, seeds - k) for k in range(0, seeds, together)]
    return [np.concatenate([steps[k % len(steps), c.c_index] for k in range(size)])
            for size in blocks for c in chunks]


@dataclasses.dataclass
class PointPlan:
    """One axis point's share of the estimate (:func:`plan_point`)."""

    lines: list[str]
    prepare_s: float          # seconds to prepare the first seed (one-off costs included)
    prepare_next: float       # seconds to prepare each further seed
    costs: StepCosts
    pilot: Pilot
    schedule: np.ndarray
    batches: list[np.ndarray]     # the stops of every batch, all seeds
    stand_ins: list[ChunkResult]

    def preparing(self, seeds: int) -> float:
        """Seconds to prepare ``seeds`` seeds of this point."""
        return self.prepare_s + (seeds - 1) * self.prepare_next

    def training(self) -> float:
        return sum(chunk_seconds(b, self.schedule, self.costs) for b in self.batches)

    def longest(self, max_steps: int) -> float:
        return sum(chunk_seconds(np.full(len(b), max_steps), self.schedule, self.costs)
                   for b in self.batches)

    def counts(self) -> StepCounts:
        each = [step_counts(b, self.schedule) for b in self.batches]
        return StepCounts(*(sum(getattr(c, f.name) for c in each)
                            for f in dataclasses.fields(StepCounts)))


@dataclasses.dataclass
class Estimate:
    """The dry run's estimate of a whole sweep (:func:`estimate_run`)."""

    lines: list[str]
    points: list[PointPlan]
    startup: float | None
    preparing: float
    training: float
    finishing: float
    worst: float

    @property
    def work(self) -> float:
        """Seconds after start-up: what a run inside a running process takes."""
        return self.preparing + self.training + self.finishing

    @property
    def total(self) -> float:
        return self.work + (self.startup or 0.0)


def axes_text(config: ResolvedConfig) -> str:
    """``2 width x 4 hidden_layers``: the axes and their sizes (empty without axes)."""
    return " x ".join(f"{len(v)} {k.split('.', 1)[1]}" for k, v in config.axes.items())


def estimate_run(config: ResolvedConfig, data: Data | None, manager: PluginManager,
                 budget: float = PILOT_BUDGET) -> Estimate:
    """The grid, then per axis point its chunks, memory, calibration and pilot, and the
    time of the whole sweep in one process."""
    sweep = config.sweep
    engines = PointEngines(config, data, manager)
    n_rates, n_seeds = len(sweep["eta_lambda0"]), len(sweep["seeds"])
    axes = axes_text(config)
    lines = [
        f"model {config.model['name']} on dataset {config.dataset['name']}, device "
        f"{sweep['device']}, {sweep['dtype']}",
        f"grid: {axes + ' x ' if axes else ''}{n_seeds} seed(s) x {n_rates} learning rates "
        f"= {len(engines) * n_seeds * n_rates} runs",
    ]
    startup = startup_seconds()
    plans = list(plan_points(engines, budget))
    for plan in plans:
        lines += plan.lines
    finishing = finishing_seconds(engines, [r for p in plans for r in p.stand_ins])
    return Estimate(lines, plans, startup, sum(p.preparing(n_seeds) for p in plans),
                    sum(p.training() for p in plans), finishing,
                    sum(p.preparing(n_seeds) + p.longest(sweep["max_steps"]) for p in plans))


def plan_points(engines: PointEngines, budget: float):
    """:func:`plan_point` of every axis point, each piloted for an equal share of what
    is left of ``budget``: a point whose pilot ran every run to its stop early leaves
    its time to the points after it (the wide ones of a width axis need it most)."""
    spent = 0.0
    for i in range(len(engines)):
        plan = plan_point(engines, i, max(budget - spent, 0.0) / (len(engines) - i))
        spent += plan.pilot.seconds
        yield plan


def dry_run_report(config: ResolvedConfig, data: Data | None, manager: PluginManager,
                   budget: float = PILOT_BUDGET) -> str:
    """What ``phasekit run --dry-run`` prints: :func:`estimate_run`'s lines, then the
    estimated time of the whole sweep and its worst case."""
    est = estimate_run(config, data, manager, budget)
    startup = est.startup
    parts = ([f"{fmt_time(startup)} start-up"] if startup is not None else []) + [
        f"{fmt_time(est.preparing)} preparing seeds", f"{fmt_time(est.training)} training",
        f"{fmt_time(est.finishing)} assembling the dataset"]
    return "\n".join(est.lines + [
        f"estimated time: {fmt_time(est.total)} in one process ({', '.join(parts)}; the "
        f"seeds beyond the piloted ones assumed to take their steps)",
        f"at most {fmt_time(est.worst + est.finishing + (startup or 0.0))} if every run "
        f"went to max_steps = {config.sweep['max_steps']}",
    ])


def plan_point(engines: PointEngines, i: int, budget: float) -> PointPlan:
    """Axis point ``i``: prepare its first seed, calibrate a full batch, run the pilot,
    and cut its batches as the run will (every seed taking the pilot seed's steps)."""
    config, engine = engines.config, engines[i]
    sweep = config.sweep
    started = time.perf_counter()
    prepared = engines.prepared(i, sweep["seeds"][0])
    prepare_s = time.perf_counter() - started
    size, together = engines.chunk_size(i), engines.seeds_per_batch(i)
    chunks = make_chunks(sweep, i, size)
    first_seed = [c for c in chunks if c.seed_index == 0]
    costs = calibrate(engine, chunks[0], prepared, together)
    n_pilot = pilot_seeds(prepare_s, together, budget)
    seeds, prepare_next = [prepared], []
    for s in sweep["seeds"][1:n_pilot]:
        started = time.perf_counter()
        seeds.append(engines.prepared(i, s, keep=sweep["seeds"][:n_pilot]))
        prepare_next.append(time.perf_counter() - started)
    pil = pilot(engine, first_seed, seeds, costs, budget)
    costs = refit(costs, pil.timed)
    batches = batch_stops(pil.by_seed, first_seed, len(sweep["seeds"]), together)
    plan = PointPlan([], prepare_s, float(np.mean(prepare_next)) if prepare_next else prepare_s,
                     costs, pil, engine.schedule, batches,
                     [_stand_in(engine, c, prepared, pil.steps[c.c_index]) for c in chunks])
    plan.lines = _point_lines(engines, i, plan, size, together, prepared)
    return plan


def _seeds_text(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _point_lines(engines: PointEngines, i: int, plan: PointPlan, size: int, together: int,
                 prepared) -> list[str]:
    """The report lines of axis point ``i``."""
    config, engine, point = engines.config, engines[i], engines.points[i]
    sweep = config.sweep
    fixed, per_point = memory_estimate(engine, prepared)
    costs, pil, g = plan.costs, plan.pilot, plan.costs.batch
    head = f"axis point {describe_point(point)}: " if config.axes else ""
    exact = pil.pilot_steps >= sweep["max_steps"]
    counts = plan.counts()
    return [
        f"{head}D = {point.data.num_train}, {prepared.theta0.numel():,} parameters per run; "
        f"{len(make_chunks(sweep, i, size))} chunk(s) of up to {size} runs, "
        + (f"{together} seeds per batch (up to {together * size} runs advancing together)"
           if together > 1 else "each advancing on its own (one seed per batch)"),
        f"  memory per chunk: about {fmt_bytes(fixed + size * per_point)} "
        f"({fmt_bytes(fixed)} fixed + {fmt_bytes(per_point)} per run; "
        f"sweep.memory_budget caps it)",
        f"  calibration: {costs.unrecorded(g) * 1e3:.2f} ms per step of a full batch "
        f"({g} runs; fitted to {sum(n for _, _, n in costs.plain):,} timed steps and "
        f"{sum(n for _, _, n in costs.recorded):,} recorded ones at "
        f"{len({a for a, _, _ in costs.plain + costs.recorded})} run counts), "
        f"{(costs.unrecorded(g) + costs.recording(g)) * 1e3:.2f} ms per "
        f"recorded step (NTK, sharpness, observables); {plan.prepare_s:.2f} s to prepare the "
        f"first seed" + (f", {plan.prepare_next:.2f} s each further one"
                         if len(sweep["seeds"]) > 1 else ""),
        f"  pilot ({_seeds_text(sweep['seeds'][:len(pil.by_seed)])}, every rate, "
        f"{pil.seconds:.1f} s): "
        + ("ran every run to its stop" if exact else
           f"{pil.pilot_steps} steps; {pil.stopped} run(s) stopped within them, "
           f"{pil.modelled} predicted by the model linearised at initialisation, "
           f"{pil.at_max} of them to reach max_steps")
        + f"; steps per run: median {int(np.median(pil.by_seed))}, max "
          f"{int(pil.by_seed.max())} of {sweep['max_steps']}",
        f"  estimate: {fmt_time(plan.training())} of training in {len(plan.batches)} "
        f"batch(es): {counts.steps:,} batch steps, {counts.run_steps:,} run-steps, "
        f"{counts.recorded:,} recorded steps evaluating {counts.recorded_runs:,} runs",
    ]
