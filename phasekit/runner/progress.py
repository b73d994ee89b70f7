"""Sweep progress in run-steps, with an ETA: a tqdm bar on a terminal, a plain line
every 10 s in a log (both written to stderr).

The unit is the *run-step*, one gradient-descent update of one grid point.  The
total is ``grid points x sweep.max_steps``; a run that stops early (converged,
diverged, trivial) counts its remaining steps as done, so the bar reaches 100 %
exactly when the last run stops and the ETA is an upper estimate that tightens
as runs leave.  The postfix counts the finished grid points by status and the
runs in flight.

Two sources feed it:

* in process, the engine calls :meth:`Progress.advance` after every step
  (``Engine.run_chunk``'s ``progress`` callback);
* on Dask, each chunk's task runs with a :class:`ChunkReporter` that publishes the
  chunk's cumulative state as a ``distributed`` event (``Worker.log_event``) at
  most every 0.25 s; :meth:`Progress.listen` subscribes the client to that topic
  and :meth:`Progress.chunk_done` settles a chunk when its result arrives.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable

from tqdm import tqdm

UNIT = " run-steps"
BAR = ("{l_bar}{bar}| {n_fmt}/{total_fmt} run-steps [{elapsed}<{remaining}, "
       "{rate_noinv_fmt}{postfix}]")
PLAIN = "{percentage:3.0f}% {n_fmt}/{total_fmt} run-steps [{elapsed}<{remaining}, " \
        "{rate_noinv_fmt}{postfix}]"
#: seconds between two events of one chunk on a Dask worker
PUBLISH_INTERVAL = 0.25


def _counts_text(counts: Counter) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"


class _Bar(tqdm):
    """A tqdm bar whose rate (and so ETA) is the one :class:`Progress` measures."""

    rate = None

    @property
    def format_dict(self):
        d = super().format_dict
        d["rate"] = self.rate
        return d


class Tally:
    """One source's share: run-steps done, runs in flight, finished runs by status.

    :meth:`add` takes the engine's callback arguments: ``steps`` runs just made one
    update each (the batch still training), and the runs with statuses
    ``finished`` just stopped after ``at`` updates; their remaining
    ``max_steps - at`` steps count as done.
    """

    def __init__(self, max_steps: int):
        self.max_steps = max(int(max_steps), 1)
        self.n = 0
        self.running = 0
        self.counts: Counter = Counter()

    def add(self, steps: int, finished: Iterable[str] = (), at: int = 0) -> None:
        self.n += steps
        if steps:
            self.running = steps
        finished = list(finished)
        if finished:
            self.counts.update(finished)
            self.n += len(finished) * max(self.max_steps - at, 0)
            self.running = max(self.running - len(finished), 0)


class Progress:
    """Run-steps done of the sweep, grid points finished by status, runs in flight.

    ``min_interval``: seconds between two redraws (default 0.2 on a terminal, 10
    in a log) on ``clock``.  :meth:`start` and :meth:`finish` always draw.  Thread-safe: Dask
    events arrive on the client's event-loop thread.
    """

    def __init__(self, stream=None, min_interval: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.stream = stream if stream is not None else sys.stderr
        # A terminal redraws one line in place; a log gets a line every 10 s.
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if min_interval is None:
            min_interval = 0.2 if self.tty else 10.0
        self.min_interval = min_interval
        self._lock = threading.RLock()
        self.points = self.total = self.initial = self.resumed = 0
        self.resumed_counts: Counter = Counter()
        self.local = Tally(1)                       # chunks run in this process
        self.remote: dict[str, Tally] = {}          # chunks on Dask workers, by key
        self._settled: set[str] = set()
        self.remote_events = 0                      # progress events from workers
        self._bar: _Bar | None = None
        self._t0 = self._last = 0.0
        self._first: tuple[float, int] | None = None   # (time, n) at the first report
        self._shown: tuple | None = None                # what the last line showed
        self._finished = False

    # -- state ----------------------------------------------------------------------

    def _tallies(self) -> list[Tally]:
        return [self.local, *self.remote.values()]

    @property
    def n(self) -> int:
        """Run-steps done, resumed ones included."""
        return self.initial + sum(t.n for t in self._tallies())

    @property
    def running(self) -> int:
        return sum(t.running for t in self._tallies())

    @property
    def counts(self) -> Counter:
        """Finished grid points by status, resumed ones included."""
        total = Counter(self.resumed_counts)
        for t in self._tallies():
            total.update(t.counts)
        return total

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    # -- the engine-facing API -----------------------------------------------------

    def start(self, total_points: int, already: Iterable[str] = (), max_steps: int = 1,
              again: int = 0) -> None:
        """A sweep of ``total_points`` grid points of at most ``max_steps`` updates each;
        ``already`` holds the statuses of the points resumed from stored chunks, ``again``
        counts the stored points trained again with the rest of an unfinished batch
        (:func:`phasekit.runner.execute`; they count as work to do)."""
        already = list(already)
        with self._lock:
            self.local = Tally(max_steps)
            self.remote.clear()
            self._settled.clear()
            self.points = total_points
            self.total = total_points * self.local.max_steps
            self.resumed = len(already)
            self.resumed_counts = Counter(already)
            self.initial = self.resumed * self.local.max_steps
            self._finished = False
            self._first = self._shown = None
            if self.resumed or again:
                self.stream.write(f"resuming: {self.resumed} of {total_points} grid points "
                                  f"already done" + (f"; {again} stored with an unfinished "
                                                     f"batch are trained again with it"
                                                     if again else "") + "\n")
            self._t0 = self.clock()
            if self.tty:
                self._bar = _Bar(total=self.total or None, initial=self.initial,
                                 file=self.stream, unit=UNIT, unit_scale=True,
                                 bar_format=BAR, smoothing=0, dynamic_ncols=True,
                                 mininterval=0, leave=True)
            self._draw(force=True)

    def advance(self, steps: int, finished: Iterable[str] = (), at: int = 0) -> None:
        """The engine's callback: ``steps`` runs just made one update each (the batch
        still training); the runs with statuses ``finished`` just stopped after ``at``
        updates (their remaining steps count as done)."""
        with self._lock:
            self.local.add(steps, finished, at)
            self._draw()

    def finish(self) -> None:
        with self._lock:
            self.local.running = 0
            self._draw(force=True)
            self._finished = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.stream.flush()

    # -- chunks running elsewhere (Dask) ---------------------------------------------

    def update_chunk(self, key: str, n: int, running: int, counts: dict[str, int]) -> None:
        """The cumulative state of a chunk running on a worker (a newer event of the
        same chunk replaces the older one, a recomputed chunk starts again; a settled
        chunk ignores late events)."""
        with self._lock:
            if self._finished or key in self._settled:
                return
            self.remote_events += 1
            tally = self.remote[key] = Tally(self.local.max_steps)
            tally.n, tally.running, tally.counts = int(n), int(running), Counter(counts)
            self._draw()

    def chunk_done(self, key: str, statuses: Iterable[str]) -> None:
        """A remote chunk's result arrived: its runs finished with ``statuses``."""
        statuses = list(statuses)
        with self._lock:
            self._settled.add(key)
            tally = self.remote[key] = Tally(self.local.max_steps)
            tally.add(0, statuses, 0)
            self._draw()

    def listen(self, client) -> str:
        """Subscribe ``client`` to this sweep's progress events; returns the topic the
        workers' :class:`ChunkReporter` publish to."""
        topic = f"phasekit-progress-{uuid.uuid4().hex}"

        def handler(event) -> None:
            _, msg = event
            self.update_chunk(msg["key"], msg["n"], msg["running"], msg["counts"])

        client.subscribe_topic(topic, handler)
        return topic

    # -- drawing -----------------------------------------------------------------------

    def postfix(self) -> str:
        return (f"{self.done}/{self.points} done ({_counts_text(self.counts)}), "
                f"{self.running} running")

    def rate(self, now: float) -> float | None:
        """Run-steps per second since the first report (setting up the engines, or a
        Dask cluster, is not work done), or None before any."""
        if self._first is None or now <= self._first[0]:
            return None
        return (self.n - self._first[1]) / (now - self._first[0])

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if self._first is None and self.n > self.initial:
            self._first = (now, self.n)
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        n = min(self.n, self.total) if self.total else self.n
        postfix = self.postfix()
        if (n, postfix) == self._shown:        # e.g. finish() right after the last step
            return
        self._shown = (n, postfix)
        if self._bar is not None:
            self._bar.n = n
            self._bar.rate = self.rate(now)
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.refresh()
            return
        line = tqdm.format_meter(n, self.total or None, now - self._t0, unit=UNIT,
                                 unit_scale=True, bar_format=PLAIN, postfix=postfix,
                                 initial=self.initial, rate=self.rate(now))
        self.stream.write(line + "\n")
        self.stream.flush()


class ChunkReporter:
    """The ``progress`` callback of one chunk on a Dask worker: tallies the chunk
    (:class:`Tally`) and publishes its cumulative state at most every ``interval``
    seconds (the first call at once) through ``publish(msg)``, by default the
    worker's ``log_event`` on ``topic``."""

    def __init__(self, topic: str, key: str, max_steps: int,
                 interval: float = PUBLISH_INTERVAL,
                 publish: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if publish is None:
            from distributed import get_worker

            worker = get_worker()

            def publish(msg: dict) -> None:
                worker.log_event(topic, msg)

        self.key = key
        self.tally = Tally(max_steps)
        self.interval = interval
        self.publish = publish
        self.clock = clock
        self._last: float | None = None

    def __call__(self, steps: int, finished: Iterable[str] = (), at: int = 0) -> None:
        self.tally.add(steps, finished, at)
        now = self.clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            t = self.tally
            self.publish({"key": self.key, "n": int(t.n), "running": int(t.running),
                          "counts": {str(s): int(c) for s, c in t.counts.items()}})
