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
from phasekit.engine.chunks import Chunk, ChunkResult
from phasekit.engine.spectrum import lambda_max
from phasekit.errors import ConfigError
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
                why = ("the NTK vanishes at initialisation (an input x = 0, say)"
                       if lambda0 == 0 or (math.isfinite(lambda0) and lambda0 < 0) else
                       "the NTK is not finite at initialisation (an input or parameter so "
                       "large that it overflows, say)")
                raise ConfigError(f"lambda_max(H_0) = {lambda0} for seed {seed}{at}: {why}, "
                                  f"so eta = eta_lambda0 / lambda_0 is undefined "
                                  f"(docs/theory.md §1); change the dataset or the model")
            return Prepared(feats, theta0, lambda0, model.bounds(feats, theta0, lambda0))

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
        chunk) and return each chunk's result: the same numbers as running them one by
        one.  More than one chunk needs a model that stacks seeds
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


