"""The sweep engine: full-batch gradient descent on a grid of (seed, eta_lambda0).

The grid is cut into *chunks*: learning rates of one seed that share that
seed's initialisation and fixed features.  All grid points of a chunk advance
together as one batched tensor program -- parameters carry a leading grid
dimension and no Python loop runs over grid points inside a step.  A run that
stops (converged, diverged or out of steps) leaves the batch.

Conventions (docs/theory.md §1):

* loss ``L = 1/(2D) sum_alpha (z_alpha - y_alpha)^2``, update
  ``theta <- theta - eta grad L`` with ``eta = c / lambda_max(H_0)`` per seed;
* a value recorded at step ``t`` describes ``theta_t``, *before* the t-th update
  (step 0 is the initialisation);
* a run has converged at step t when ``|L_t - L_(t-1)| < tol``; it has diverged
  once ``L_t`` is non-finite or above ``divergence_loss``; otherwise it stops at
  ``max_steps``.  A converged run the model calls trivial (``Model.is_trivial``:
  a dead network) gets status ``trivial``.  ``steps`` is the number of updates made.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import AxisPoint, ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .model import Bound, Model
from .observables import Observable, Snapshot
from .options import ConfigError
from .spectrum import lambda_max

STATUSES = ("converged", "diverged", "max_steps", "trivial")


def record_schedule(max_steps: int, dense: int, per_decade: int) -> np.ndarray:
    """Steps at which trajectories are recorded: every step below ``dense``, then
    ``per_decade`` log-spaced steps per decade up to ``max_steps`` (included)."""
    steps = set(range(min(dense, max_steps + 1)))
    if per_decade > 0 and max_steps >= dense:
        start = max(dense, 1)
        num = max(2, int(math.ceil(per_decade * math.log10(max(max_steps, 2) / start))) + 1)
        steps.update(int(round(s)) for s in np.geomspace(start, max_steps, num))
    steps.add(max_steps)
    return np.array(sorted(steps), dtype=np.int64)


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"sweep.device = {name!r} but no CUDA device is available; "
                          f"use sweep.device = \"cpu\"")
    return device


def dtype_of(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[name]


@dataclass
class Chunk:
    """A piece of the grid: one axis point, one seed and some learning rates.

    ``c_index`` locates the learning rates ``c_values`` in the sweep's
    ``eta_lambda0`` grid and ``point`` the axis point in ``config.points`` (used
    when assembling the dataset).
    """

    seed_index: int
    seed: int
    c_index: list[int]
    c_values: list[float]
    point: int = 0


def make_chunks(sweep: dict, point: int = 0, size: int | None = None) -> list[Chunk]:
    """Deterministic chunking of one axis point's grid: every seed's learning rates in
    pieces of ``size`` (default ``sweep.chunk_size``, 0 = all of them)."""
    cs = sweep["eta_lambda0"]
    size = size or sweep["chunk_size"] or len(cs)
    chunks = []
    for si, seed in enumerate(sweep["seeds"]):
        for start in range(0, len(cs), size):
            idx = list(range(start, min(start + size, len(cs))))
            chunks.append(Chunk(si, seed, idx, [cs[i] for i in idx], point))
    return chunks


def points_of(config: ResolvedConfig, data: Data | None = None) -> list[AxisPoint]:
    """The axis points of ``config``, each with the one-point config a separate sweep
    would run (its ``[sweep]`` is ``config.sweep`` without the axes)."""
    if not config.axes:
        if data is None:
            data = config.points[0].data
        return [AxisPoint(0, {}, config, data)]
    one_point = {**config.sweep, "axes": {}}
    return [AxisPoint(p.index, p.values,
                      ResolvedConfig(p.config.model, p.config.dataset, one_point), p.data)
            for p in config.points]


def describe_point(point: AxisPoint) -> str:
    """``width = 512, hidden_layers = 2`` (empty without axes)."""
    return ", ".join(f"{k.split('.', 1)[1]} = {v}" for k, v in point.values.items())


@dataclass
class Prepared:
    """A seed's fixed objects, shared by all chunks of that seed."""

    features: Any
    theta0: torch.Tensor
    lambda0: float
    bounds: list[Bound]


@dataclass
class ChunkResult:
    chunk: Chunk
    lambda0: float
    bounds: list[Bound]
    eta: np.ndarray                       # (g,)
    traj: dict[str, np.ndarray]           # name -> (g, R, *extra)
    final: dict[str, np.ndarray]          # name -> (g, *extra)
    steps: np.ndarray                     # (g,)
    status: np.ndarray                    # (g,) of str
    extra_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch intra-op threads (0: leave torch's setting alone)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Engine:
    """Runs chunks of a one-point config (one model instance, one dataset)."""

    def __init__(self, config: ResolvedConfig, data: Data, manager: PluginManager,
                 where: str = ""):
        if config.axes:
            raise ValueError("an Engine runs one axis point; use PointEngines for a config "
                             "with sweep.axes")
        self.config = config
        self.where = where              # the axis point, for messages (empty without axes)
        self.sweep = config.sweep
        self.data = data
        settings = {k: v for k, v in config.model.items() if k != "name"}
        self.model: Model = manager.get("model", config.model["name"])(settings, data)
        wanted = set(self.sweep["observables"])
        self.observables: list[Observable] = [
            obs for name, obs in sorted(manager.observables().items())
            if ("all" in wanted or name in wanted) and obs.applies(self.model, data)]
        self.device = resolve_device(self.sweep["device"])
        self.dtype = dtype_of(self.sweep["dtype"])
        self.schedule = record_schedule(self.sweep["max_steps"], self.sweep["record_dense"],
                                        self.sweep["record_per_decade"])

    def observable_coords(self) -> dict[str, dict[str, list]]:
        return {obs.name: (obs.coords(self.model, self.data) if obs.coords else {})
                for obs in self.observables}

    def prepare(self, seed: int) -> Prepared:
        """One seed's features, initialisation, lambda_0 = lambda_max(H_0) and bounds."""
        model = self.model
        with torch_threads(self.sweep["threads"]):
            feats, theta0 = model.setup(seed, self.device, self.dtype)
            H0 = model.ntk(feats, theta0[None], None)[0]
            lambda0 = float(lambda_max(H0[None], "eigvalsh")[0])        # sets every eta
            if not (math.isfinite(lambda0) and lambda0 > 0):
                at = f" at {self.where}" if self.where else ""
                raise ConfigError(f"lambda_max(H_0) = {lambda0} for seed {seed}{at}: the NTK "
                                  f"vanishes at initialisation (an input x = 0, say), so "
                                  f"eta = eta_lambda0 / lambda_0 is undefined (docs/theory.md "
                                  f"§1); change "
                                  f"the dataset or the model")
            return Prepared(feats, theta0, lambda0, model.bounds(feats, theta0, lambda0))

    def run_chunk(self, chunk: Chunk, progress: Callable[..., None] | None = None,
                  prepared: Prepared | None = None) -> ChunkResult:
        """Train every grid point of ``chunk`` to its stop (see the module docstring).

        ``progress(steps, finished=(), at=0)`` is called after every update with the
        number of runs that made it, and when runs stop with their statuses and the
        updates they made (:meth:`phasekit.progress.Progress.advance`);
        ``prepared`` is :meth:`prepare`'s result for the chunk's seed, if at hand.
        """
        return self.run_batch([chunk], progress,
                              prepared=None if prepared is None else [prepared])[0]

    def run_batch(self, chunks: list[Chunk], progress: Callable[..., None] | None = None,
                  prepared: list[Prepared] | None = None) -> list[ChunkResult]:
        """Train several seeds' chunks of one axis point as one batch (rows chunk by
        chunk) and return each chunk's result: what running them one by one gives,
        within the bound of :mod:`phasekit.batched`.  More than one chunk needs a model
        that stacks seeds
        (:meth:`phasekit.model.Model.can_stack_seeds`)."""
        if not chunks:
            return []
        if len(chunks) > 1:
            if not self.model.can_stack_seeds():
                raise ValueError(f"model {self.model.name!r} cannot stack seeds: run its "
                                 f"chunks one at a time")
            if any(c.point != chunks[0].point for c in chunks):
                raise ValueError("a batch holds chunks of one axis point")
        if prepared is None:
            prepared = [self.prepare(c.seed) for c in chunks]
        with torch_threads(self.sweep["threads"]):
            return self._run_batch(chunks, progress, prepared)

    def _observe(self, snap: Snapshot) -> dict[str, np.ndarray]:
        """The core trajectories and every observable at one step, as float64 arrays."""
        values = {"loss": snap.loss,
                  "weight_norm": self.model.weight_norm(snap.features, snap.theta),
                  "sharpness": snap.eta * lambda_max(snap.ntk, self.sweep["sharpness_solver"])}
        for obs in self.observables:
            values[obs.name] = obs.compute(snap)
        return {name: v.detach().to("cpu", torch.float64).numpy() for name, v in values.items()}

    def _run_batch(self, chunks: list[Chunk], progress: Callable[..., None] | None,
                   prepared: list[Prepared]) -> list[ChunkResult]:
        model, sweep = self.model, self.sweep
        y = self.data.y_train.to(self.device, self.dtype)
        # eta = c / lambda_0 per seed (docs/theory.md §1), computed as for one seed alone
        eta_all = torch.cat([torch.tensor(c.c_values, dtype=self.dtype, device=self.device)
                             / p.lambda0 for c, p in zip(chunks, prepared, strict=True)])
        S = len(chunks)
        sizes = [len(c.c_values) for c in chunks]
        starts = np.cumsum([0] + sizes)
        g = int(starts[-1])                         # rows chunk by chunk
        stacked = S > 1
        if stacked:
            owner = torch.repeat_interleave(torch.arange(S, device=self.device),
                                            torch.tensor(sizes, device=self.device))
            feats = model.stack_seeds([p.features for p in prepared], owner)
            theta0 = torch.stack([p.theta0 for p in prepared])[owner]             # (G, P)
            lambda0 = torch.tensor([p.lambda0 for p in prepared], dtype=self.dtype,
                                   device=self.device)[owner]                     # (G,)
            theta = theta0.clone()
        else:
            feats, theta0, lambda0 = prepared[0].features, prepared[0].theta0, prepared[0].lambda0
            theta = theta0.expand(g, -1).clone()
        n_rec = len(self.schedule)
        rec_pos = {int(s): k for k, s in enumerate(self.schedule)}

        traj: dict[str, np.ndarray] = {}
        final: dict[str, np.ndarray] = {}
        steps = np.zeros(g, dtype=np.int64)
        status = np.empty(g, dtype=object)

        active = torch.arange(g)
        eta = eta_all.clone()
        prev_loss = None
        max_steps, tol, limit = sweep["max_steps"], sweep["tol"], sweep["divergence_loss"]

        for t in range(max_steps + 1):
            z, cache = model.forward(feats, theta)
            eps = z - y
            loss = 0.5 * (eps * eps).mean(-1)                          # docs/theory.md §1
            diverged = ~torch.isfinite(loss) | (loss > limit)
            if prev_loss is None:
                converged = torch.zeros_like(diverged)
            else:
                converged = ((loss - prev_loss).abs() < tol) & ~diverged
            stop = diverged | converged
            if t == max_steps:
                stop = torch.ones_like(stop)
            any_stop = bool(stop.any())
            k = rec_pos.get(t)
            if k is not None or any_stop:
                ntk = model.ntk(feats, theta, cache)
                values = self._observe(Snapshot(model, self.data, feats, theta, theta0, z, eps,
                                                loss, ntk, eta, lambda0, t))
                idx = active.numpy()
                stop_np = stop.cpu().numpy()
                for name, val in values.items():
                    if name not in traj:
                        traj[name] = np.full((g, n_rec) + val.shape[1:], np.nan)
                        final[name] = np.full((g,) + val.shape[1:], np.nan)
                    if k is not None:
                        traj[name][idx, k] = val
                    final[name][idx[stop_np]] = val[stop_np]
                if any_stop:
                    div_np = diverged.cpu().numpy()
                    conv_np = converged.cpu().numpy()
                    trivial = model.is_trivial(feats, theta, ntk)
                    triv_np = (np.zeros_like(conv_np) if trivial is None
                               else trivial.cpu().numpy().astype(bool))
                    for j in np.flatnonzero(stop_np):
                        steps[idx[j]] = t
                        status[idx[j]] = ("diverged" if div_np[j] else
                                          ("trivial" if triv_np[j] else "converged")
                                          if conv_np[j] else "max_steps")
            if any_stop:
                keep = ~stop
                if progress:
                    progress(0, [status[gi] for gi in active[stop.cpu()].tolist()], t)
                if not bool(keep.any()):
                    break
                theta, eta, active = theta[keep], eta[keep], active[keep.cpu()]
                loss = loss[keep]
                if stacked:
                    feats = model.take_rows(feats, keep)
                    theta0, lambda0 = theta0[keep], lambda0[keep]
                # The model's cache belongs to the old batch: recompute for the kept rows.
                z, cache = model.forward(feats, theta)
                eps = z - y
            model.descend(feats, theta, cache, eps, eta)                # gradient descent, in place
            prev_loss = loss
            if progress:
                progress(int(theta.shape[0]))

        extra_dims = {obs.name: obs.dims for obs in self.observables}
        eta_np = eta_all.cpu().double().numpy()
        status = status.astype(str)
        results = []
        for si, (chunk, prep) in enumerate(zip(chunks, prepared, strict=True)):
            rows = slice(int(starts[si]), int(starts[si + 1]))
            results.append(ChunkResult(
                chunk, prep.lambda0, prep.bounds, eta_np[rows],
                {name: v[rows] for name, v in traj.items()},
                {name: v[rows] for name, v in final.items()},
                steps[rows], status[rows], extra_dims))
        return results


class PointEngines:
    """The :class:`Engine` of every axis point of a config, built on first use.

    Each axis point builds its model (and, through the config, its dataset) once;
    the seeds of the batch being run are kept prepared (``keep_prepared`` at least),
    since a seed's chunks run one after another.  Chunks and batches are cut here,
    where the engines exist: with ``sweep.memory_budget`` each axis point gets the
    chunk size that fits it (a wide point smaller chunks than a narrow one), and
    chunks of several seeds are batched together where the model stacks seeds
    (:meth:`seeds_per_batch`).
    """

    def __init__(self, config: ResolvedConfig, data: Data | None, manager: PluginManager,
                 keep_prepared: int | None = 1):
        self.config = config
        self.manager = manager
        self.points = points_of(config, data)
        self.keep_prepared = keep_prepared       # seeds kept per point (None: all)
        self._engines: dict[int, Engine] = {}
        self._prepared: dict[int, dict[int, Prepared]] = {}
        self._seeds_per_batch: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> Engine:
        if i not in self._engines:
            point = self.points[i]
            self._engines[i] = Engine(point.config, point.data, self.manager,
                                      where=describe_point(point))
        return self._engines[i]

    def prepared(self, i: int, seed: int, keep: Iterable[int] = ()) -> Prepared:
        """Axis point ``i``'s fixed objects for ``seed``, cached for the last
        ``keep_prepared`` seeds of the point (all of them with ``None``) and for the
        seeds in ``keep`` (the rest of a batch)."""
        cache = self._prepared.setdefault(i, {})
        if seed not in cache:
            if self.keep_prepared is not None:
                keep = set(keep)
                for old in list(cache):                  # the oldest first
                    if len(cache) < self.keep_prepared:
                        break
                    if old not in keep:
                        del cache[old]
            cache[seed] = self[i].prepare(seed)
        return cache[seed]

    def prepared_batch(self, chunks: list[Chunk]) -> list[Prepared]:
        """The fixed objects of each chunk's seed (a batch's chunks share an axis point)."""
        seeds = [c.seed for c in chunks]
        return [self.prepared(c.point, c.seed, keep=seeds) for c in chunks]

    def chunk_size(self, i: int) -> int:
        """Runs per chunk at axis point ``i``: ``sweep.chunk_size``, or with a memory
        budget the most that fit (checked against the budget either way)."""
        from .memory import fitted_chunk_size

        sweep = self.config.sweep
        if not sweep["memory_budget"]:
            return sweep["chunk_size"] or len(sweep["eta_lambda0"])
        return fitted_chunk_size(self[i], self.prepared(i, sweep["seeds"][0]))

    def seeds_per_batch(self, i: int) -> int:
        """Seeds trained together in one batch at axis point ``i``: 1 unless the model
        stacks seeds (:meth:`phasekit.model.Model.can_stack_seeds`); else all of them,
        or ``sweep.seed_batch`` if set, as far as their runs fit the memory of a batch
        (:func:`phasekit.memory.seeds_fitting`)."""
        if i not in self._seeds_per_batch:
            sweep = self.config.sweep
            n = len(sweep["seeds"])
            size = min(sweep["seed_batch"] or n, n)
            if size > 1 and not self[i].model.can_stack_seeds():
                size = 1
            if size > 1:
                from .memory import seeds_fitting

                size = max(1, min(size, seeds_fitting(
                    self[i], self.prepared(i, sweep["seeds"][0]), self.chunk_size(i))))
            self._seeds_per_batch[i] = size
            if self.keep_prepared is not None:
                self.keep_prepared = max(self.keep_prepared, size)
        return self._seeds_per_batch[i]

    def chunks(self) -> list[Chunk]:
        """Every chunk of the sweep, axis point by axis point (deterministic)."""
        return [c for i in range(len(self))
                for c in make_chunks(self.config.sweep, i, self.chunk_size(i))]

    def batches(self, chunks: Iterable[Chunk]) -> list[list[Chunk]]:
        """``chunks`` grouped into the config's batches: the chunks of one axis point and
        learning rates whose seeds fall in one block of :meth:`seeds_per_batch` seeds
        (seed indices ``0..s-1``, ``s..2s-1``, ...); axis point by axis point, then block
        by block, then rates, so that a seed's fixed objects are prepared once.

        The blocks are the config's, never cut from the chunks given: a chunk's companions
        in its batch do not depend on which other chunks are left (a resumed run,
        :func:`phasekit.runner.execute`, trains them as the uninterrupted run did).  A
        row's rounding may depend on its batch, within
        :data:`phasekit.batched.BATCH_RTOL` per step (docs/scale.md)."""
        out: dict[tuple, list[Chunk]] = {}
        for chunk in chunks:
            block = chunk.seed_index // self.seeds_per_batch(chunk.point)
            out.setdefault((chunk.point, block, tuple(chunk.c_index)), []).append(chunk)
        return list(out.values())

    def point_toml(self, i: int) -> str:
        """The one-point config of axis point ``i`` as TOML (what a Dask worker runs)."""
        return self.points[i].config.to_toml()


def run_sweep(config: ResolvedConfig, data: Data, manager: PluginManager,
              progress=None, chunks: Iterable[Chunk] | None = None):
    """Run every chunk of ``config`` (or the given ``chunks``) in this process and
    return the labelled xarray dataset, writing nothing.  See
    :func:`phasekit.runner.execute` for resumable, file-backed and Dask runs."""
    from .runner import execute

    return execute(config, data, manager, None, progress=progress, chunks=chunks)
