"""Critical learning rates by adaptive refinement: ``c_max`` and the trivial onset.

For every seed, :func:`find_boundary` locates

* ``c_max``: the largest normalised learning rate ``c = eta * lambda_0`` whose
  run still converges (status ``converged``), and
* ``c_trivial``: where a trivial phase exists (SPEC 1: a dead network), the
  smallest ``c`` whose run ends trivial,

in three stages (``docs/boundary.md``):

1. **grid**: every ``c`` of the config's ``sweep.eta_lambda0`` is run;
2. **bracket**: while every evaluated run of a seed converged, the largest
   ``c`` is doubled (up to ``c_limit``); while none converged, the smallest is
   halved (down to ``c_floor``);
3. **bisection**: the bracket ``[lo, hi]`` is ``hi`` = the smallest evaluated
   ``c`` that did not converge (diverged, trivial or max_steps) and ``lo`` = the
   largest evaluated ``c < hi`` that converged.  Each round runs the midpoint
   (or ``points`` evenly spaced interior points) and recomputes the bracket,
   until ``hi - lo <= tol``.  Then ``c_max = lo`` (a run that converged) and
   ``c_fail = hi``.

Divergence is not perfectly monotone in ``c`` near the boundary (the catapult
dynamics are chaotic there): a run above ``c_fail`` may converge again.  By
definition ``c_max`` is the bisection result of the bracket below the *first*
failure, which is what a user who raises the learning rate step by step would
meet.  ``c_trivial`` is found the same way, with "ended trivial" in place of
"did not converge", for seeds where some evaluated run ended trivial.

Every round batches the trial points of all seeds: one :class:`Engine`, one
chunk per seed per round, the points of a chunk advancing together.  Every
evaluated run is stored in the usual schema (``docs/schema.md``) on the sorted
union of evaluated ``c`` values; a ``(seed, c)`` evaluated for another seed
only stays ``pending``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from .config import ResolvedConfig, resolve_config
from .manager import PluginManager, get_plugin_manager
from .options import ConfigError
from .sweep import Chunk, ChunkResult, Engine

DEFAULT_TOL = 0.01
DEFAULT_C_LIMIT = 1024.0
DEFAULT_C_FLOOR = 1e-3
DEFAULT_MAX_ROUNDS = 60


def _bracket(evaluated: Mapping[float, str], fails: Callable[[str], bool]
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


def _not_converged(status: str) -> bool:
    return status != "converged"


def _trivial(status: str) -> bool:
    return status == "trivial"


def _interior(lo: float, hi: float, points: int) -> list[float]:
    return [lo + (hi - lo) * (j + 1) / (points + 1) for j in range(points)]


class _Search:
    """Book-keeping of the evaluated runs of every seed."""

    def __init__(self, seeds: list[int]):
        self.seeds = seeds
        self.evaluated: list[dict[float, str]] = [{} for _ in seeds]
        self.round_of: list[dict[float, int]] = [{} for _ in seeds]
        self.results: list[ChunkResult] = []
        self.unbounded: list[str | None] = [None] * len(seeds)

    def add(self, result: ChunkResult, round_: int) -> None:
        si = result.chunk.seed_index
        for c, status in zip(result.chunk.c_values, result.status, strict=True):
            self.evaluated[si][float(c)] = str(status)
            self.round_of[si][float(c)] = round_
        self.results.append(result)


def _next_points(search: _Search, si: int, tol: float, points: int, c_limit: float,
                 c_floor: float) -> list[float]:
    """Trial points of seed ``si`` for the next round (empty when done)."""
    ev = search.evaluated[si]
    todo: set[float] = set()
    lo, hi = _bracket(ev, _not_converged)
    if hi is None:                                     # everything converged: go up
        top = max(ev)
        if top * 2 <= c_limit:
            todo.add(top * 2)
        else:
            search.unbounded[si] = f"every run converged up to c = {top:g} (c_limit {c_limit:g})"
    elif lo is None:                                   # nothing converged below hi: go down
        bottom = min(ev)
        if bottom / 2 >= c_floor:
            todo.add(bottom / 2)
        else:
            search.unbounded[si] = f"no run converged down to c = {bottom:g} (c_floor {c_floor:g})"
    elif hi - lo > tol:
        todo.update(_interior(lo, hi, points))
    if any(_trivial(s) for s in ev.values()):
        tlo, thi = _bracket(ev, _trivial)
        if tlo is not None and thi - tlo > tol:
            todo.update(_interior(tlo, thi, points))
    return sorted(c for c in todo if c not in ev)


def find_boundary(raw_config: Mapping[str, Any], manager: PluginManager | None = None,
                  tol: float = DEFAULT_TOL, *, points: int = 1, c_limit: float = DEFAULT_C_LIMIT,
                  c_floor: float = DEFAULT_C_FLOOR, max_rounds: int = DEFAULT_MAX_ROUNDS,
                  log: Callable[[str], None] | None = None) -> xr.Dataset:
    """Locate ``c_max`` (and ``c_trivial``) per seed; return every evaluated run.

    ``raw_config`` is a config mapping as for ``phasekit run`` (see
    :func:`phasekit.api.build_config`); its ``sweep.eta_lambda0`` is the initial
    grid and its seeds are searched together.  ``points`` interior points per
    bracket and round (1 = bisection).  ``log`` receives one line per round.

    The dataset has the usual schema (``status`` ``pending`` where a seed did not
    evaluate a ``c`` another seed did) plus ``c_max(seed)``, ``c_fail(seed)``,
    ``fail_status(seed)``, ``c_trivial(seed)`` and ``boundary_round(seed,
    eta_lambda0)``; see ``docs/boundary.md``.
    """
    from .storage import build_dataset

    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise ConfigError(f"--tol must be a positive number, got {tol!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ConfigError(f"points must be a positive integer, got {points!r}")
    if not 0 < c_floor < c_limit:
        raise ConfigError(f"need 0 < c_floor < c_limit, got {c_floor!r}, {c_limit!r}")
    manager = manager or get_plugin_manager()
    config, data = resolve_config(raw_config, manager)
    engine = Engine(config, data, manager)
    seeds = list(config.sweep["seeds"])
    # Every round reuses a seed's features, initialisation and bounds (Engine.prepare).
    prepared = {}
    search = _Search(seeds)
    started = time.perf_counter()

    trial = [sorted(set(config.sweep["eta_lambda0"])) for _ in seeds]
    round_ = 0
    while any(trial):
        if round_ >= max_rounds:
            raise ConfigError(f"boundary search did not reach tol = {tol:g} within "
                              f"{max_rounds} rounds; raise the tolerance or max_rounds")
        for si, cs in enumerate(trial):
            if cs:
                # c_index is provisional; it is remapped onto the union grid below.
                chunk = Chunk(si, seeds[si], list(range(len(cs))), cs)
                if si not in prepared:
                    prepared[si] = engine.prepare(seeds[si])
                search.add(engine.run_chunk(chunk, prepared=prepared[si]), round_)
        if log is not None:
            log(_round_line(search, round_, trial, time.perf_counter() - started))
        round_ += 1
        trial = [_next_points(search, si, tol, points, c_limit, c_floor)
                 for si in range(len(seeds))]

    return _assemble(engine, config, search, tol=tol, points=points, rounds=round_,
                     build_dataset=build_dataset)


def _round_line(search: _Search, round_: int, trial: list[list[float]], elapsed: float) -> str:
    n = sum(len(cs) for cs in trial)
    parts = []
    for si, seed in enumerate(search.seeds):
        lo, hi = _bracket(search.evaluated[si], _not_converged)
        parts.append(f"seed {seed}: [{'-' if lo is None else f'{lo:.4g}'}, "
                     f"{'-' if hi is None else f'{hi:.4g}'}]")
    shown = "; ".join(parts[:4]) + (f"; ... ({len(parts)} seeds)" if len(parts) > 4 else "")
    return f"round {round_}: {n} run(s) ({elapsed:.1f} s)  {shown}"


def _assemble(engine: Engine, config: ResolvedConfig, search: _Search, *, tol: float,
              points: int, rounds: int, build_dataset) -> xr.Dataset:
    grid = sorted({c for ev in search.evaluated for c in ev})
    pos = {c: i for i, c in enumerate(grid)}
    sweep = copy.deepcopy(config.sweep)
    sweep["eta_lambda0"] = grid
    final = ResolvedConfig(model=config.model, dataset=config.dataset, sweep=sweep)
    engine.config, engine.sweep = final, final.sweep
    results = []
    for res in search.results:
        ch = res.chunk
        idx = [pos[float(c)] for c in ch.c_values]
        results.append(replace(res, chunk=Chunk(ch.seed_index, ch.seed, idx, list(ch.c_values))))
    ds = build_dataset(engine, results)

    S, C = len(search.seeds), len(grid)
    c_max = np.full(S, np.nan)
    c_fail = np.full(S, np.nan)
    fail_status = np.full(S, "none", dtype=object)
    c_trivial = np.full(S, np.nan)
    round_of = np.full((S, C), -1, dtype=np.int64)
    for si, ev in enumerate(search.evaluated):
        lo, hi = _bracket(ev, _not_converged)
        if lo is not None and hi is not None:
            c_max[si], c_fail[si] = lo, hi
            fail_status[si] = ev[hi]
        elif hi is None and ev:
            c_max[si] = max(ev)              # never failed: a lower limit, flagged below
        if any(_trivial(s) for s in ev.values()):
            _, thi = _bracket(ev, _trivial)
            c_trivial[si] = thi
        for c, r in search.round_of[si].items():
            round_of[si, pos[c]] = r
    unbounded = [u or "" for u in search.unbounded]
    units = "eta_lambda0 (eta * lambda0)"
    ds["c_max"] = (("seed",), c_max, {
        "long_name": "largest c that converged, below the first c that did not",
        "definition": "bisection of the bracket [largest converged c below c_fail, c_fail] "
                      f"until its width <= tol = {tol:g}; c_max is its lower end (a run that "
                      "converged); a lower limit only where 'unbounded' says so",
        "units": units, "documentation": "docs/boundary.md"})
    ds["c_fail"] = (("seed",), c_fail, {
        "long_name": "smallest evaluated c whose run did not converge (upper end of the "
                     "c_max bracket)", "units": units})
    ds["fail_status"] = (("seed",), fail_status.astype(str), {
        "long_name": "status of the run at c_fail (diverged, trivial or max_steps; none if "
                     "no run failed)"})
    ds["c_trivial"] = (("seed",), c_trivial, {
        "long_name": "onset of the trivial phase: smallest evaluated c whose run ended trivial",
        "definition": "bisection of [largest non-trivial c below the first trivial c, first "
                      f"trivial c] to tol = {tol:g}; NaN where no evaluated run ended trivial",
        "units": units})
    ds["boundary_round"] = (("seed", "eta_lambda0"), round_of, {
        "long_name": "refinement round in which the run was evaluated (0 = initial grid, "
                     "-1 = not evaluated for this seed)"})
    ds["boundary_unbounded"] = (("seed",), np.array(unbounded, dtype=object).astype(str), {
        "long_name": "why the search could not bracket c_max for this seed (empty if it did)"})
    ds.attrs.update({
        "boundary_tol": tol, "boundary_points": points, "boundary_rounds": rounds,
        "boundary_method": "initial grid (config sweep.eta_lambda0), bracket by doubling/"
                           "halving, bisection of [largest converged c below the first failure, "
                           "first failure]; docs/boundary.md",
    })
    return ds


def boundary_report(ds: xr.Dataset) -> str:
    """Plain-text report of a boundary dataset (c_max per seed, mean and spread, bounds)."""
    from .phases import bound_names, require

    require(ds, "c_max", "c_fail", "fail_status", "c_trivial",
            purpose="the boundary report (run 'phasekit boundary' to make such a file)")
    tol = ds.attrs.get("boundary_tol", float("nan"))
    c_max = ds["c_max"].values.astype(float)
    lines = [f"critical learning rates (eta_lambda0 units), tolerance {tol:g}, "
             f"{ds.attrs.get('boundary_rounds', '?')} round(s), "
             f"{int((ds['status'].values != 'pending').sum())} runs"]
    bnames = bound_names(ds)
    header = ["seed", "c_max", "c_fail", "fails by", "c_trivial"] + [f"bound_{b}" for b in bnames]
    lines.append("  ".join(f"{h:>12}" for h in header))

    def fmt(x: float) -> str:
        return "-" if not np.isfinite(x) else f"{x:.4f}"

    for s, seed in enumerate(ds["seed"].values):
        row = [str(int(seed)), fmt(c_max[s]), fmt(float(ds["c_fail"].values[s])),
               str(ds["fail_status"].values[s]), fmt(float(ds["c_trivial"].values[s]))]
        row += [fmt(float(ds[f"bound_{b}"].values[s])) for b in bnames]
        lines.append("  ".join(f"{x:>12}" for x in row))
    finite = c_max[np.isfinite(c_max)]
    if finite.size:
        spread = (f" +/- {finite.std(ddof=1):.4f} (std over {finite.size} seeds; range "
                  f"{finite.min():.4f} - {finite.max():.4f})" if finite.size > 1 else "")
        lines.append(f"c_max = {finite.mean():.4f}{spread}")
        lines.append(f"catapult window: (2, {finite.mean():.4f})")
    triv = ds["c_trivial"].values.astype(float)
    if np.isfinite(triv).any():
        lines.append(f"trivial phase from c = {np.nanmean(triv):.4f} (mean over seeds with one)")
    for b in bnames:
        gap = c_max - ds[f"bound_{b}"].values
        eq = ds[f"bound_{b}"].attrs.get("equation", b)
        kind = ds[f"bound_{b}"].attrs.get("kind", "")
        word = "below" if np.nanmean(gap) >= 0 else "above"
        lines.append(f"bound_{b} ({eq}, {kind}): mean {np.nanmean(ds[f'bound_{b}'].values):.4f},"
                     f" {abs(np.nanmean(gap)):.4f} {word} c_max (c_max - bound per seed: "
                     + ", ".join(fmt(g) for g in gap) + ")")
    for s, why in enumerate(ds["boundary_unbounded"].values):
        if str(why):
            lines.append(f"warning: seed {int(ds['seed'].values[s])}: {why}")
    return "\n".join(lines)


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
