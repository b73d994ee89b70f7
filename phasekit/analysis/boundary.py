"""Critical learning rates by adaptive refinement, over a whole sweep axis at once.

For every *cell* -- one axis point (``docs/phases.md``; a sweep without axes has
one) and one seed -- :func:`find_boundary` locates

* ``c_max``: the largest normalised learning rate ``c = eta * lambda_0`` whose
  run still converges (status ``converged``);
* ``c_trivial``: where a trivial phase exists (a dead network, docs/theory.md
  §1), the smallest ``c`` whose run ends trivial;
* ``c_loss``: the smallest ``c`` at which the training loss rises above its
  initial value within the early window (``sweep.early_window`` steps,
  threshold ``sweep.loss_rise``);
* ``c_sharp``: the smallest ``c`` at which the sharpness ``eta lambda_max(H_t)``
  falls below ``(1 - sharpness_drop)`` times its initial value within the
  early window,

in three stages (``docs/boundary.md``):

1. **grid**: every ``c`` of the config's ``sweep.eta_lambda0`` is run;
2. **bracket**: while no evaluated run of a cell has the property ("did not
   converge", "loss rose", "sharpness fell"), the largest ``c`` is doubled (up
   to ``c_limit``); while every one has it, the smallest is halved (down to
   ``c_floor``);
3. **bisection**: the bracket ``[lo, hi]`` is ``hi`` = the smallest evaluated
   ``c`` with the property and ``lo`` = the largest evaluated ``c < hi``
   without it.  Each round runs the midpoint (or ``points`` evenly spaced
   interior points) and recomputes the bracket, until ``hi - lo <= tol``.
   Then ``c_max = lo`` (a run that converged), ``c_fail = hi``, and
   ``c_loss = hi``, ``c_sharp = hi``, ``c_trivial = hi`` (runs that have the
   property), with ``c_loss_below = lo`` etc.

``c_loss`` and ``c_sharp`` depend on the early window alone, so their trial
runs stop after ``early_window`` steps: they cost a few steps each, whatever
the learning rate.  ``c_max`` and ``c_trivial`` need whole runs.

Divergence is not perfectly monotone in ``c`` near the boundary (the catapult
dynamics are chaotic there): a run above ``c_fail`` may converge again.  By
definition ``c_max`` is the bisection result of the bracket below the *first*
failure, which is what a user who raises the learning rate step by step would
meet; the other onsets follow the same rule.

With ``average = "seeds"`` the brackets belong to axis points instead of cells:
every trial ``c`` is run for every seed of the point, and the properties are those
of the seed-averaged trajectories (:func:`phasekit.analysis.averaged.mean_flags`,
the rules of ``phasekit analyze --average seeds``): "some seed diverged" for
``c_max`` (the largest ``c`` below the first such ``c``), "the mean loss ratio rose"
for ``c_loss`` and "the mean sharpness ratio fell" for ``c_sharp``; no trivial onset.

Every round batches the trial points of all cells: one engine per axis point
(and one for the short early-window runs), one chunk per cell per round, the
points of a chunk advancing together.  Every evaluated whole run is stored in
the usual schema (``docs/schema.md``) on the sorted union of evaluated ``c``
values; a ``c`` evaluated for another cell only stays ``pending``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from phasekit.analysis.averaged import MEAN_FLAGS, SUFFIX, check_average, mean_flags
from phasekit.analysis.phases import EARLY, EARLY_DEFAULTS
from phasekit.config.limits import check_sweep_size
from phasekit.config.registry import PluginManager, get_plugin_manager
from phasekit.config.resolve import ResolvedConfig, resolve_config
from phasekit.engine.chunks import Chunk, ChunkResult
from phasekit.engine.points import PointEngines, describe_point
from phasekit.errors import ConfigError

DEFAULT_TOL = 0.01
DEFAULT_C_LIMIT = 1024.0
DEFAULT_C_FLOOR = 1e-3
DEFAULT_MAX_ROUNDS = 60


def bracket(evaluated: Mapping[float, Any], fails: Callable[[Any], bool]
             ) -> tuple[float | None, float | None]:
    """``(lo, hi)``: ``hi`` the smallest c that fails, ``lo`` the largest c < hi that passes.

    ``None`` for a missing side (nothing fails / nothing passes below hi).
    """
    cs = sorted(evaluated)
    failing = [c for c in cs if fails(evaluated[c])]
    hi = failing[0] if failing else None
    passing = [c for c in cs if not fails(evaluated[c]) and (hi is None or c < hi)]
    lo = passing[-1] if passing else None
    return lo, hi


def not_converged(status: str) -> bool:
    """The ``fails`` of :func:`bracket` for ``c_max``: a run that did not converge."""
    return status != "converged"


def ended_trivial(status: str) -> bool:
    """The ``fails`` of :func:`bracket` for ``c_trivial``: a run that ended trivial."""
    return status == "trivial"


def _true(flag: bool) -> bool:
    return bool(flag)


def _interior(lo: float, hi: float, points: int) -> list[float]:
    return [lo + (hi - lo) * (j + 1) / (points + 1) for j in range(points)]


class _Search:
    """Book-keeping of the evaluated runs of every cell (axis point x seed).

    Cell ``k`` is seed index ``k % len(seeds)`` of axis point ``k // len(seeds)``.
    ``evaluated[k]`` maps c to the status of a whole run.  A *unit* is what a bracket
    belongs to: a cell, or with ``average = "seeds"`` an axis point (all its seeds run
    every trial ``c``), whose ``diverged[p]`` maps c to "some seed diverged".
    ``early[name][u]`` maps c to the early-window flag of ``name`` (``c_loss``,
    ``c_sharp``) of unit ``u``: the run's own, or the seed-averaged trajectory's.
    """

    def __init__(self, seeds: list[int], n_points: int = 1, early: tuple[str, ...] = (),
                 average: str | None = None):
        self.seeds = seeds
        self.n_points = n_points
        self.average = average
        cells = n_points * len(seeds)
        self.units = n_points if average else cells
        self.evaluated: list[dict[float, str]] = [{} for _ in range(cells)]
        self.round_of: list[dict[float, int]] = [{} for _ in range(cells)]
        self.diverged: list[dict[float, bool]] = [{} for _ in range(n_points)]
        self.early: dict[str, list[dict[float, bool]]] = {
            name: [{} for _ in range(self.units)] for name in early}
        self.early_runs = 0
        self.results: list[ChunkResult] = []
        self.unbounded: list[str | None] = [None] * self.units
        self.early_unbounded: dict[str, list[str | None]] = {
            n: [None] * self.units for n in early}

    def per_cell(self, trial: list[list[float]]) -> list[list[float]]:
        """The trial rates of every unit as those of every cell (an averaged unit's for
        each of its seeds)."""
        if self.average is None:
            return trial
        return [trial[k // len(self.seeds)] for k in range(self.n_points * len(self.seeds))]

    def cell(self, point: int, seed_index: int) -> int:
        return point * len(self.seeds) + seed_index

    def add(self, result: ChunkResult, round_: int) -> None:
        k = self.cell(result.chunk.point, result.chunk.seed_index)
        for c, status in zip(result.chunk.c_values, result.status, strict=True):
            self.evaluated[k][float(c)] = str(status)
            self.round_of[k][float(c)] = round_
        self.results.append(result)

    def add_early(self, k: int, cs: list[float], flags: Mapping[str, np.ndarray],
                  runs: int) -> None:
        for name, values in flags.items():
            for c, flag in zip(cs, values, strict=True):
                self.early[name][k][float(c)] = bool(flag)
        self.early_runs += runs

    def pool(self, p: int, cs: list[float], thresholds: Mapping[str, Any]) -> None:
        """``average = "seeds"``: whether some seed of axis point ``p`` diverged at each
        of ``cs``, by :func:`phasekit.analysis.averaged.mean_flags` on their statuses."""
        S = len(self.seeds)
        status = np.array([[self.evaluated[p * S + si][c] for c in cs] for si in range(S)],
                          dtype=str)
        ds = xr.Dataset({"status": (("seed", "eta_lambda0"), status)},
                        coords={"eta_lambda0": np.asarray(cs, dtype=float)})
        flags = mean_flags(ds, thresholds)[MEAN_FLAGS["c_max"]].values
        self.diverged[p].update((float(c), bool(f)) for c, f in zip(cs, flags, strict=True))


def _refine(ev: Mapping[float, Any], fails: Callable[[Any], bool], tol: float, points: int,
            c_limit: float, c_floor: float, what: str) -> tuple[set[float], str | None]:
    """Trial points that narrow the bracket of ``fails`` (stage 2 or 3), and why the
    search cannot go on (``None`` while it can)."""
    lo, hi = bracket(ev, fails)
    if hi is None:                                     # nothing has it yet: go up
        top = max(ev)
        if top * 2 <= c_limit:
            return {top * 2}, None
        return set(), f"no run {what} up to c = {top:g} (c_limit {c_limit:g})"
    if lo is None:                                     # everything has it: go down
        bottom = min(ev)
        if bottom / 2 >= c_floor:
            return {bottom / 2}, None
        return set(), f"every run {what} down to c = {bottom:g} (c_floor {c_floor:g})"
    if hi - lo > tol:
        return set(_interior(lo, hi, points)), None
    return set(), None


def _next_points(search: _Search, cell: int, tol: float, points: int, c_limit: float,
                 c_floor: float) -> list[float]:
    """Whole-run trial points of ``cell`` (a unit) for the next round (empty when done):
    the ``c_max`` bracket, and the trivial onset's where some run ended trivial; with
    ``average = "seeds"`` the bracket of "some seed diverged" alone."""
    if search.average is not None:
        ev = search.diverged[cell]
        if not ev:
            return []
        todo, why = _refine(ev, _true, tol, points, c_limit, c_floor, "diverged")
        if why is not None:
            search.unbounded[cell] = why.replace("every run diverged",
                                                 "some seed diverged at every c")
        return sorted(c for c in todo if c not in ev)
    ev = search.evaluated[cell]
    if not ev:
        return []
    todo, why = _refine(ev, not_converged, tol, points, c_limit, c_floor, "failed to converge")
    if why is not None:
        search.unbounded[cell] = why.replace("no run failed to converge", "every run converged")
    if any(ended_trivial(s) for s in ev.values()):
        tlo, thi = bracket(ev, ended_trivial)
        if tlo is not None and thi - tlo > tol:
            todo.update(_interior(tlo, thi, points))
    return sorted(c for c in todo if c not in ev)


def _next_early(search: _Search, name: str, cell: int, tol: float, points: int,
                c_limit: float, c_floor: float) -> list[float]:
    """Early-window trial points of ``cell`` for ``c_loss`` or ``c_sharp``."""
    ev = search.early[name][cell]
    if not ev:
        return []
    what = {"c_loss": "raised its loss", "c_sharp": "lowered its sharpness"}[name]
    todo, why = _refine(ev, _true, tol, points, c_limit, c_floor, what)
    if why is not None:
        search.early_unbounded[name][cell] = why
    return sorted(c for c in todo if c not in ev)


def _runs_dataset(engine, results: list[ChunkResult]) -> xr.Dataset:
    """The short runs of ``results`` (one chunk per seed, the same rates) as a sweep
    over ``(seed, eta_lambda0, step)``: the loss and sharpness trajectories, their
    values at the stop, ``steps`` and ``status``."""
    run = ("seed", "eta_lambda0")
    names = [name for name in ("loss", "sharpness") if name in results[0].traj]
    data = {name: ((*run, "step"), np.stack([r.traj[name] for r in results]))
            for name in names}
    data |= {f"final_{name}": (run, np.stack([r.final[name] for r in results]))
             for name in names}
    data |= {"steps": (run, np.stack([r.steps for r in results])),
             "status": (run, np.stack([r.status for r in results]))}
    return xr.Dataset(data, coords={"step": engine.schedule, "eta_lambda0": np.asarray(
        results[0].chunk.c_values, dtype=float)})


def _early_flags(engine, result: ChunkResult) -> dict[str, np.ndarray]:
    """The early-window flags of every run of ``result`` (a chunk of short runs), by
    :func:`phasekit.analysis.phases.early_flags` on the chunk's trajectories."""
    from phasekit.analysis.phases import early_flags

    sweep = engine.sweep
    flags = early_flags(_runs_dataset(engine, [result]), sweep["early_window"],
                        sweep["sharpness_drop"], sweep["loss_rise"])
    return {name: flags[flag].values[0] for name, flag in EARLY.items() if flag in flags}


def _add_early(engine, search: _Search, p: int, done: list[tuple[Chunk, ChunkResult]]
               ) -> None:
    """Record the early-window flags of axis point ``p``'s short runs of one round: per
    cell, or with ``average = "seeds"`` those of the seed-averaged trajectories
    (:func:`phasekit.analysis.averaged.mean_flags`; every seed ran the same rates)."""
    S = len(search.seeds)
    if search.average is None:
        for chunk, result in done:
            search.add_early(p * S + chunk.seed_index, chunk.c_values,
                             _early_flags(engine, result), len(chunk.c_values))
        return
    if done:
        thresholds = {k: engine.sweep[k] for k in EARLY_DEFAULTS}
        flags = mean_flags(_runs_dataset(engine, [r for _, r in done]), thresholds)
        cs = done[0][0].c_values
        search.add_early(p, cs, {name: flags[MEAN_FLAGS[name]].values for name in search.early
                                 if MEAN_FLAGS[name] in flags}, len(cs) * len(done))


def find_boundary(raw_config: Mapping[str, Any], manager: PluginManager | None = None,
                  tol: float = DEFAULT_TOL, *, points: int = 1, c_limit: float = DEFAULT_C_LIMIT,
                  c_floor: float = DEFAULT_C_FLOOR, max_rounds: int = DEFAULT_MAX_ROUNDS,
                  early: bool = True, average: str | None = None,
                  log: Callable[[str], None] | None = None) -> xr.Dataset:
    """Locate ``c_max``, ``c_trivial`` and (with ``early``) ``c_loss`` and ``c_sharp``
    for every axis point and seed; return every evaluated whole run.

    ``average="seeds"``: instead, per axis point, ``c_max``, ``c_loss`` and
    ``c_sharp`` of the seed-averaged trajectories (the rules of
    :mod:`phasekit.analysis.averaged`), every seed running every trial rate; stored
    as ``<name>_mean_traj`` over ``(*axes)``.

    ``raw_config`` is a config mapping as for ``phasekit run`` (see
    :func:`phasekit.api.build_config`); its ``sweep.eta_lambda0`` is the initial
    grid, and its axis points and seeds are searched together.  ``points``
    interior points per bracket and round (1 = bisection).  ``log`` receives one
    line per round.

    The dataset has the usual schema (``status`` ``pending`` where a cell did not
    evaluate a ``c`` another did) plus, over ``(*axes, seed)``, ``c_max``,
    ``c_fail``, ``fail_status``, ``c_trivial``, ``c_loss``, ``c_loss_below``,
    ``c_sharp``, ``c_sharp_below`` and ``boundary_unbounded``, and
    ``boundary_round(*axes, seed, eta_lambda0)``; see ``docs/boundary.md``.
    """
    from phasekit.io.netcdf import build_dataset

    check_search(tol, points, c_floor, c_limit)
    check_average(average)
    manager = manager or get_plugin_manager()
    config, _ = resolve_config(raw_config, manager)
    sweep = config.sweep
    check_sweep_size(sweep, config.axis_shape if config.axes else (),      # a round's grid
                     len(set(sweep["eta_lambda0"])) + points, "rates (the grid and --points)")
    engines = PointEngines(config, None, manager, keep_prepared=None)   # every round, every seed
    # The early-window runs: early_window steps, never stopped by convergence, and only
    # the core trajectories (loss and sharpness are what the flags read).
    short = PointEngines(dataclasses.replace(config, sweep={
        **sweep, "max_steps": sweep["early_window"], "tol": 0.0, "observables": []}),
        None, manager)
    seeds = list(sweep["seeds"])
    n_points = len(engines)
    names = tuple(EARLY) if early else ()
    search = _Search(seeds, n_points, names, average)
    started = time.perf_counter()

    grid = sorted(set(sweep["eta_lambda0"]))
    trial = [list(grid) for _ in range(search.units)]
    early_trial = {name: [list(grid) for _ in range(search.units)] for name in names}
    round_ = 0
    while any(trial) or any(any(t) for t in early_trial.values()):
        if round_ >= max_rounds:
            raise ConfigError(f"boundary search did not reach tol = {tol:g} within "
                              f"{max_rounds} rounds; raise the tolerance or max_rounds")
        cells = search.per_cell(trial), {n: search.per_cell(t) for n, t in early_trial.items()}
        for p in range(n_points):
            _run_round(engines, short, search, p, round_, *cells)
        if log is not None:
            log(_round_line(search, engines, round_, *cells, time.perf_counter() - started))
        round_ += 1
        trial = [_next_points(search, k, tol, points, c_limit, c_floor)
                 for k in range(search.units)]
        early_trial = {n: [_next_early(search, n, k, tol, points, c_limit, c_floor)
                           for k in range(search.units)] for n in names}

    return _assemble(config, manager, search, tol=tol, points=points, rounds=round_,
                     build_dataset=build_dataset)


def check_search(tol, points, c_floor, c_limit) -> None:
    """The search's own options (the config is checked by ``resolve_config``)."""
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise ConfigError(f"--tol must be a positive number, got {tol!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ConfigError(f"points must be a positive integer, got {points!r}")
    if not 0 < c_floor < c_limit:
        raise ConfigError(f"need 0 < c_floor < c_limit, got {c_floor!r}, {c_limit!r}")


def _run_round(engines: PointEngines, short: PointEngines, search: _Search, p: int,
               round_: int, trial, early_trial) -> None:
    """Train axis point ``p``'s trial rates of one round: every seed's together, in
    batches of several seeds where the model stacks them (the numbers agree with any
    other batching within phasekit.engine.batched's bound), whole runs
    on ``engines`` and early-window runs on ``short``.  ``c_index`` is provisional; it
    is remapped onto the union grid when the dataset is assembled."""
    seeds, S = search.seeds, len(search.seeds)
    whole, early_runs = [], []
    for si in range(S):
        cs = trial[p * S + si]
        if cs:
            whole.append(Chunk(si, seeds[si], list(range(len(cs))), cs, p))
        wanted = sorted(set().union(*(t[p * S + si] for t in early_trial.values())))
        if wanted:
            early_runs.append(Chunk(si, seeds[si], list(range(len(wanted))), wanted, p))
    size = engines.seeds_per_batch(p)
    for k in range(0, len(whole), size):
        batch = whole[k:k + size]
        for result in engines[p].run_batch(batch, prepared=engines.prepared_batch(batch)):
            search.add(result, round_)
    done = []
    for k in range(0, len(early_runs), size):
        batch = early_runs[k:k + size]
        done += zip(batch, short[p].run_batch(batch, prepared=engines.prepared_batch(batch)),
                    strict=True)
    _add_early(short[p], search, p, done)
    if search.average is not None and trial[p * S]:
        search.pool(p, trial[p * S], {k: engines.config.sweep[k] for k in EARLY_DEFAULTS})


def _round_line(search: _Search, engines: PointEngines, round_: int, trial, early_trial,
                elapsed: float) -> str:
    n = sum(len(cs) for cs in trial)
    m = sum(len(cs) for t in early_trial.values() for cs in t)
    averaged = search.average is not None
    parts = []
    for k, ev in enumerate(search.diverged if averaged else search.evaluated):
        p, si = (k, None) if averaged else divmod(k, len(search.seeds))
        lo, hi = bracket(ev, _true if averaged else not_converged)
        where = describe_point(engines.points[p])
        label = "seed-averaged" if averaged else f"seed {search.seeds[si]}"
        parts.append(f"{where + ', ' if where else ''}{label}: "
                     f"[{'-' if lo is None else f'{lo:.4g}'}, "
                     f"{'-' if hi is None else f'{hi:.4g}'}]")
    what = "points" if averaged else "cells"
    shown = "; ".join(parts[:4]) + (f"; ... ({len(parts)} {what})" if len(parts) > 4 else "")
    early = f" + {m} early-window run(s)" if m else ""
    return f"round {round_}: {n} run(s){early} ({elapsed:.1f} s)  c_max {shown}"


def _assemble(config: ResolvedConfig, manager: PluginManager, search: _Search, *, tol: float,
              points: int, rounds: int, build_dataset) -> xr.Dataset:
    """Every evaluated run on the union of the evaluated rates, with the onsets per cell
    (``(*axes, seed)``) and the rounds that evaluated each run."""
    grid = sorted({c for ev in search.evaluated for c in ev})
    pos = {c: i for i, c in enumerate(grid)}
    final = dataclasses.replace(config, sweep={**config.sweep, "eta_lambda0": grid})
    results = []
    for res in search.results:
        ch = res.chunk
        idx = [pos[float(c)] for c in ch.c_values]
        results.append(dataclasses.replace(
            res, chunk=Chunk(ch.seed_index, ch.seed, idx, list(ch.c_values), ch.point)))
    ds = build_dataset(PointEngines(final, None, manager), results)

    shape = (*config.axis_shape, len(search.seeds))
    dims = (*config.axis_dims, "seed")
    round_of = np.full((len(search.evaluated), len(pos)), -1, dtype=np.int64)
    for k, evaluated_in in enumerate(search.round_of):
        for c, r in evaluated_in.items():
            round_of[k, pos[c]] = r
    if search.average is None:
        values = _onsets(search)
        for name, attrs in _onset_attrs(config, tol, search.early).items():
            ds[name] = (dims, values[name].reshape(shape), attrs)
    else:
        for name, (value, attrs) in _mean_onsets(search, config, tol).items():
            ds[name] = (config.axis_dims, value.reshape(config.axis_shape), attrs)
    ds["boundary_round"] = ((*dims, "eta_lambda0"), round_of.reshape(shape + (len(grid),)), {
        "long_name": "refinement round in which the run was evaluated (0 = initial grid, "
                     "-1 = not evaluated for this seed)"})
    ds.attrs.update({
        "boundary_tol": tol, "boundary_points": points, "boundary_rounds": rounds,
        "boundary_early_runs": search.early_runs,
        "boundary_average": search.average or "none",
        "boundary_method": "initial grid (config sweep.eta_lambda0), bracket by doubling/"
                           "halving, bisection of [largest c without the property below the "
                           "first c with it, that c]; early-window onsets from runs of "
                           "early_window steps; docs/boundary.md",
    })
    return ds


def _onsets(search: _Search) -> dict[str, np.ndarray]:
    """Per cell: the onsets and bracket ends (``c_max``, ``c_fail``, ``fail_status``,
    ``c_trivial``, the early ones) and ``boundary_unbounded``."""
    cells = len(search.evaluated)
    names = ["c_max", "c_fail", "c_trivial"]
    names += [n for e in search.early for n in (e, f"{e}_below")]
    values = {name: np.full(cells, np.nan) for name in names}
    fail_status = np.full(cells, "none", dtype=object)
    for k, ev in enumerate(search.evaluated):
        lo, hi = bracket(ev, not_converged)
        if lo is not None and hi is not None:
            values["c_max"][k], values["c_fail"][k] = lo, hi
            fail_status[k] = ev[hi]
        elif hi is None and ev:
            values["c_max"][k] = max(ev)     # never failed: a lower limit, flagged below
        if any(ended_trivial(s) for s in ev.values()):
            values["c_trivial"][k] = bracket(ev, ended_trivial)[1]
        for name, per_cell in search.early.items():
            lo, hi = bracket(per_cell[k], _true)
            if hi is not None:
                values[name][k] = hi
            if lo is not None and hi is not None:
                values[f"{name}_below"][k] = lo
    values["fail_status"] = fail_status.astype(str)
    values["boundary_unbounded"] = _unbounded(search)
    return values


def _unbounded(search: _Search) -> np.ndarray:
    """Per unit (cell, or axis point of a seed-averaged search): why an onset could not
    be bracketed, empty where every one was."""
    unbounded = []
    for k in range(search.units):
        why = [search.unbounded[k] or ""] + [
            f"{name}: {w[k]}" for name, w in search.early_unbounded.items() if w[k]]
        unbounded.append("; ".join(w for w in why if w))
    return np.array(unbounded, dtype=object).astype(str)


def _mean_onsets(search: _Search, config: ResolvedConfig, tol: float
                 ) -> dict[str, tuple[np.ndarray, dict]]:
    """``average = "seeds"``: per axis point, ``c_max``, ``c_fail`` and the early
    onsets with their lower ends, of the seed-averaged trajectories, stored as
    ``<name>_mean_traj`` (as ``phasekit analyze --average seeds`` names them), and
    ``boundary_unbounded``."""
    common = {"units": "1", "average": "seeds", "documentation": "docs/boundary.md"}
    th = {k: config.sweep[k] for k in EARLY_DEFAULTS}
    out = {}
    for name, units, above in [("c_max", search.diverged, "c_fail")] + [
            (name, search.early[name], name) for name in search.early]:
        lo, hi = np.full(search.units, np.nan), np.full(search.units, np.nan)
        for u, ev in enumerate(units):
            b = bracket(ev, _true)
            hi[u] = np.nan if b[1] is None else b[1]
            lo[u] = np.nan if b[0] is None or b[1] is None else b[0]
        flag = MEAN_FLAGS[name]
        text = (f"bisection to tol = {tol:g} of the seed-averaged flag '{flag}' "
                "(phasekit.analysis.averaged.mean_flags; docs/phases.md, 'Seed-averaged "
                "critical rates'), every seed run at every trial c")
        below = name if name == "c_max" else f"{name}_below"
        out[f"{below}{SUFFIX}"] = (lo, {"long_name": f"lower end of the {name} bracket of the "
                                        "seed-averaged trajectories", "definition": text,
                                        **common, **th})
        out[f"{above}{SUFFIX}"] = (hi, {"long_name": f"upper end of the {name} bracket of the "
                                        "seed-averaged trajectories (the smallest evaluated "
                                        f"c with '{flag}')", **common})
    out["boundary_unbounded"] = (_unbounded(search), {
        "long_name": "why the search could not bracket an onset of the seed-averaged "
                     "trajectories at this axis point (empty if it did)"})
    return out


def _onset_attrs(config: ResolvedConfig, tol: float, early: Mapping) -> dict[str, dict]:
    """The attributes of every per-cell variable of :func:`_onsets`, in storage order."""
    window, rise, drop = (config.sweep[k] for k in ("early_window", "loss_rise",
                                                     "sharpness_drop"))
    fail_flags = ["diverged", "trivial", "max_steps", "none"]
    out = {
        "c_max": {
            "long_name": "largest c that converged, below the first c that did not",
            "definition": "bisection of the bracket [largest converged c below c_fail, "
                          f"c_fail] until its width <= tol = {tol:g}; c_max is its lower end "
                          "(a run that converged); a lower limit only where "
                          "'boundary_unbounded' says so",
            "units": "1", "documentation": "docs/boundary.md"},
        "c_fail": {"long_name": "smallest evaluated c whose run did not converge (upper end "
                                "of the c_max bracket)", "units": "1"},
        "fail_status": {
            "long_name": "status of the run at c_fail (diverged, trivial or max_steps; none "
                         "if no run failed)", "flag_values": fail_flags,
            "flag_meanings": " ".join(fail_flags)},
        "c_trivial": {
            "long_name": "onset of the trivial phase: smallest evaluated c whose run ended "
                         "trivial",
            "definition": "bisection of [largest non-trivial c below the first trivial c, "
                          f"first trivial c] to tol = {tol:g}; NaN where no evaluated run "
                          "ended trivial",
            "units": "1"},
    }
    early_defs = {
        "c_loss": ("smallest c at which the training loss rises above its initial value in "
                   "early training",
                   f"L_t > (1 + {rise:g}) L_0 at some step 1 <= t <= {window}, or divergence "
                   f"within it; bisection to tol = {tol:g} of runs stopped after {window} steps; "
                   "c_loss is the upper end of the bracket (a run whose loss rose)"),
        "c_sharp": ("smallest c at which the sharpness eta lambda_max(H_t) decreases in early "
                    "training",
                    f"eta lambda_max(H_t) < (1 - {drop:g}) eta lambda_max(H_0) at some step "
                    f"1 <= t <= {window}; bisection to tol = {tol:g} of runs stopped after "
                    f"{window} steps; c_sharp is the upper end of the bracket"),
    }
    for name in early:
        long_name, definition = early_defs[name]
        out[name] = {"long_name": long_name, "definition": definition, "units": "1",
                     "documentation": "docs/phases.md"}
        out[f"{name}_below"] = {
            "long_name": f"largest evaluated c below {name} without the property (lower end "
                         f"of its bracket)", "units": "1"}
    out["boundary_unbounded"] = {
        "long_name": "why the search could not bracket an onset for this cell (empty if it "
                     "did)"}
    return out


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
