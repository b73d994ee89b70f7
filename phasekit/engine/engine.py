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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from phasekit.config.limits import record_points
from phasekit.config.registry import PluginManager
from phasekit.config.resolve import ResolvedConfig
from phasekit.dataset import Data
from phasekit.engine import border
from phasekit.engine.chunks import Chunk, ChunkResult
from phasekit.engine.hessian import c_unit, initial_hessian_max, wants_hessian
from phasekit.engine.sgd import MiniBatches
from phasekit.engine.spectrum import initial_lambda_max, lambda_max, operator_lambda_max
from phasekit.errors import ConfigError, PluginError
from phasekit.model import Bound, Model
from phasekit.observables import Observable, Snapshot

STATUSES = ("converged", "diverged", "max_steps", "trivial")


def record_schedule(max_steps: int, dense: int, per_decade: int) -> np.ndarray:
    """Steps at which trajectories are recorded: every step below ``dense``, then
    ``per_decade`` log-spaced steps per decade up to ``max_steps`` (included); built
    in numpy (8 bytes a step; its size is checked first,
    :func:`phasekit.config.limits.recorded_steps_bound`)."""
    dense_steps, start, num = record_points(max_steps, dense, per_decade)
    if num and max_steps * math.log(max_steps / start) < 0.5 * (num - 1):
        # Consecutive log-spaced steps less than half a step apart (the widest gap,
        # at the top, is below max_steps * log(max_steps / start) / (num - 1)): every
        # integer from start on is some step's nearest, so none is drawn in vain.
        logs = np.arange(start, max_steps + 1, dtype=np.int64)
    else:
        logs = np.rint(np.geomspace(start, max_steps, num)).astype(np.int64) if num else []
    return np.unique(np.concatenate([np.arange(dense_steps, dtype=np.int64), logs,
                                     [max_steps]]).astype(np.int64))


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"sweep.device = {name!r} but no CUDA device is available; "
                          f"use sweep.device = \"cpu\"")
    return device


def dtype_of(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[name]


@dataclass
class Prepared:
    """A seed's fixed objects, shared by all chunks of that seed."""

    features: Any
    theta0: torch.Tensor
    lambda0: float
    bounds: list[Bound]
    #: lambda_max of the loss Hessian at init (NaN unless sweep.normalize = "hessian" or
    #: sweep.hessian; phasekit.engine.hessian)
    lambda0_hessian: float = math.nan


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
        self.model_who = manager.describe("model", config.model["name"])
        self.model: Model = border.call(self.model_who, "__init__",
                                        manager.get("model", config.model["name"]),
                                        settings, data)
        wanted = set(self.sweep["observables"])
        self._who = {name: manager.describe("observable", name)
                     for name in manager.observables()}
        self.observables: list[Observable] = [
            obs for name, obs in sorted(manager.observables().items())
            if ("all" in wanted and not obs.opt_in or name in wanted)
            and border.call(self._who[name], "applies", obs.applies, self.model, data)]
        self._sizes = {obs.name: tuple(len(v) for v in coords.values())
                       for obs in self.observables
                       for coords in [self.observable_coords()[obs.name]]}
        if self.sweep["batch_size"] > data.num_train:
            raise ConfigError(f"sweep.batch_size = {self.sweep['batch_size']} is more than the "
                              f"{data.num_train} training points{' at ' + where if where else ''}"
                              f"; use at most {data.num_train}, or 0 for full batch")
        self.device = resolve_device(self.sweep["device"])
        self.dtype = dtype_of(self.sweep["dtype"])
        self.schedule = record_schedule(self.sweep["max_steps"], self.sweep["record_dense"],
                                        self.sweep["record_per_decade"])

    def observable_coords(self) -> dict[str, dict[str, list]]:
        return {obs.name: (border.call(self._who[obs.name], "coords", obs.coords, self.model,
                                       self.data) if obs.coords else {})
                for obs in self.observables}

    def prepare(self, seed: int) -> Prepared:
        """One seed's features, initialisation, lambda_0 = lambda_max(H_0) and bounds."""
        with torch_threads(self.sweep["threads"]):
            feats, theta0, H0, z0 = self._checked_setup(seed)
            lambda0 = initial_lambda_max(H0, z0, self.model_who)        # sets every eta
            if not (math.isfinite(lambda0) and lambda0 > 0):
                at = f" at {self.where}" if self.where else ""
                why = ("the NTK vanishes at initialisation (an input x = 0, say)"
                       if lambda0 == 0 or (math.isfinite(lambda0) and lambda0 < 0) else
                       "the NTK is not finite at initialisation (an input or parameter so "
                       "large that it overflows, say)")
                raise ConfigError(f"lambda_max(H_0) = {lambda0} for seed {seed}{at}: {why}, "
                                  f"so eta = eta_lambda0 / lambda_0 is undefined "
                                  f"(docs/theory.md §1); change the dataset or the model")
            bounds = border.bounds(self.model_who, border.call(
                self.model_who, "bounds", self.model.bounds, feats, theta0, lambda0))
            hessian = self.sweep.get("normalize", "ntk") == "hessian"   # required then
            lambda0_h = (initial_hessian_max(self.model, feats, theta0, hessian, f"seed {seed}"
                                             + (f" at {self.where}" if self.where else ""))
                         if wants_hessian(self.sweep) else math.nan)
            return Prepared(feats, theta0, lambda0, bounds, lambda0_h)

    def _checked_setup(self, seed: int) -> tuple[Any, torch.Tensor, Any, torch.Tensor]:
        """The model's ``setup`` for ``seed``, its NTK H_0 -- the (D, D) matrix, or its
        NTK-vector products where the model offers them (:meth:`_ntk_operator`) -- and the
        outputs z_0 (1, D), checked at the border (:mod:`phasekit.engine.border`) before
        the engine relies on them."""
        who, model, D = self.model_who, self.model, self.data.num_train
        feats, theta0 = border.setup_result(who, border.call(
            who, "setup", model.setup, seed, self.device, self.dtype))
        z = border.call(who, "forward", model.forward, feats, theta0[None])
        if not (isinstance(z, tuple) and len(z) == 2):
            raise PluginError(f"{who}: forward must return (z, cache); it returned "
                              f"{type(z).__name__}")
        z0 = border.tensor(who, "forward", z[0], (1, D), "the outputs z")
        operator = self._ntk_operator(feats, theta0[None], None)
        if operator is not None:
            return feats, theta0, operator, z0
        H0 = border.tensor(who, "ntk", border.call(who, "ntk", model.ntk, feats, theta0[None],
                                                   None), (1, D, D), "the NTK")
        return feats, theta0, H0[0], z0

    def _ntk_operator(self, feats: Any, theta: torch.Tensor, cache: Any
                      ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The model's NTK-vector products at ``theta``
        (:meth:`phasekit.model.Model.ntk_operator`), each product checked at the border,
        or ``None``: the model offers none and the engine forms the NTK matrix."""
        who = self.model_who
        op = border.call(who, "ntk_operator", self.model.ntk_operator, feats, theta, cache)
        if op is None:
            return None
        if not callable(op):
            raise PluginError(f"{who}: ntk_operator must return a function u -> H u, or None; "
                              f"it returned {type(op).__name__}")

        def product(u: torch.Tensor) -> torch.Tensor:
            return border.tensor(who, "ntk_operator", border.call(who, "ntk_operator", op, u),
                                 tuple(u.shape), "the NTK-vector products H u")

        return product

    def c_unit(self, prepared: Prepared) -> float:
        """The eigenvalue ``c`` is measured in for this seed: ``eta = c / c_unit``."""
        return c_unit(self.sweep.get("normalize", "ntk"), prepared.lambda0,
                      prepared.lambda0_hessian)

    def _minibatches(self, chunks: list[Chunk], sizes: list[int]) -> MiniBatches | None:
        """The mini-batches of ``sweep.batch_size`` for a batch's rows (chunk by chunk,
        each row its chunk's seed), or ``None`` for full-batch gradient descent."""
        size = self.sweep["batch_size"]
        if not size:
            return None
        return MiniBatches(size, self.data.num_train, np.repeat([c.seed for c in chunks], sizes),
                           self.device, self.dtype)

    def run_chunk(self, chunk: Chunk, progress: Callable[..., None] | None = None,
                  prepared: Prepared | None = None) -> ChunkResult:
        """Train every grid point of ``chunk`` to its stop (see the module docstring).

        ``progress(steps, finished=(), at=0)`` is called after every update with the
        number of runs that made it, and when runs stop with their statuses and the
        updates they made (:meth:`phasekit.runner.progress.Progress.advance`);
        ``prepared`` is :meth:`prepare`'s result for the chunk's seed, if at hand.
        """
        return self.run_batch([chunk], progress,
                              prepared=None if prepared is None else [prepared])[0]

    def run_batch(self, chunks: list[Chunk], progress: Callable[..., None] | None = None,
                  prepared: list[Prepared] | None = None) -> list[ChunkResult]:
        """Train several seeds' chunks of one axis point as one batch (rows chunk by
        chunk) and return each chunk's result: what running them one by one gives,
        within the bound of :mod:`phasekit.engine.batched`.  More than one chunk needs a
        model that stacks seeds
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

    def _observe(self, snap: Snapshot, operator: Callable[[torch.Tensor], torch.Tensor] | None
                 = None) -> dict[str, np.ndarray]:
        """The core trajectories and every observable at one step, as float64 arrays; the
        sharpness from the NTK matrix, or from the NTK-vector products ``operator`` where
        the model offers them (:mod:`phasekit.engine.spectrum`)."""
        top = (lambda_max(snap.ntk, self.sweep["sharpness_solver"]) if operator is None
               else operator_lambda_max(operator, snap.z, self.model_who))
        values = {"loss": snap.loss,
                  "weight_norm": self.model.weight_norm(snap.features, snap.theta),
                  "sharpness": snap.eta * top}
        G = snap.theta.shape[0]
        for obs in self.observables:
            who = self._who[obs.name]
            values[obs.name] = border.tensor(who, "compute",
                                             border.call(who, "compute", obs.compute, snap),
                                             (G, *self._sizes[obs.name]), "its value")
        return {name: v.detach().to("cpu", torch.float64).numpy() for name, v in values.items()}

    def _run_batch(self, chunks: list[Chunk], progress: Callable[..., None] | None,
                   prepared: list[Prepared]) -> list[ChunkResult]:
        """The training loop of :meth:`run_batch`: each step checks the stopping rule,
        records what the schedule and the stops ask for, retires the stopped rows and
        descends with the others."""
        model = self.model
        y = self.data.y_train.to(self.device, self.dtype)
        # eta = c / lambda_0 per seed (docs/theory.md §1; lambda^H_0 with normalize =
        # "hessian"), computed as for one seed alone
        eta_all = torch.cat([torch.tensor(c.c_values, dtype=self.dtype, device=self.device)
                             / self.c_unit(p) for c, p in zip(chunks, prepared, strict=True)])
        sizes = [len(c.c_values) for c in chunks]
        batch = _Batch.start(model, prepared, sizes, eta_all)
        records = _Records(batch.size, self.schedule)
        minibatches = self._minibatches(chunks, sizes)          # None: full batch
        prev_loss = None
        for t in range(self.sweep["max_steps"] + 1):
            z, cache = model.forward(batch.feats, batch.theta)
            eps = z - y
            loss = 0.5 * (eps * eps).mean(-1)                          # docs/theory.md §1
            diverged, converged = self._stopping(loss, prev_loss)
            stop = diverged | converged
            if t == self.sweep["max_steps"]:
                stop = torch.ones_like(stop)
            any_stop = bool(stop.any())
            k = records.position.get(t)
            if k is not None or any_stop:
                self._record(batch, records, t, k, (z, eps, loss, cache),
                             stop, diverged, converged)
            if any_stop:
                if progress:
                    progress(0, [records.status[gi]
                                 for gi in batch.active[stop.cpu()].tolist()], t)
                keep = ~stop
                if not bool(keep.any()):
                    break
                batch.retire(model, keep)
                loss = loss[keep]
                # The model's cache belongs to the old batch: recompute for the kept rows.
                z, cache = model.forward(batch.feats, batch.theta)
                eps = z - y
            if minibatches is not None:                       # SGD: the batch's errors only
                eps = eps * minibatches.weights(t, batch.active)
            model.descend(batch.feats, batch.theta, cache, eps, batch.eta)   # in place
            prev_loss = loss
            if progress:
                progress(int(batch.theta.shape[0]))
        return self._results(chunks, prepared, eta_all, records)

    def _stopping(self, loss: torch.Tensor, prev_loss: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(diverged, converged)`` per active row (the module docstring's rule)."""
        diverged = ~torch.isfinite(loss) | (loss > self.sweep["divergence_loss"])
        if prev_loss is None:
            return diverged, torch.zeros_like(diverged)
        return diverged, ((loss - prev_loss).abs() < self.sweep["tol"]) & ~diverged

    def _record(self, batch: _Batch, records: _Records, t: int, k: int | None,
                step: tuple, stop: torch.Tensor, diverged: torch.Tensor,
                converged: torch.Tensor) -> None:
        """Observe the active rows at step ``t`` (``step``: their z, eps, loss and the
        forward cache), store the trajectories (schedule position ``k``) and the final
        values and statuses of the rows that stop here.  The NTK matrix is formed here
        only for a model without NTK-vector products; else on an observable's first
        read, and ``is_trivial`` gets it only if one did (``Model.is_trivial``)."""
        model = self.model
        z, eps, loss, cache = step
        operator = self._ntk_operator(batch.feats, batch.theta, cache)
        ntk = model.ntk(batch.feats, batch.theta, cache) if operator is None else None
        snap = Snapshot(model, self.data, batch.feats, batch.theta, batch.theta0, z, eps, loss,
                        ntk, batch.eta, batch.lambda0, t, cache)
        values = self._observe(snap, operator)
        idx = batch.active.numpy()
        stop_np = stop.cpu().numpy()
        records.store(values, idx, k, stop_np)
        if stop_np.any():
            trivial = model.is_trivial(batch.feats, batch.theta, cache, snap.ntk_matrix,
                                       batch.lambda0)
            records.finish(idx, stop_np, t, diverged.cpu().numpy(), converged.cpu().numpy(),
                           None if trivial is None else trivial.cpu().numpy().astype(bool))

    def _results(self, chunks: list[Chunk], prepared: list[Prepared], eta_all: torch.Tensor,
                 records: _Records) -> list[ChunkResult]:
        """Each chunk's rows of the batch's records."""
        extra_dims = {obs.name: obs.dims for obs in self.observables}
        eta_np = eta_all.cpu().double().numpy()
        status = records.status.astype(str)
        starts = np.cumsum([0] + [len(c.c_values) for c in chunks])
        results = []
        for si, (chunk, prep) in enumerate(zip(chunks, prepared, strict=True)):
            rows = slice(int(starts[si]), int(starts[si + 1]))
            results.append(ChunkResult(
                chunk, prep.lambda0, prep.bounds, eta_np[rows],
                {name: v[rows] for name, v in records.traj.items()},
                {name: v[rows] for name, v in records.final.items()},
                records.steps[rows], status[rows], extra_dims, prep.lambda0_hessian))
        return results


@dataclass
class _Batch:
    """The runs still training in a batch, row by row: features, parameters and
    learning rates, each row's theta_0 and lambda_0, and ``active``, the row each one
    has in the batch as it started (rows chunk by chunk)."""

    feats: Any
    theta: torch.Tensor         # (G, P)
    eta: torch.Tensor           # (G,)
    theta0: torch.Tensor        # (G, P); with one seed a view of its (P,), not a copy
    lambda0: torch.Tensor       # (G,); with one seed a view of its scalar
    active: torch.Tensor        # (G,) long, on the CPU
    stacked: bool               # rows of several seeds (Model.stack_seeds)

    @classmethod
    def start(cls, model: Model, prepared: list[Prepared], sizes: list[int],
              eta: torch.Tensor) -> _Batch:
        g = sum(sizes)
        device, dtype = eta.device, eta.dtype
        lambdas = torch.tensor([p.lambda0 for p in prepared], dtype=dtype, device=device)
        if len(prepared) > 1:
            owner = torch.repeat_interleave(torch.arange(len(prepared), device=device),
                                            torch.tensor(sizes, device=device))
            feats = model.stack_seeds([p.features for p in prepared], owner)
            theta0 = torch.stack([p.theta0 for p in prepared])[owner]
            lambda0 = lambdas[owner]
        else:
            feats = prepared[0].features
            theta0 = prepared[0].theta0.expand(g, -1)
            lambda0 = lambdas[0].expand(g)
        return cls(feats, theta0.clone(), eta.clone(), theta0, lambda0, torch.arange(g),
                   len(prepared) > 1)

    @property
    def size(self) -> int:
        return int(self.theta.shape[0])

    def retire(self, model: Model, keep: torch.Tensor) -> None:
        """Keep the rows where the boolean mask ``keep`` is true (the others stopped)."""
        self.theta, self.eta = self.theta[keep], self.eta[keep]
        self.active = self.active[keep.cpu()]
        if self.stacked:
            self.feats = model.take_rows(self.feats, keep)
            self.theta0, self.lambda0 = self.theta0[keep], self.lambda0[keep]
        else:                      # one seed: every row views the same theta_0, lambda_0
            n = self.size
            self.theta0, self.lambda0 = self.theta0[:n], self.lambda0[:n]


class _Records:
    """What a batch records, by its starting rows: trajectories at the schedule's steps,
    final values, the updates made and the status of every run."""

    def __init__(self, rows: int, schedule: np.ndarray):
        self.rows = rows
        self.position = {int(s): k for k, s in enumerate(schedule)}
        self.traj: dict[str, np.ndarray] = {}
        self.final: dict[str, np.ndarray] = {}
        self.steps = np.zeros(rows, dtype=np.int64)
        self.status = np.empty(rows, dtype=object)

    def store(self, values: dict[str, np.ndarray], idx: np.ndarray, k: int | None,
              stop: np.ndarray) -> None:
        """The rows ``idx``'s values at schedule position ``k`` (None: off the schedule),
        and as final values for the rows that ``stop``."""
        for name, val in values.items():
            if name not in self.traj:
                self.traj[name] = np.full((self.rows, len(self.position)) + val.shape[1:],
                                          np.nan)
                self.final[name] = np.full((self.rows,) + val.shape[1:], np.nan)
            if k is not None:
                self.traj[name][idx, k] = val
            self.final[name][idx[stop]] = val[stop]

    def finish(self, idx: np.ndarray, stop: np.ndarray, t: int, diverged: np.ndarray,
               converged: np.ndarray, trivial: np.ndarray | None) -> None:
        """Steps and statuses of the rows that stop at step ``t`` (module docstring)."""
        for j in np.flatnonzero(stop):
            self.steps[idx[j]] = t
            self.status[idx[j]] = ("diverged" if diverged[j] else
                                   ("trivial" if trivial is not None and trivial[j]
                                    else "converged") if converged[j] else "max_steps")
