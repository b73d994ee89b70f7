"""Chunks on Dask: a local cluster of worker processes (``--workers``) or a running
scheduler (``--scheduler``).  Each batch of chunks is one task that rebuilds its
axis point's engine from the one-point config text and runs the batch; results come
back as they finish."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterable

from phasekit.engine.chunks import Chunk, ChunkResult
from phasekit.engine.engine import Engine
from phasekit.engine.points import PointEngines
from phasekit.errors import ConfigError
from phasekit.io.parts import chunk_key

_ENGINES: dict[str, Engine] = {}


def run_batch_task(config_toml: str, chunks: list[Chunk],
                   progress_topic: str | None = None) -> list[ChunkResult]:
    """A Dask task: rebuild the engine of one axis point from its one-point config
    text (cached per worker process) and run one batch of chunks (with
    ``sweep.threads``), publishing its progress on ``progress_topic``
    (:class:`~phasekit.runner.progress.ChunkReporter`, keyed by the batch's first chunk)."""
    import tomllib

    from phasekit.config.registry import get_plugin_manager
    from phasekit.config.resolve import resolve_config

    engine = _ENGINES.get(config_toml)
    if engine is None:
        manager = get_plugin_manager()
        config, data = resolve_config(tomllib.loads(config_toml), manager)
        engine = _ENGINES[config_toml] = Engine(config, data, manager)
    reporter = None
    if progress_topic:
        from phasekit.runner.progress import ChunkReporter

        reporter = ChunkReporter(progress_topic, chunk_key(chunks[0]), engine.sweep["max_steps"])
    return engine.run_batch(chunks, reporter)




#: Seconds to wait for a ``--scheduler`` to answer (Dask's own default is 30 s).
CONNECT_TIMEOUT = 5


def require_dask() -> None:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise ConfigError("--workers/--scheduler need dask.distributed: "
                          "pip install 'phasekit[distributed]'") from None


def _connect(workers: int, scheduler: str | None):
    """``(client, cluster)``: a client of ``scheduler``, or of a new local cluster of
    ``workers`` processes (``cluster`` is then that cluster, else ``None``)."""
    require_dask()
    from dask.distributed import Client, LocalCluster

    if scheduler:
        check_address(scheduler)
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except Exception as exc:  # noqa: BLE001 - whatever the comm layer raises
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, OSError | TimeoutError):
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} within "
                                  f"{CONNECT_TIMEOUT} s ({text}); check the address and that "
                                  f"the scheduler runs, or use --workers N for a local "
                                  f"cluster") from None
            raise ConfigError(f"--scheduler {scheduler}: something answers there, but not as "
                              f"a Dask scheduler ({type(exc).__name__}: {text[:200]}); check "
                              f"the host and port") from None
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


def dask_results(engines: PointEngines, todo: list[list[Chunk]], workers: int,
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


def check_address(scheduler: str) -> None:
    """Refuse an empty ``--scheduler`` or one Dask cannot parse (an unknown protocol)."""
    require_dask()
    if not scheduler.strip():
        raise ConfigError("--scheduler needs an address such as tcp://host:8786 or "
                          "tls://host:8786, got an empty one; leave it out to run here")
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme = parse_address(scheduler)[0]
        get_backend(scheme)
    except (ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--scheduler {scheduler}: not a Dask scheduler address ({text}); "
                          f"give one such as tcp://host:8786 or tls://host:8786") from None
    if scheme in ("tls", "wss"):
        from distributed.security import Security

        if Security().get_connection_args("client").get("ssl_context") is None:
            raise ConfigError(
                f"--scheduler {scheduler}: a {scheme}:// scheduler needs Dask's TLS "
                f"settings, which are not set: distributed.comm.tls.ca-file, "
                f"distributed.comm.tls.client.cert and .key in Dask's configuration (or "
                f"DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT, ..._CLIENT__KEY); "
                f"see docs/reliability.md")


def check_scheduler(scheduler: str) -> None:
    """Connect to ``scheduler`` and close again: an empty, unparsable, unreachable or
    wrong address is one :class:`~phasekit.errors.ConfigError` before any work or file.

    Dask ships tasks and results with pickle: a scheduler runs whatever it is sent and
    this process unpickles what comes back, so give only a scheduler you trust.  A
    ``tls://`` address uses Dask's own TLS settings (``distributed.comm.tls.*`` in
    Dask's configuration, docs/reliability.md)."""
    check_address(scheduler)
    _close(*_connect(0, scheduler), quiet=True)
