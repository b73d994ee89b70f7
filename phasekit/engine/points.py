"""The axis points of a sweep, each with its own :class:`~phasekit.engine.engine.Engine`,
and how their chunks are cut and batched."""

from __future__ import annotations

from collections.abc import Iterable

from phasekit.config.registry import PluginManager
from phasekit.config.resolve import AxisPoint, ResolvedConfig
from phasekit.dataset import Data
from phasekit.engine.chunks import Chunk, make_chunks
from phasekit.engine.engine import Engine, Prepared


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
        from phasekit.engine.memory import fitted_chunk_size

        sweep = self.config.sweep
        if not sweep["memory_budget"]:
            return sweep["chunk_size"] or len(sweep["eta_lambda0"])
        return fitted_chunk_size(self[i], self.prepared(i, sweep["seeds"][0]))

    def seeds_per_batch(self, i: int) -> int:
        """Seeds trained together in one batch at axis point ``i``: 1 unless the model
        stacks seeds (:meth:`phasekit.model.Model.can_stack_seeds`); else all of them,
        or ``sweep.seed_batch`` if set, as far as their runs fit the memory of a batch
        (:func:`phasekit.engine.memory.seeds_fitting`)."""
        if i not in self._seeds_per_batch:
            sweep = self.config.sweep
            n = len(sweep["seeds"])
            size = min(sweep["seed_batch"] or n, n)
            if size > 1 and not self[i].model.can_stack_seeds():
                size = 1
            if size > 1:
                from phasekit.engine.memory import seeds_fitting

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
        :func:`phasekit.runner.execute.execute`, trains them as the uninterrupted run
        did).  A row's rounding may depend on its batch, within
        :data:`phasekit.engine.batched.BATCH_RTOL` per step (docs/scale.md)."""
        out: dict[tuple, list[Chunk]] = {}
        for chunk in chunks:
            block = chunk.seed_index // self.seeds_per_batch(chunk.point)
            out.setdefault((chunk.point, block, tuple(chunk.c_index)), []).append(chunk)
        return list(out.values())

    def point_toml(self, i: int) -> str:
        """The one-point config of axis point ``i`` as TOML (what a Dask worker runs)."""
        return self.points[i].config.to_toml()


