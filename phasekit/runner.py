"""Running a sweep's chunks: in process or on Dask, crash-safe and resumable.

Every finished chunk is written atomically (temporary file, then rename) into
``OUT.parts/`` next to the output ``OUT``, together with the resolved config.
Rerunning the same command after a kill (SIGKILL included) loads the finished
chunks and computes only the missing grid points; the assembled dataset equals
an uninterrupted run because chunks are defined by the config alone.  A
different config against the same output is refused, saying why.  Once the
output is written the parts folder is removed.

With Dask (``workers`` or ``scheduler``) each chunk is one task running the
batched engine; results are saved as they arrive, so a lost worker's chunks
are simply recomputed (by Dask, or by the next run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .config import ResolvedConfig
from .dataset import Data
from .manager import PluginManager
from .model import Bound
from .options import ConfigError
from .sweep import Chunk, ChunkResult, Engine, PointEngines

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class PartStore:
    """The ``OUT.parts/`` folder of finished chunks of one output."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.folder = self.output.with_name(self.output.name + PARTS_SUFFIX)

    def open(self, config_toml: str, overwrite: bool = False) -> dict[str, ChunkResult]:
        """Check the stored config and return the finished chunks by key."""
        manifest = self.folder / "config.toml"
        if self.folder.exists() and overwrite:
            shutil.rmtree(self.folder)
        if self.folder.exists() and manifest.exists():
            stored = manifest.read_text()
            if stored != config_toml:
                raise ResumeError(
                    f"{self.folder} holds partial results of a different config "
                    f"({_first_difference(stored, config_toml)}); rerun with the same config "
                    f"to resume, choose another -o, or pass --overwrite to discard them")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(config_toml)
            os.replace(tmp, manifest)
        done = {}
        for path in sorted(self.folder.glob("chunk-*.npz")):
            try:
                done[path.stem] = load_result(path)
            except Exception:  # noqa: BLE001 - a torn file is recomputed, never trusted
                path.unlink(missing_ok=True)
        return done

    def save(self, result: ChunkResult) -> None:
        save_result(result, self.folder / f"{chunk_key(result.chunk)}.npz")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


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


def run_chunk_task(config_toml: str, chunk: Chunk,
                   progress_topic: str | None = None) -> ChunkResult:
    """A Dask task: rebuild the engine of one axis point from its one-point config
    text (cached per worker process) and run one chunk (with ``sweep.threads``),
    publishing its progress on ``progress_topic`` (:class:`~phasekit.progress.ChunkReporter`)."""
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

        reporter = ChunkReporter(progress_topic, chunk_key(chunk), engine.sweep["max_steps"])
    return engine.run_chunk(chunk, reporter)


def _dask_results(engines: PointEngines, todo: list[Chunk], workers: int,
                  scheduler: str | None, progress=None) -> Iterable[ChunkResult]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("--workers/--scheduler need dask.distributed: "
                          "pip install 'phasekit[distributed]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0")
        client = Client(cluster)
    try:
        texts = {i: engines.point_toml(i) for i in {c.point for c in todo}}
        topic = progress.listen(client) if progress is not None else None
        futures = [client.submit(run_chunk_task, texts[chunk.point], chunk, topic, pure=False,
                                 key=f"phasekit-{chunk_key(chunk)}-{os.getpid()}")
                   for chunk in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def execute(config: ResolvedConfig, data: Data | None, manager: PluginManager,
            output: str | os.PathLike | None = None, *, progress=None, workers: int = 0,
            scheduler: str | None = None, overwrite: bool = False,
            chunks: Iterable[Chunk] | None = None):
    """Run (or resume) a sweep, write it to ``output`` and return the dataset.

    ``chunks`` defaults to the config's own chunking (:meth:`PointEngines.chunks`:
    every axis point, seed and learning rate); without ``output`` nothing is
    written and nothing is resumed.  ``data`` is the dataset of a config without
    axes (``None``: the one resolved with the config).
    """
    from .phases import add_critical
    from .storage import build_dataset, write_sweep

    engines = PointEngines(config, data, manager)
    chunks = engines.chunks() if chunks is None else list(chunks)
    store = PartStore(Path(output)) if output is not None else None
    done = store.open(config.to_toml(), overwrite) if store else {}
    done = {k: v for k, v in done.items() if k in {chunk_key(c) for c in chunks}}
    todo = [c for c in chunks if chunk_key(c) not in done]
    if progress is not None:
        progress.start(total_points=sum(len(c.c_values) for c in chunks),
                       already=[s for r in done.values() for s in r.status],
                       max_steps=config.sweep["max_steps"])
    results = dict(done)

    def finished(result: ChunkResult) -> None:
        results[chunk_key(result.chunk)] = result
        if store is not None:
            store.save(result)

    if workers or scheduler:
        for result in _dask_results(engines, todo, workers, scheduler, progress):
            finished(result)
            if progress is not None:
                progress.chunk_done(chunk_key(result.chunk), result.status)
    else:
        for chunk in todo:      # chunks of a (point, seed) are consecutive: prepared once
            finished(engines[chunk.point].run_chunk(
                chunk, progress.advance if progress else None,
                prepared=engines.prepared(chunk.point, chunk.seed)))
    if progress is not None:
        progress.finish()
    ds = add_critical(build_dataset(engines, [results[chunk_key(c)] for c in chunks]))
    if output is not None:
        write_sweep(ds, Path(output))
        store.remove()
    return ds
