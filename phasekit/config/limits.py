"""Sizes refused before any allocation: the memory limit, and the closed-form size of a
sweep's trajectories.

A sweep's trajectories are (axis points x seeds x learning rates x recorded steps x
recorded values) float64 numbers.  Every factor is known from the config's
parameters alone: the axis lengths, ``sweep.seeds``, ``sweep.eta_lambda0`` and the
record schedule's count (:func:`record_points`: ``record_dense`` steps, then
``record_per_decade`` log-spaced steps per decade up to ``max_steps``), so
:func:`check_trajectories` refuses a sweep above :func:`memory_limit` from their
product, before a point is resolved, a schedule built or a model made.  The same
check runs again once the models are built (each observable's recorded values
known, :func:`phasekit.runner.execute.check_dataset_size`), and a boundary search
sizes its first refinement round the same way.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from phasekit.errors import ConfigError, fmt_bytes

#: Environment variable overriding :func:`memory_limit` (GiB).
MEMORY_LIMIT_ENV = "PHASEKIT_MEMORY_LIMIT_GIB"


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or the cgroup limit
    where that is lower (a container); ``None`` where unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            sizes.append(int(text))
    sizes = [s for s in sizes if s > 0]
    return min(sizes) if sizes else None


def memory_limit() -> float:
    """The most bytes phasekit builds or loads as one dataset: half of
    :func:`machine_memory` (``$PHASEKIT_MEMORY_LIMIT_GIB`` GiB where set)."""
    text = os.environ.get(MEMORY_LIMIT_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"{MEMORY_LIMIT_ENV} must be a positive number of GiB, got "
                              f"{text!r}")
        return value * 2 ** 30
    total = machine_memory()
    return total / 2 if total else float("inf")


def describe_memory_limit() -> str:
    """:func:`memory_limit` in words, saying where it comes from."""
    if os.environ.get(MEMORY_LIMIT_ENV):
        return f"{fmt_bytes(memory_limit())}, set by {MEMORY_LIMIT_ENV}"
    total = fmt_bytes(machine_memory() or 0)
    return (f"{fmt_bytes(memory_limit())}, half of this machine's {total}; "
            f"{MEMORY_LIMIT_ENV} sets another limit")


def record_points(max_steps: int, dense: int, per_decade: int) -> tuple[int, int, int]:
    """``(dense_steps, start, num)`` of the record schedule
    (:func:`phasekit.engine.engine.record_schedule`): every step below ``dense_steps``,
    then ``num`` log-spaced steps from ``start`` to ``max_steps`` (``num = 0``: none)."""
    dense_steps = min(dense, max_steps + 1)
    if per_decade <= 0 or max_steps < dense:
        return dense_steps, 0, 0
    start = max(dense, 1)
    return dense_steps, start, max(2, math.ceil(per_decade * math.log10(max(max_steps, 2)
                                                                         / start)) + 1)


def recorded_steps_bound(sweep) -> int:
    """At most how many steps a trajectory records (closed form: log-spaced steps that
    round to the same integer count once in the schedule, here each)."""
    dense_steps, _, num = record_points(sweep["max_steps"], sweep["record_dense"],
                                        sweep["record_per_decade"])
    return min(sweep["max_steps"] + 1, dense_steps + num + 1)


def check_trajectories(points: int, seeds: int, rates: int, recorded: int, values: int = 3,
                       *, exact: bool = True, rates_what: str = "learning rate(s)") -> int:
    """Bytes of ``points x seeds x rates x recorded x values`` float64 numbers; refuses
    (:class:`ConfigError`) more than :func:`memory_limit`.  ``exact=False``: ``recorded``
    is :func:`recorded_steps_bound`, said as "up to"."""
    size = points * seeds * rates * recorded * values * 8
    if size > memory_limit():
        steps = f"{recorded} recorded steps" if exact else f"up to {recorded} recorded steps"
        raise ConfigError(
            f"this sweep's trajectories would take {fmt_bytes(size)} in memory ({points} "
            f"axis point(s) x {seeds} seed(s) x {rates} {rates_what} x {steps} x {values} "
            f"recorded values x 8 bytes), more than phasekit builds at once "
            f"({describe_memory_limit()}); use fewer seeds or learning rates, record fewer "
            f"steps (smaller sweep.record_per_decade, sweep.record_dense or "
            f"sweep.max_steps), or split the sweep over several runs")
    return size


def check_sweep_size(sweep, axis_lengths=(), rates: int | None = None,
                     rates_what: str = "learning rate(s)") -> int:
    """:func:`check_trajectories` of a resolved ``[sweep]`` table from its parameters
    alone (three recorded values: loss, weight norm, sharpness); ``rates`` replaces
    the number of ``sweep.eta_lambda0`` values (a boundary search's round)."""
    return check_trajectories(math.prod(axis_lengths), len(sweep["seeds"]),
                              len(sweep["eta_lambda0"]) if rates is None else rates,
                              recorded_steps_bound(sweep), exact=False,
                              rates_what=rates_what)
