"""Chunks, the unit of work, saving and resuming: one axis point, one seed and some
learning rates of the grid, and what training one gives back (:class:`ChunkResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from phasekit.model import Bound


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
    #: lambda_max of the loss Hessian at init (NaN: not computed; phasekit.engine.hessian)
    lambda0_hessian: float = math.nan
