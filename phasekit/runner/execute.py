"""Running a sweep's chunks: in process or on Dask, crash-safe and resumable.

Every finished chunk is written atomically (temporary file, then rename) into
``OUT.parts/`` next to the output ``OUT``, together with the resolved config.
Rerunning the same command after a kill (SIGKILL included) loads the finished
chunks and computes only the missing grid points; the assembled dataset equals
an uninterrupted run because chunks are defined by the config alone.  Once the
output is written the parts folder is removed.

The rules for what is kept (``docs/reliability.md``): parts of this very config
are always resumed, never discarded (``--overwrite`` included); parts of a
different config are discarded only with ``--overwrite``, else the run is
refused naming the first differing key.  The parts folder carries phasekit's
marker (:mod:`phasekit.io.files`): a folder of that name phasekit did not make is
refused, and only files phasekit names as its own are ever deleted.  The output
is locked (:class:`~phasekit.io.files.OutputLock`) while a run writes it; a
failed chunk or final write and Ctrl-C end in one line saying what was kept.

Chunks are the unit of saving and resuming; they run in *batches*
(:meth:`~phasekit.engine.points.PointEngines.batches`: the chunks of several seeds with the
same learning rates, where the model stacks seeds), whose composition the config
alone decides.  A resumed run trains every batch that still misses a chunk whole,
the chunks stored from it included (their stored results are kept): each chunk is
computed with the same companions as in an uninterrupted run, so the same kernels
run on the same shapes and the numbers agree to the bit at equal threads (a row's
rounding may depend on its batch, docs/scale.md).  With Dask (``workers`` or
``scheduler``) each batch is one task running the batched engine; results are saved
as they arrive, so a lost worker's chunks are simply recomputed (by Dask, or by the
next run).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from phasekit.config.limits import check_sweep_size, check_trajectories
from phasekit.config.registry import PluginManager
from phasekit.config.resolve import ResolvedConfig
from phasekit.dataset import Data
from phasekit.engine.chunks import Chunk, ChunkResult
from phasekit.engine.points import PointEngines
from phasekit.errors import Interrupted, OutputError
from phasekit.io.files import (
    OutputLock,
    write_failure,
)
from phasekit.io.netcdf import write_output
from phasekit.io.parts import PartStore, chunk_key
from phasekit.runner.dask import check_scheduler, dask_results, require_dask

#: what ``derive`` is: the assembled dataset in, the dataset to write out
Derive = Callable[[Any], Any]


def execute(config: ResolvedConfig, data: Data | None, manager: PluginManager,
            output: str | os.PathLike | None = None, *, progress=None, workers: int = 0,
            scheduler: str | None = None, overwrite: bool = False,
            chunks: Iterable[Chunk] | None = None, derive: Derive | None = None):
    """Run (or resume) a sweep, write it to ``output`` and return the dataset.

    ``chunks`` defaults to the config's own chunking (:meth:`PointEngines.chunks`:
    every axis point, seed and learning rate); without ``output`` nothing is
    written and nothing is resumed.  ``data`` is the dataset of a config without
    axes (``None``: the one resolved with the config).  ``derive`` adds variables
    computed from the assembled trajectories before the file is written (the
    command line and :func:`phasekit.api.run` pass
    :func:`phasekit.analysis.phases.add_critical`).

    A sweep whose dataset would not fit :func:`~phasekit.config.limits.memory_limit` is
    refused before any work (:func:`check_dataset_size`); ``output`` is locked
    while the run writes it.  A chunk or final write that fails (a full disk) and
    Ctrl-C keep every finished chunk and say so (:class:`~phasekit.errors.OutputError`,
    :class:`~phasekit.errors.Interrupted`); a run that fails before its first
    chunk leaves no parts folder behind.
    """
    engines = PointEngines(config, data, manager)
    check_dataset_size(config, engines)
    if scheduler is not None:
        check_scheduler(scheduler)          # unreachable: one line, nothing written
    elif workers:
        require_dask()
    if output is None:
        return _execute(config, engines, chunks, None, progress, workers, scheduler, overwrite,
                        derive)
    output = Path(output)
    with OutputLock(output):
        return _execute(config, engines, chunks, PartStore(output), progress, workers,
                        scheduler, overwrite, derive)


def _execute(config: ResolvedConfig, engines: PointEngines, chunks: Iterable[Chunk] | None,
             store: PartStore | None, progress, workers: int, scheduler: str | None,
             overwrite: bool, derive: Derive | None):
    from phasekit.io.netcdf import build_dataset

    whole_grid = chunks is None      # then every run must end with a result
    chunks = engines.chunks() if chunks is None else list(chunks)
    done = store.open(config.to_toml(), overwrite, chunks) if store else {}
    batches = _batches_to_train(engines, chunks, done, progress, config.sweep["max_steps"])
    results = dict(done)

    def finished(result: ChunkResult) -> None:
        if chunk_key(result.chunk) in done:          # stored: kept as it is
            return
        results[chunk_key(result.chunk)] = result
        if store is not None:
            try:
                store.save(result)
            except OSError as exc:
                raise OutputError(f"cannot save a finished chunk in {store.folder}/ "
                                  f"({write_failure(store.folder, exc)}); "
                                  f"{_kept(store, chunks)}") from None

    try:
        if workers or scheduler:
            with contextlib.closing(dask_results(engines, batches, workers, scheduler,
                                                  progress)) as arriving:
                for batch in arriving:
                    for result in batch:
                        finished(result)
                    if progress is not None:
                        progress.chunk_done(chunk_key(batch[0].chunk),
                                            [s for r in batch for s in r.status])
        else:
            for batch in batches:   # a seed's batches are consecutive: prepared once
                for result in engines[batch[0].point].run_batch(
                        batch, progress.advance if progress else None,
                        prepared=engines.prepared_batch(batch)):
                    finished(result)
        if progress is not None:
            progress.finish()
        ds = build_dataset(engines, [results[chunk_key(c)] for c in chunks])
        if whole_grid and (ds["status"] == "pending").any():
            raise OutputError(f"{int((ds['status'] == 'pending').sum())} run(s) of the grid "
                              f"came out without a result (status pending); nothing was "
                              f"written; " + (_kept(store, chunks) if store else "rerun"))
        if derive is not None:
            ds = derive(ds)
        if store is not None:
            write_output(ds, store.output, then=lambda: _kept(store, chunks))
    except KeyboardInterrupt:
        if store is None:
            raise
        raise Interrupted(_kept(store, chunks)) from None
    except BaseException:
        if store is not None:
            with contextlib.suppress(OSError):      # never hide the failure itself
                store.forget_if_empty()
        raise
    if store is not None:
        store.remove()
    return ds


def _batches_to_train(engines: PointEngines, chunks: list[Chunk], done: dict, progress,
                      max_steps: int) -> list[list[Chunk]]:
    """The config's batches (:meth:`PointEngines.batches`) that still miss a chunk, each to
    be trained whole: a stored chunk of an unfinished batch (a kill between two saves) is
    trained again with it and its stored result kept, so that every chunk is computed in
    the batch an uninterrupted run computes it in -- the same kernels on the same shapes,
    hence the same numbers to the bit (docs/scale.md).  Starts ``progress``."""
    batches = [b for b in engines.batches(chunks) if any(chunk_key(c) not in done for c in b)]
    again = {chunk_key(c) for b in batches for c in b} & set(done)
    if progress is not None:
        progress.start(total_points=sum(len(c.c_values) for c in chunks),
                       already=[s for k, r in done.items() if k not in again for s in r.status],
                       max_steps=max_steps, again=sum(len(done[k].status) for k in again))
    return batches


def _kept(store: PartStore, chunks: list[Chunk]) -> str:
    """What a failed or interrupted run leaves, and what to do: the end of its message."""
    keys = {chunk_key(c) for c in chunks}
    kept = sum(p.stem in keys for p in store.chunk_files())
    if not kept:
        store.forget_if_empty()
        return f"no finished chunk is kept; {store.output} is unchanged"
    where = f"{store.folder}{os.sep}"
    if kept == len(keys):
        return (f"all {kept} chunks are kept in {where}; rerun the same command to write "
                f"{store.output.name} without recomputing them")
    return f"{kept} of {len(keys)} chunks are kept in {where}; rerun the same command to resume"


def check_dataset_size(config: ResolvedConfig, engines: PointEngines | None = None) -> int:
    """Bytes of the sweep's trajectories in the final dataset; refuses (``ConfigError``)
    a sweep above :func:`~phasekit.config.limits.memory_limit`, before any work.

    The trajectories are (axis points x seeds x rates x recorded steps x recorded
    values) float64 numbers, each observable's extra dimension (``layer``) padded to
    its union over axis points, as :func:`~phasekit.io.netcdf.build_dataset` stores
    them.  The chunks' results are held as well until the dataset is built, so the
    peak is about twice this.  Without ``engines`` the closed form of the config's
    parameters (:func:`~phasekit.config.limits.check_sweep_size`, which
    :func:`~phasekit.config.resolve.resolve_config` has already passed) is used.
    """
    sweep = config.sweep
    if engines is None:
        return check_sweep_size(sweep, config.axis_shape if config.axes else ())
    points = math.prod(config.axis_shape) if config.axes else 1
    seeds, rates = len(sweep["seeds"]), len(sweep["eta_lambda0"])
    recorded = len(engines[0].schedule)

    def check(values: int) -> int:
        return check_trajectories(points, seeds, rates, recorded, values)

    check(3)                                  # loss, weight norm, sharpness
    widths: dict[str, dict[str, set]] = {}
    for i in range(len(engines)):
        engine = engines[i]
        coords = engine.observable_coords()
        for obs in engine.observables:
            dims = widths.setdefault(obs.name, {d: set() for d in obs.dims})
            for dim in obs.dims:
                dims.setdefault(dim, set()).update(map(repr, coords.get(obs.name, {})
                                                       .get(dim, [None])))
    values = 3 + sum(math.prod(max(len(v), 1) for v in dims.values()) if dims else 1
                     for dims in widths.values())
    return check(values)
