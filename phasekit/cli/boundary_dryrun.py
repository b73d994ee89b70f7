"""``phasekit boundary --dry-run``: the rounds, runs and time of a boundary search
(:func:`phasekit.analysis.boundary.find_boundary`), estimated as ``phasekit run
--dry-run`` estimates a sweep (:mod:`phasekit.cli.dryrun`), with nothing written.

Per axis point, the dry run prepares the first seed, calibrates the step costs of
a full batch and runs the pilot over the initial grid, exactly as ``run --dry-run``
does; the short runs of the early window get their own calibration (no
observables, every step recorded).  Then, per cell (axis point x seed; a seed
beyond the piloted ones counts as the piloted seed it shares a batch position
with):

* **grid** (round 0): every rate of the grid as a whole run (the pilot's steps)
  and, for ``c_loss``/``c_sharp``, as a run of ``early_window`` steps;
* **c_max**: the bracket ``[lo, hi]`` the pilot's statuses give (the largest
  converged rate below the first that did not converge, as the search brackets
  it); when no rate fails, one doubling round first and a bracket as wide as the
  top rate (when every rate fails, one halving round); then the rounds that narrow
  it to ``tol`` with ``points`` interior points each, every trial taking the mean
  of the steps of the runs at ``lo`` and ``hi`` (a trial lands on either side about
  as often);
* **c_trivial**: the same, where a piloted run ended trivial;
* **c_loss**, **c_sharp**: the early windows are not piloted, so the bracket is
  taken as the widest gap of the grid (an upper bound while the onset lies inside
  the grid; each doubling or halving beyond it adds a round).

The search stops when every bracket is narrower than ``tol``: its rounds are the
most any quantity needs.  Assembling the dataset is timed as for ``run --dry-run``
on stand-ins of the initial grid; writing it is not modelled.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from phasekit.analysis.boundary import bracket, ended_trivial, not_converged
from phasekit.cli.dryrun import (
    PILOT_BUDGET,
    PointPlan,
    axes_text,
    calibrate,
    chunk_seconds,
    engine_variant,
    finishing_seconds,
    fmt_time,
    plan_points,
    startup_seconds,
)
from phasekit.config.registry import PluginManager
from phasekit.config.resolve import ResolvedConfig
from phasekit.engine.chunks import Chunk
from phasekit.engine.points import PointEngines, describe_point


def rounds_to(width: float, tol: float, points: int) -> int:
    """Rounds of ``points`` evenly spaced interior points (bisection: 1) that narrow a
    bracket of ``width`` to ``tol`` or less: each divides it by ``points + 1``."""
    rounds = 0
    while width > tol:
        width /= points + 1
        rounds += 1
    return rounds


@dataclasses.dataclass
class Quantity:
    """One onset's share of the search, summed over the cells."""

    rounds: int = 0           # the most any cell needs after the grid
    runs: int = 0
    seconds: float = 0.0
    why: str = ""             # where its bracket comes from

    def add(self, rounds: int, runs: int, seconds: float) -> None:
        self.rounds = max(self.rounds, rounds)
        self.runs += runs
        self.seconds += seconds


def _bracket_rounds(ev: dict[float, str], fails, tol: float, points: int
                    ) -> tuple[int, tuple[float, float] | None, str]:
    """Rounds after the grid for the pilot's statuses ``ev``, the bracket whose ends'
    steps a trial takes on average (``None``: none; the slowest run then) and the
    bracket in words."""
    lo, hi = bracket(ev, fails)
    if hi is None:
        top = max(ev)
        return 1 + rounds_to(top, tol, points), None, f"none in the grid: doubling from {top:g}"
    if lo is None:
        bottom = min(ev)
        return (1 + rounds_to(bottom / 2, tol, points), None,
                f"all in the grid: halving from {bottom:g}")
    return rounds_to(hi - lo, tol, points), (lo, hi), f"[{lo:g}, {hi:g}]"


def _cell_batches(per_cell: list, seeds: int, together: int) -> list[list]:
    """``per_cell`` (one entry per seed) cut into the batches of the search, blocks of
    ``together`` seeds."""
    return [per_cell[k:k + together] for k in range(0, seeds, together)]


@dataclasses.dataclass
class SearchOptions:
    tol: float
    points: int
    early: bool
    average: str | None = None


def _averaged_c_max(status: np.ndarray, whole: list[np.ndarray], rates: list[float],
                    opts: SearchOptions, together: int) -> tuple[int, list[list[int]], str]:
    """``average = "seeds"``: one bracket per axis point, on "some piloted seed
    diverged" (:data:`phasekit.analysis.averaged.MEAN_FLAGS`), whose every trial runs
    every seed: its rounds, the stops of a round's runs per batch of seeds, and the
    bracket in words."""
    ev = dict(zip(rates, (status == "diverged").any(axis=0), strict=True))
    rounds, at, why = _bracket_rounds(ev, bool, opts.tol, opts.points)
    steps = [int(w.max() if at is None else np.mean([w[rates.index(c)] for c in at]))
             for w in whole]
    return rounds, _cell_batches([[st] * opts.points for st in steps], len(whole),
                                 together), why


def _point_search(engines: PointEngines, i: int, plan: PointPlan, opts: SearchOptions,
                  out: dict[str, Quantity]) -> None:
    """Add axis point ``i``'s rounds, runs and seconds to ``out`` (module docstring)."""
    sweep = engines.config.sweep
    seeds, together = len(sweep["seeds"]), engines.seeds_per_batch(i)
    rates = sorted(set(sweep["eta_lambda0"]))
    first = [sweep["eta_lambda0"].index(c) for c in rates]
    by_seed = plan.pilot.by_seed[:, first]
    status = plan.pilot.status[:, first]
    cost = plan.costs
    whole = [by_seed[s % len(by_seed)] for s in range(seeds)]
    out["grid"].add(0, seeds * len(rates), sum(
        chunk_seconds(np.concatenate(block), plan.schedule, cost)
        for block in _cell_batches(whole, seeds, together)))
    if opts.average is not None:
        rounds, blocks, why = _averaged_c_max(status, whole, rates, opts, together)
        out["c_max"].why = out["c_max"].why or f"{why} for the first point"
        if rounds:
            out["c_max"].add(rounds, rounds * opts.points * seeds, rounds * sum(
                chunk_seconds(np.concatenate(b), plan.schedule, cost) for b in blocks))
    for name, fails in () if opts.average else (("c_max", not_converged),
                                                ("c_trivial", ended_trivial)):
        cells = []
        for s in range(seeds):
            ev = dict(zip(rates, status[s % len(status)], strict=True))
            if name == "c_trivial" and not any(ended_trivial(v) for v in ev.values()):
                cells.append((0, 0))
                continue
            rounds, at, why = _bracket_rounds(ev, fails, opts.tol, opts.points)
            # A trial lands on either side of the onset about as often: the mean of
            # the bracket's ends (a run converging slowly near c_max, one failing).
            steps = (whole[s].max() if at is None else
                     np.mean([whole[s][rates.index(c)] for c in at]))
            cells.append((rounds, int(steps)))
            out[name].why = out[name].why or f"{why} for the first cell"
        for block in _cell_batches(cells, seeds, together):
            rounds = max(r for r, _ in block)
            if rounds:
                stops = np.concatenate([np.full(opts.points, st) for r, st in block if r])
                out[name].add(rounds, opts.points * sum(r for r, _ in block),
                              rounds * chunk_seconds(stops, plan.schedule, cost))
    if opts.early:
        _early_search(engines, i, plan, opts, rates, out)


def _early_search(engines: PointEngines, i: int, plan: PointPlan, opts: SearchOptions,
                  rates: list[float], out: dict[str, Quantity]) -> None:
    """The early-window runs of axis point ``i``: the grid's, then ``c_loss``'s and
    ``c_sharp``'s rounds over the widest gap of the grid, as runs of ``early_window``
    steps without observables (calibrated on their own)."""
    sweep = engines.config.sweep
    window = sweep["early_window"]
    seeds, together = len(sweep["seeds"]), engines.seeds_per_batch(i)
    short = engine_variant(engines[i], max_steps=window, tol=0.0)
    short.observables = []
    chunk = Chunk(0, sweep["seeds"][0], list(range(len(rates))), rates, i)
    costs = calibrate(short, chunk, engines.prepared(i, sweep["seeds"][0]), together)
    blocks = [min(together, seeds - k) for k in range(0, seeds, together)]

    def seconds(per_cell: int) -> float:
        return sum(chunk_seconds(np.full(k * per_cell, window), short.schedule, costs)
                   for k in blocks)

    out["grid"].add(0, 0, seconds(len(rates)))
    out["grid early"].add(0, seeds * len(rates), 0.0)
    gap = float(np.diff(rates).max()) if len(rates) > 1 else rates[0]
    rounds = rounds_to(gap, opts.tol, opts.points)
    for name in ("c_loss", "c_sharp"):      # each round batches both: half the time each
        out[name].why = f"the widest grid gap, {gap:g}"
        out[name].add(rounds, rounds * seeds * opts.points,
                      rounds * seconds(2 * opts.points) / 2)


def boundary_dry_run(config: ResolvedConfig, manager: PluginManager, *, tol: float,
                     points: int, early: bool, average: str | None = None,
                     budget: float = PILOT_BUDGET) -> str:
    """What ``phasekit boundary --dry-run`` prints (module docstring)."""
    sweep = config.sweep
    engines = PointEngines(config, None, manager, keep_prepared=None)
    opts = SearchOptions(tol, points, early, average)
    names = ["grid", "grid early", "c_max", "c_trivial"] + (["c_loss", "c_sharp"] if early
                                                              else [])
    out = {name: Quantity() for name in names}
    n_seeds, rates = len(sweep["seeds"]), sorted(set(sweep["eta_lambda0"]))
    axes = axes_text(config)
    lines = [f"boundary search of model {config.model['name']} on dataset "
             f"{config.dataset['name']}: {axes + ' x ' if axes else ''}{n_seeds} seed(s) = "
             f"{len(engines) * n_seeds} cell(s), initial grid of {len(rates)} rates; tol "
             f"{tol:g}, {points} point(s) per bracket and round"
             + (", seed-averaged trajectories (every seed runs every trial rate)"
                if average else "")]
    startup = startup_seconds()
    preparing, stand_ins = 0.0, []
    for i, plan in enumerate(plan_points(engines, budget)):
        stand_ins += plan.stand_ins
        if config.axes:
            lines.append(f"axis point {describe_point(engines.points[i])}:")
        lines += plan.lines[2:4]                  # calibration and pilot
        preparing += plan.preparing(n_seeds)
        _point_search(engines, i, plan, opts, out)
    finishing = finishing_seconds(engines, stand_ins)
    return "\n".join(lines + _quantity_lines(out, sweep["early_window"], early, average)
                     + _total_lines(
        out, startup, preparing, finishing))


def _quantity_lines(out: dict[str, Quantity], window: int, early: bool,
                    average: str | None = None) -> list[str]:
    grid, grid_early = out["grid"], out["grid early"]
    lines = [f"grid (round 0): {grid.runs} whole run(s) (c_max, c_trivial)"
             + (f" and {grid_early.runs} early-window run(s) of {window} steps (c_loss, "
                f"c_sharp)" if early else "") + f": {fmt_time(grid.seconds)}"]
    for name in ("c_max", "c_trivial", "c_loss", "c_sharp"):
        if name not in out:
            lines.append(f"{name}: not searched (--no-early)")
            continue
        q = out[name]
        kind = "early-window" if name in ("c_loss", "c_sharp") else "whole"
        if name == "c_trivial" and not q.runs:
            lines.append("c_trivial: no piloted run ended trivial: no rounds" if not average
                         else "c_trivial: not searched (--average seeds)")
            continue
        lines.append(f"{name}: up to {q.rounds} round(s) after the grid (bracket: {q.why}): "
                     f"{q.runs} {kind} run(s), {fmt_time(q.seconds)}")
    return lines


def _total_lines(out: dict[str, Quantity], startup: float | None, preparing: float,
                 finishing: float) -> list[str]:
    rounds = 1 + max(q.rounds for q in out.values())
    whole = sum(out[n].runs for n in ("grid", "c_max", "c_trivial"))
    short = sum(out[n].runs for n in ("grid early", "c_loss", "c_sharp") if n in out)
    training = sum(q.seconds for q in out.values())
    total = training + preparing + finishing + (startup or 0.0)
    parts = ([f"{fmt_time(startup)} start-up"] if startup is not None else []) + [
        f"{fmt_time(preparing)} preparing seeds", f"{fmt_time(training)} training",
        f"{fmt_time(finishing)} assembling the dataset"]
    return [f"rounds: up to {rounds} (the grid, then until every bracket is narrower than "
            f"tol)",
            f"runs: {whole} whole" + (f" and {short} early-window run(s)" if "c_loss" in out
                                      else " run(s)"),
            f"estimated time: {fmt_time(total)} in one process ({', '.join(parts)}; "
            f"writing the output not modelled); nothing was written"]
