"""A dependency-free progress bar for sweeps (written to stderr)."""

from __future__ import annotations

import sys
import time
from collections import Counter


class Progress:
    """Counts grid points by status, runs in flight, and run-steps per second.

    The engine calls :meth:`advance(active, finished)` once per step with the
    number of runs that are still training and the statuses of those that just
    stopped.
    """

    def __init__(self, stream=None, min_interval: float | None = None, width: int = 24):
        self.stream = stream if stream is not None else sys.stderr
        # A terminal redraws one line in place; a log gets a line every 10 s.
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if min_interval is None:
            min_interval = 0.2 if self.tty else 10.0
        self.min_interval = min_interval
        self.width = width
        self.total = 0
        self.counts: Counter = Counter()
        self.running = 0
        self.run_steps = 0
        self._t0 = self._last = 0.0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def start(self, total_points: int, already=()) -> None:
        self.total = total_points
        self.counts = Counter(already)
        self.resumed = len(already)
        self.running = 0
        self.run_steps = 0
        self._t0 = self._last = time.perf_counter()
        if self.resumed:
            self.stream.write(f"resuming: {self.resumed} of {total_points} grid points "
                              f"already done\n")
        self._draw(force=True)

    def advance(self, active: int, finished=()) -> None:
        self.run_steps += active
        self.running = active
        self.counts.update(finished)
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        rate = self.run_steps / max(now - self._t0, 1e-9)
        bar = "#" * filled + "-" * (self.width - filled)
        detail = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        start, end = ("\r", "") if self.tty else ("", "\n")
        self.stream.write(f"{start}[{bar}] {self.done}/{self.total} done "
                          f"({detail or 'none yet'}), {self.running} running, "
                          f"{rate:,.0f} run-steps/s, {now - self._t0:.1f}s {end}")
        self.stream.flush()

    def finish(self) -> None:
        self.running = 0
        self._draw(force=True)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
