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
marker (:mod:`phasekit.outputs`): a folder of that name phasekit did not make is
refused, and only files phasekit names as its own are ever deleted.  The output
is locked (:class:`~phasekit.outputs.OutputLock`) while a run writes it; a
failed chunk or final write and Ctrl-C end in one line saying what was kept.

Chunks are the unit of saving and resuming; they run in *batches*
(:meth:`~phasekit.sweep.PointEngines.batches`: the chunks of several seeds with the
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
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .config import ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .model import Bound
from .options import ConfigError
from .outputs import (
    MARKER,
    MARKER_TEXT,
    Interrupted,
    OutputError,
    OutputLock,
    OutputWarning,
    atomic_write,
    clean_temporaries,
    create_owned_folder,
    describe_memory_limit,
    fmt_bytes,
    is_owned,
    memory_limit,
    remove_owned,
    write_failure,
    write_output,
)
from .sweep import Chunk, ChunkResult, Engine, PointEngines, record_schedule

PARTS_SUFFIX = ".parts"


class ResumeError(ConfigError):
    """Stored partial results that cannot be combined with this run."""


def chunk_key(chunk: Chunk) -> str:
    return f"chunk-p{chunk.point:05d}-s{chunk.seed_index:04d}-c{chunk.c_index[0]:05d}"


# -- saving and loading chunk results ---------------------------------------------

def save_result(result: ChunkResult, path: Path) -> None:
    """Write one chunk's result atomically as an ``.npz`` file (no pickle)."""
    meta = {
        "point": result.chunk.point,
        "seed_index": result.chunk.seed_index, "seed": result.chunk.seed,
        "c_index": result.chunk.c_index, "c_values": result.chunk.c_values,
        "lambda0": result.lambda0,
        "bounds": [b.__dict__ for b in result.bounds],
        "extra_dims": {k: list(v) for k, v in result.extra_dims.items()},
        "names": list(result.traj),
    }
    arrays = {"eta": result.eta, "steps": result.steps,
              "status": np.asarray(result.status, dtype=str),
              "meta": np.asarray(json.dumps(meta))}
    for name in result.traj:
        arrays[f"traj__{name}"] = result.traj[name]
        arrays[f"final__{name}"] = result.final[name]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_result(path: Path) -> ChunkResult:
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        chunk = Chunk(meta["seed_index"], meta["seed"], meta["c_index"], meta["c_values"],
                      meta["point"])
        return ChunkResult(
            chunk=chunk, lambda0=meta["lambda0"],
            bounds=[Bound(**b) for b in meta["bounds"]],
            eta=npz["eta"], traj={n: npz[f"traj__{n}"] for n in meta["names"]},
            final={n: npz[f"final__{n}"] for n in meta["names"]},
            steps=npz["steps"], status=npz["status"].astype(str).astype(object),
            extra_dims={k: tuple(v) for k, v in meta["extra_dims"].items()})


#: Names phasekit writes into a parts folder: the config, chunk files, and their
#: temporaries (current and earlier versions' names).
_OWN_PART = re.compile(
    r"config\.toml|config\.tmp|chunk-(?:p\d+-)?s\d+-c\d+\.npz"
    r"|\.(?:chunk-(?:p\d+-)?s\d+-c\d+\.npz|config\.toml)\.[a-z0-9_]{8}\.(?:part|probe|new)")


def own_part(name: str) -> bool:
    """Whether ``name`` in a parts folder is a file phasekit writes there."""
    return _OWN_PART.fullmatch(name) is not None


class PartStore:
    """The ``OUT.parts/`` folder of finished chunks of one output (module docstring)."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.folder = self.output.with_name(self.output.name + PARTS_SUFFIX)
        self.manifest = self.folder / "config.toml"

    def _check_owned(self) -> None:
        """Refuse a folder of this name that phasekit did not make.  A folder of an
        earlier phasekit (no marker, but a config and nothing but phasekit's files)
        is adopted."""
        if not self.folder.is_dir() or self.folder.is_symlink():
            raise OutputError(f"{self.folder} exists and is not a folder phasekit made; move "
                              f"it away or choose another -o")
        if is_owned(self.folder):
            return
        names = [p.name for p in self.folder.iterdir()]
        if "config.toml" in names and all(map(own_part, names)):
            (self.folder / MARKER).write_text(MARKER_TEXT)
            return
        raise OutputError(f"{self.folder} exists but was not made by phasekit (no {MARKER} "
                          f"marker); phasekit keeps its partial results there and will not "
                          f"touch this folder: move it away or choose another -o")

    def exists(self) -> bool:
        return os.path.lexists(self.folder)

    def stored_config(self) -> str | None:
        """The config the parts were computed with (``None``: no folder of phasekit's)."""
        if not self.exists() or not is_owned(self.folder) or not self.manifest.is_file():
            return None
        return self.manifest.read_text()

    def chunk_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("chunk-*.npz") if own_part(p.name))

    def open(self, config_toml: str, overwrite: bool = False) -> dict[str, ChunkResult]:
        """Check the stored config and return the finished chunks by key: parts of this
        config are resumed; parts of another are discarded with ``overwrite``, else
        refused (:class:`ResumeError`)."""
        try:
            return self._open(config_toml, overwrite)
        except OSError as exc:
            raise OutputError(f"cannot prepare {self.folder}/ for partial results "
                              f"({write_failure(self.folder, exc)})") from None

    def _open(self, config_toml: str, overwrite: bool) -> dict[str, ChunkResult]:
        clean_temporaries(self.folder, own_part)    # a folder a killed run was creating
        if not self.exists():
            create_owned_folder(self.folder, {"config.toml": config_toml})
            return {}
        self._check_owned()
        for path in self.folder.iterdir():       # temporaries of a killed chunk write
            if path.name.startswith(".") and path.name.endswith(".part") \
                    and own_part(path.name):
                path.unlink(missing_ok=True)
        stored = self.manifest.read_text() if self.manifest.is_file() else None
        if stored is not None and stored != config_toml:
            if not overwrite:
                raise ResumeError(
                    f"{self.folder} holds partial results of a different config "
                    f"({_first_difference(stored, config_toml)}); rerun with the same config "
                    f"to resume, choose another -o, or pass --overwrite to discard them")
            # Chunks first, then the config: a kill in between leaves a config that
            # matches no chunk, never old chunks under the new config.
            for path in self.chunk_files():
                path.unlink()
            stored = None
        if stored is None:
            atomic_write(self.manifest, lambda tmp: tmp.write_text(config_toml))
        done = {}
        for path in self.chunk_files():
            try:
                done[path.stem] = load_result(path)
            except Exception:  # noqa: BLE001 - a torn file is recomputed, never trusted
                path.unlink(missing_ok=True)
        return done

    def save(self, result: ChunkResult) -> None:
        save_result(result, self.folder / f"{chunk_key(result.chunk)}.npz")

    def remove(self) -> None:
        """Delete phasekit's files and the folder; files someone else put there stay
        (with a warning)."""
        if not self.exists():
            return
        left = remove_owned(self.folder, own_part)
        if left:
            warnings.warn(OutputWarning(
                f"kept {self.folder}/: it holds files phasekit did not write "
                f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''})"), stacklevel=2)

    def forget_if_empty(self) -> None:
        """Remove the folder if it holds no finished chunk (a run that failed early)."""
        if self.folder.is_dir() and is_owned(self.folder) and not self.chunk_files():
            remove_owned(self.folder, own_part)


def _first_difference(a: str, b: str) -> str:
    table = ""
    for la, lb in zip(a.splitlines(), b.splitlines(), strict=False):
        if la.startswith("["):
            table = la.strip("[]")
        if la != lb:
            key = la.split("=")[0].strip() or lb.split("=")[0].strip()
            return f"{table}.{key}: stored {la.split('=', 1)[-1].strip()!r}, now " \
                   f"{lb.split('=', 1)[-1].strip()!r}"
    return "tables differ"


# -- remote execution -------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}


def run_batch_task(config_toml: str, chunks: list[Chunk],
                   progress_topic: str | None = None) -> list[ChunkResult]:
    """A Dask task: rebuild the engine of one axis point from its one-point config
    text (cached per worker process) and run one batch of chunks (with
    ``sweep.threads``), publishing its progress on ``progress_topic``
    (:class:`~phasekit.progress.ChunkReporter`, keyed by the batch's first chunk)."""
    import tomllib

    from .config import resolve_config
    from .manager import get_plugin_manager

    engine = _ENGINES.get(config_toml)
    if engine is None:
        manager = get_plugin_manager()
        config, data = resolve_config(tomllib.loads(config_toml), manager)
        engine = _ENGINES[config_toml] = Engine(config, data, manager)
    reporter = None
    if progress_topic:
        from .progress import ChunkReporter

        reporter = ChunkReporter(progress_topic, chunk_key(chunks[0]), engine.sweep["max_steps"])
    return engine.run_batch(chunks, reporter)


def run_chunk_task(config_toml: str, chunk: Chunk,
                   progress_topic: str | None = None) -> ChunkResult:
    """:func:`run_batch_task` of one chunk."""
    return run_batch_task(config_toml, [chunk], progress_topic)[0]


#: Seconds to wait for a ``--scheduler`` to answer (Dask's own default is 30 s).
CONNECT_TIMEOUT = 5


def _dask_available() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise ConfigError("--workers/--scheduler need dask.distributed: "
                          "pip install 'phasekit[distributed]'") from None


def _connect(workers: int, scheduler: str | None):
    """``(client, cluster)``: a client of ``scheduler``, or of a new local cluster of
    ``workers`` processes (``cluster`` is then that cluster, else ``None``)."""
    _dask_available()
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except Exception as exc:  # noqa: BLE001 - whatever the comm layer raises
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, OSError | TimeoutError):
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} within "
                                  f"{CONNECT_TIMEOUT} s ({text}); check the address and that "
                                  f"the scheduler runs, or use --workers N for a local "
                                  f"cluster") from None
            raise ConfigError(f"--scheduler {scheduler}: not a Dask scheduler address "
                              f"({text}); give one such as tcp://host:8786") from None
    # The terminal sends Ctrl-C to the whole process group, workers included.  They
    # are started while this process ignores SIGINT, a disposition they inherit (and
    # keep: Python and asyncio install no handler over an ignored SIGINT), so only
    # this process hears Ctrl-C and closes the cluster.  The price: a Ctrl-C during
    # the cluster's start (a few seconds) is lost; the next one is heard.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot start a local Dask cluster of {workers} workers "
                          f"({type(exc).__name__}: {exc})") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    try:
        return Client(cluster), cluster
    except BaseException:
        _close(None, cluster, quiet=True)
        raise


_NOISY = ("distributed", "tornado", "asyncio")


def _quiet_logs() -> dict[str, int]:
    """Silence Dask's loggers (returns their levels).  Run on each worker too before an
    interrupted run closes the cluster: no lines about the cancelled tasks."""
    levels = {}
    for name in _NOISY:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.CRITICAL + 1)
    return levels


def _close(client, cluster, quiet: bool) -> None:
    """Close the client (and the local cluster); with ``quiet`` (an interrupt or an
    error is on its way out) Dask's shutdown warnings and log lines are silenced, so
    the one line phasekit prints is all one reads."""
    levels = _quiet_logs() if quiet else {}
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            try:
                if client is not None:
                    if quiet and cluster is not None:
                        with contextlib.suppress(Exception):
                            client.run(_quiet_logs)
                    client.close()
            finally:
                if cluster is not None:
                    cluster.close()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _dask_results(engines: PointEngines, todo: list[list[Chunk]], workers: int,
                  scheduler: str | None, progress=None) -> Iterable[list[ChunkResult]]:
    """Run each batch of ``todo`` as one Dask task; yields each batch's results."""
    from dask.distributed import as_completed

    client, cluster = _connect(workers, scheduler)
    try:
        texts = {i: engines.point_toml(i) for i in {b[0].point for b in todo}}
        topic = progress.listen(client) if progress is not None else None
        futures = [client.submit(run_batch_task, texts[batch[0].point], batch, topic,
                                 pure=False,
                                 key=f"phasekit-{chunk_key(batch[0])}-{os.getpid()}")
                   for batch in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        _close(client, cluster, quiet=sys.exc_info()[0] is not None)


def execute(config: ResolvedConfig, data: Data | None, manager: PluginManager,
            output: str | os.PathLike | None = None, *, progress=None, workers: int = 0,
            scheduler: str | None = None, overwrite: bool = False,
            chunks: Iterable[Chunk] | None = None):
    """Run (or resume) a sweep, write it to ``output`` and return the dataset.

    ``chunks`` defaults to the config's own chunking (:meth:`PointEngines.chunks`:
    every axis point, seed and learning rate); without ``output`` nothing is
    written and nothing is resumed.  ``data`` is the dataset of a config without
    axes (``None``: the one resolved with the config).

    A sweep whose dataset would not fit :func:`~phasekit.outputs.memory_limit` is
    refused before any work (:func:`check_dataset_size`); ``output`` is locked
    while the run writes it.  A chunk or final write that fails (a full disk) and
    Ctrl-C keep every finished chunk and say so (:class:`~phasekit.outputs.OutputError`,
    :class:`~phasekit.outputs.Interrupted`); a run that fails before its first
    chunk leaves no parts folder behind.
    """
    engines = PointEngines(config, data, manager)
    check_dataset_size(config, engines)
    if scheduler:
        _close(*_connect(0, scheduler), quiet=True)     # unreachable: one line, nothing written
    elif workers:
        _dask_available()
    if output is None:
        return _execute(config, engines, chunks, None, progress, workers, scheduler, overwrite)
    output = Path(output)
    with OutputLock(output):
        return _execute(config, engines, chunks, PartStore(output), progress, workers,
                        scheduler, overwrite)


def _execute(config: ResolvedConfig, engines: PointEngines, chunks: Iterable[Chunk] | None,
             store: PartStore | None, progress, workers: int, scheduler: str | None,
             overwrite: bool):
    from .phases import add_critical
    from .storage import build_dataset

    chunks = engines.chunks() if chunks is None else list(chunks)
    done = store.open(config.to_toml(), overwrite) if store else {}
    done = {k: v for k, v in done.items() if k in {chunk_key(c) for c in chunks}}
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
        # The config's batches (PointEngines.batches), each trained whole if any of its chunks
        # is missing: a stored chunk of an unfinished batch (a kill between two saves) is
        # trained again with it, and its stored result kept, so that every chunk is computed
        # in the batch an uninterrupted run computes it in -- the same kernels on the same
        # shapes, hence the same numbers to the bit (docs/scale.md).
        batches = [b for b in engines.batches(chunks) if any(chunk_key(c) not in done for c in b)]
        again = {chunk_key(c) for b in batches for c in b} & set(done)
        if progress is not None:
            progress.start(total_points=sum(len(c.c_values) for c in chunks),
                           already=[s for k, r in done.items() if k not in again
                                    for s in r.status],
                           max_steps=config.sweep["max_steps"],
                           again=sum(len(done[k].status) for k in again))
        if workers or scheduler:
            with contextlib.closing(_dask_results(engines, batches, workers, scheduler,
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
        ds = add_critical(build_dataset(engines, [results[chunk_key(c)] for c in chunks]))
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
    a sweep above :func:`~phasekit.outputs.memory_limit`, before any work.

    The trajectories are (axis points x seeds x rates x recorded steps x recorded
    values) float64 numbers, each observable's extra dimension (``layer``) padded to
    its union over axis points, as :func:`~phasekit.storage.build_dataset` stores
    them.  The chunks' results are held as well until the dataset is built, so the
    peak is about twice this.
    """
    sweep = config.sweep
    points = math.prod(config.axis_shape) if config.axes else 1
    seeds, rates = len(sweep["seeds"]), len(sweep["eta_lambda0"])
    recorded = len(record_schedule(sweep["max_steps"], sweep["record_dense"],
                                   sweep["record_per_decade"]))
    limit = memory_limit()

    def check(values: int) -> int:
        size = points * seeds * rates * recorded * values * 8
        if size > limit:
            raise ConfigError(
                f"this sweep's trajectories would take {fmt_bytes(size)} in memory ({points} "
                f"axis point(s) x {seeds} seed(s) x {rates} learning rate(s) x {recorded} "
                f"recorded steps x {values} recorded values x 8 bytes), more than phasekit "
                f"builds at once ({describe_memory_limit()}); use fewer seeds or learning "
                f"rates, record fewer steps (smaller sweep.record_per_decade, "
                f"sweep.record_dense or sweep.max_steps), or split the sweep over several "
                f"runs")
        return size

    check(3)                                  # loss, weight norm, sharpness: before any model
    if engines is None:
        return check(3)
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
