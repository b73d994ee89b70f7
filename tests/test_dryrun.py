"""The dry run's time model, ingredient by ingredient (never a wall-clock assertion:
the estimate against the real run is `phasekit bench --workloads DRY`), the preset
descriptions, and `phasekit boundary --dry-run`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from phasekit.analysis.boundary import find_boundary
from phasekit.cli.boundary_dryrun import boundary_dry_run, rounds_to
from phasekit.cli.dryrun import (
    Linear,
    PilotClock,
    StepCosts,
    batch_stops,
    calibrate,
    chunk_seconds,
    estimate_run,
    fit_curve,
    step_counts,
)
from phasekit.cli.main import main
from phasekit.config.resolve import merge, resolve_config
from phasekit.engine.engine import Engine
from phasekit.engine.points import PointEngines
from phasekit.runner.execute import execute
from tests.helpers import toy_quadratic

#: a time: "5 s", "10 min", "2 h", "about 40 minutes", "1.5 hours"
TIME = re.compile(r"\b\d+(\.\d+)?\s*(s|sec|seconds?|min|minutes?|h|hours?)\b")


def test_no_preset_description_quotes_a_time(manager):
    """The dry run estimates a preset's time on the machine at hand; a description
    quoting one (measured elsewhere, under another load) can only disagree with it."""
    presets = manager.presets()
    assert len(presets) >= 20
    for name, preset in presets.items():
        assert not TIME.search(preset.description), (name, preset.description)
        assert "CPU core" not in preset.description, (name, preset.description)


def test_the_time_pattern_finds_the_old_descriptions():
    for text in ("8 seeds x 46 rates (about 5 s on 2 CPU cores)", "about 40 min on 2 cores",
                 "about 10 min", "2 h", "1.5 hours"):
        assert TIME.search(text), text
    assert not TIME.search("widths 16-4096, 4 seeds; bound eq. 60, 1000 steps")


def _config(manager, **sweep):
    raw = merge(toy_quadratic(40, 1.0, 2.0), {"sweep": {
        "eta_lambda0": [0.5, 1.5, 2.5, 3.5, 6.0], "seeds": [0], "max_steps": 300,
        "record_dense": 11, "record_per_decade": 4, **sweep}})
    return resolve_config(raw, manager)


def test_step_counts_are_chunk_seconds_with_unit_costs():
    stops, schedule = np.array([4, 2, 2]), np.array([0, 1, 4, 10])
    counts = step_counts(stops, schedule)
    # steps 0..4 of the batch, and the forward of the one run kept at step 2
    assert counts.steps == 5 + 1
    assert counts.run_steps == (5 + 3 + 3) + 1
    assert counts.recorded == 4                       # 0, 1, 2 (the stops), 4
    assert counts.recorded_runs == 3 + 3 + 3 + 1
    costs = StepCosts(Linear(2.0, 3.0), Linear(5.0, 7.0), 3)
    assert chunk_seconds(stops, schedule, costs) == (
        2 * counts.steps + 3 * counts.run_steps + 5 * counts.recorded
        + 7 * counts.recorded_runs)


def test_estimate_counts_what_the_run_does(manager, monkeypatch):
    """With a pilot long enough for every run, the estimate's batches, batch steps,
    run-steps, recorded steps and the runs evaluated at them are exactly the run's:
    the forward passes on the training split and the evaluations at recorded steps,
    counted in the engine itself."""
    config, data = _config(manager, chunk_size=3)
    estimate = estimate_run(config, data, manager, budget=float("inf"))
    (plan,) = estimate.points
    assert [len(b) for b in plan.batches] == [3, 2]
    counts = plan.counts()

    seen = {"steps": 0, "run_steps": 0, "recorded": 0, "recorded_runs": 0, "batches": 0}
    record, run_batch = Engine._record, Engine._run_batch

    def counting_record(self, batch, *args):
        seen["recorded"] += 1
        seen["recorded_runs"] += batch.size
        return record(self, batch, *args)

    def counting_run_batch(self, chunks, progress, prepared):
        seen["batches"] += 1
        forward = self.model.forward

        def counting_forward(features, theta, split="train"):
            if split == "train":
                seen["steps"] += 1
                seen["run_steps"] += int(theta.shape[0])
            return forward(features, theta, split)

        monkeypatch.setattr(self.model, "forward", counting_forward)
        try:
            return run_batch(self, chunks, progress, prepared)
        finally:
            monkeypatch.delattr(self.model, "forward")

    monkeypatch.setattr(Engine, "_record", counting_record)
    monkeypatch.setattr(Engine, "_run_batch", counting_run_batch)
    ds = execute(config, data, manager)
    np.testing.assert_array_equal(plan.pilot.steps, ds.steps.values[0])
    assert seen["batches"] == len(plan.batches)
    assert {k: seen[k] for k in ("steps", "run_steps", "recorded", "recorded_runs")} == {
        "steps": counts.steps, "run_steps": counts.run_steps,
        "recorded": counts.recorded, "recorded_runs": counts.recorded_runs}


def test_batches_are_cut_as_the_run_cuts_them(manager):
    """Several seeds train in one batch where the model stacks them: the estimate's
    batches have the run's sizes, every seed taking the pilot seed's steps."""
    config, data = _config(manager, seeds=[0, 1, 2], chunk_size=3, seed_batch=2)
    engines = PointEngines(config, data, manager)
    run_batches = engines.batches(engines.chunks())
    first = [c for c in engines.chunks() if c.seed_index == 0]
    steps = np.arange(5) + 10
    stops = batch_stops(steps, first, 3, engines.seeds_per_batch(0))
    assert [len(b) for b in stops] == [sum(len(c.c_values) for c in b) for b in run_batches]
    np.testing.assert_array_equal(stops[0], [10, 11, 12, 10, 11, 12])
    np.testing.assert_array_equal(stops[-1], [13, 14])


def test_calibration_times_the_batch_the_run_trains(manager):
    """A batch of 2 seeds x 3 rates is calibrated as 6 runs advancing together."""
    config, data = _config(manager, seeds=[0, 1], chunk_size=3)
    engines = PointEngines(config, data, manager)
    assert engines.seeds_per_batch(0) == 2
    chunk = engines.chunks()[0]
    costs = calibrate(engines[0], chunk, engines.prepared(0, 0), 2)
    assert costs.batch == 6
    assert costs.unrecorded(6) >= costs.unrecorded(1) > 0
    assert costs.recording(6) >= costs.recording(1) >= 0


def test_fit_curve_pools_steps_per_bin_of_run_counts():
    """U(a) through (runs, mean seconds, steps timed): means of one bin (half an octave)
    pooled by the steps behind them, linear between the bins, flat beyond them, never
    below 0."""
    curve = fit_curve([(1, 1e-3, 4), (100, 9e-3, 1), (100, 13e-3, 3), (240, 60e-3, 2)])
    np.testing.assert_allclose(curve.at, [1, 100, 240])
    np.testing.assert_allclose(curve.seconds, [1e-3, 12e-3, 60e-3])
    assert curve(50) == pytest.approx(1e-3 + 49 / 99 * 11e-3)
    assert curve(0.5) == pytest.approx(1e-3) and curve(1000) == pytest.approx(60e-3)
    pooled = fit_curve([(15, 1.0, 1), (16, 4.0, 3)])      # 15 and 16 share a bin
    np.testing.assert_allclose([pooled.at[0], pooled.seconds[0]], [15.75, 3.25])
    assert fit_curve([(1, -0.5, 2), (8, 1.0, 1)])(1) == 0
    # a bin above the next (a step that waited for a core) is pooled with it
    dip = fit_curve([(1, 1.0, 1), (4, 5.0, 1), (16, 2.0, 3), (64, 9.0, 1)])
    np.testing.assert_allclose(dip.seconds, [1.0, 2.75, 2.75, 9.0])


def test_pilot_clock_times_the_steps_no_run_stops_in():
    """A pass's first step (setting up the batch) and a step where runs stop (a
    recording and a second forward pass) are left out; the others keep their run
    count and whether the pass records there."""
    clock = PilotClock()
    clock.begin(np.array([0, 1, 3]))
    clock(5)                        # step 0: set-up, untimed
    clock(5)                        # step 1, recorded
    clock(0, ["diverged"], 2)       # two runs stop at step 2
    clock(3)
    clock(3)                        # step 3, recorded
    clock(3)
    clock.begin(np.array([9]))      # the next pass
    clock(2)
    clock(2)
    assert [(a, rec) for a, _, rec in clock.steps] == [(5, True), (3, True), (3, False),
                                                        (2, False)]
    assert all(dt >= 0 for _, dt, _ in clock.steps)


def test_the_pilots_steps_refit_the_step_costs(manager):
    """The pilot's first pass records as the run does and its steps join the
    calibration's in U and R; seeds after the first are timed for their preparation
    (the first pays one-off costs)."""
    config, data = _config(manager, seeds=[0, 1, 2], chunk_size=5)
    (plan,) = estimate_run(config, data, manager, budget=float("inf")).points
    calibrated = 2                  # the full batch and one run
    # one pass of the whole run: steps 1 .. last - 1, less those where runs stop
    stops = np.unique(plan.pilot.by_seed)
    last = int(stops.max())
    assert plan.pilot.pilot_steps >= last
    timed = [t for t in range(1, last) if t not in stops]
    recorded = [t for t in timed if t in plan.schedule]
    assert sum(n for _, _, n in plan.costs.plain[calibrated:]) == len(timed) - len(recorded)
    assert sum(n for _, _, n in plan.costs.recorded[calibrated:]) == len(recorded) > 0
    assert plan.prepare_next > 0
    assert plan.preparing(3) == pytest.approx(plan.prepare_s + 2 * plan.prepare_next)

# -- phasekit boundary --dry-run -------------------------------------------------------------

def test_rounds_to_divides_the_bracket_by_points_plus_one():
    assert rounds_to(0.2, 0.01, 1) == 5            # 0.1, 0.05, 0.025, 0.0125, 0.00625
    assert rounds_to(0.2, 0.01, 3) == 3            # 0.05, 0.0125, 0.003125
    assert rounds_to(0.01, 0.01, 1) == 0


def _numbers(text: str) -> tuple[int, int, int]:
    rounds = int(re.search(r"^rounds: up to (\d+)", text, re.M).group(1))
    whole, early = re.search(r"^runs: (\d+) whole and (\d+) early-window", text, re.M).groups()
    return rounds, int(whole), int(early)


@pytest.mark.parametrize("average", [None, "seeds"])
def test_boundary_dry_run_counts_what_the_search_does(manager, average):
    """On a uniform grid whose brackets lie inside it, with a pilot that runs every
    run to its stop, the estimate's rounds and whole runs are the search's; its
    early-window runs bound the search's from above (c_loss and c_sharp share a trial
    point where their brackets coincide).  So with ``--average seeds``, where one
    bracket per axis point has every seed run every trial rate."""
    raw = merge(toy_quadratic(40, 1.0, 2.0), {"sweep": {
        "eta_lambda0": {"start": 0.5, "stop": 6.5, "num": 13}, "seeds": [0, 1],
        "max_steps": 400}})
    config, _ = resolve_config(raw, manager)
    text = boundary_dry_run(config, manager, tol=0.05, points=1, early=True,
                            average=average, budget=float("inf"))
    ds = find_boundary(raw, manager, tol=0.05, average=average)
    rounds, whole, early = _numbers(text)
    assert rounds == ds.attrs["boundary_rounds"]
    assert whole == int((ds.boundary_round >= 0).sum())
    assert ds.attrs["boundary_early_runs"] <= early <= 1.2 * ds.attrs["boundary_early_runs"]


def test_boundary_dry_run_on_the_command_line(tmp_path, monkeypatch, capsys):
    """One line per quantity plus the totals; no output file, no lock, nothing at all
    written."""
    monkeypatch.chdir(tmp_path)
    code = main(["boundary", "--preset", "fig1", "--set", "sweep.seeds=[0, 1]", "--set",
                 "sweep.eta_lambda0=[1.0, 2.5, 3.5, 4.5]", "--dry-run", "-o", "b.nc"])
    out = capsys.readouterr().out
    assert code == 0
    for start in ("grid (round 0): 8 whole run(s)", "c_max: up to", "c_trivial:",
                  "c_loss: up to", "c_sharp: up to", "rounds: up to", "runs: ",
                  "estimated time: "):
        assert re.search(f"^{re.escape(start)}", out, re.M), (start, out)
    assert "nothing was written" in out
    assert list(tmp_path.iterdir()) == []
    main(["boundary", "--preset", "fig1", "--set", "sweep.seeds=[0]", "--no-early",
          "--dry-run"])
    out = capsys.readouterr().out
    assert "c_loss: not searched (--no-early)" in out and "early-window run" not in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, message", [
    (["--tol", "0"], "--tol must be a positive number"),
    (["--points", "0"], "points must be a positive integer"),
    (["--set", "sweep.max_steps=-1"], "sweep.max_steps"),
])
def test_boundary_dry_run_bad_flags_one_line(flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["boundary", "--preset", "fig1", *flags, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phasekit: error: ") and message in err[0]
    assert list(tmp_path.iterdir()) == []
