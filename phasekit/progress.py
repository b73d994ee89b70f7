"""A dependency-free progress bar for sweeps (written to stderr)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts finished grid points and run-steps per second.

    The engine calls :meth:`advance(active, finished)` once per step with the
    number of runs that made a step and the number that just stopped.
    """

    def __init__(self, stream=None, min_interval: float = 0.2, width: int = 28):
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self.width = width
        self.total = 0
        self.done = 0
        self.run_steps = 0
        self._t0 = self._last = 0.0

    def start(self, total_points: int) -> None:
        self.total = total_points
        self.done = 0
        self.run_steps = 0
        self._t0 = self._last = time.perf_counter()
        self._draw(force=True)

    def advance(self, active: int, finished: int) -> None:
        self.run_steps += active
        self.done += finished
        self._draw(force=finished > 0 and self.done == self.total)

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        rate = self.run_steps / max(now - self._t0, 1e-9)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} grid points  "
                          f"{rate:,.0f} run-steps/s  {now - self._t0:6.1f}s")
        self.stream.flush()

    def finish(self) -> None:
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()
