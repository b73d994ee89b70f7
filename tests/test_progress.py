"""Planning a sweep: progress in run-steps (totals, early stops, resumes, Dask events,
output) and the dry run's time model (step costs, recorded steps, predicted stops)."""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest

from phasekit.analysis.phases import add_critical
from phasekit.cli.dryrun import (
    Linear,
    StepCosts,
    calibrate,
    chunk_seconds,
    dry_run_report,
    engine_variant,
    linear_stop,
    pilot,
)
from phasekit.config.resolve import merge, resolve_config
from phasekit.engine.chunks import make_chunks
from phasekit.engine.points import PointEngines
from phasekit.runner.execute import execute
from phasekit.runner.progress import ChunkReporter, Progress, Tally

from .helpers import toy_quadratic

LINE = re.compile(r"^\s*(\d+)% (\S+)/(\S+) run-steps \[.*?, (\d+)/(\d+) done \((.*)\), "
                  r"(\d+) running\]$")


def small(**sweep_kw):
    raw = toy_quadratic(40, 1.0, 2.0)
    return merge(raw, {"sweep": {"eta_lambda0": [0.5, 2.5, 3.5, 6.0], "seeds": [0, 1],
                                 "max_steps": 400, **sweep_kw}})


class Recording(Progress):
    """A Progress that remembers (n, running, done) at every report."""

    def __init__(self, stream):
        super().__init__(stream, min_interval=0)
        self.seen = []

    def _draw(self, force=False):
        self.seen.append((self.n, self.running, self.done))
        super()._draw(force)


def parse(text: str) -> list[tuple]:
    rows = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, line
        rows.append((int(m[1]), int(m[4]), int(m[5]), m[6], int(m[7])))
    return rows


def test_engine_run_steps_sum_to_the_total(manager):
    """Runs that stop early count their remaining steps: the bar ends at exactly
    points x max_steps, never goes back, and the counts are the stored statuses."""
    config, data = resolve_config(small(), manager)
    stream = io.StringIO()
    progress = Recording(stream)
    ds = execute(config, data, manager, progress=progress, derive=add_critical)
    total = 8 * 400
    assert progress.total == total and progress.n == total
    ns = [n for n, _, _ in progress.seen]
    assert ns == sorted(ns) and ns[-1] == total
    # While training, some runs are in flight and fewer steps than the total are done.
    assert any(running > 0 and n < total for n, running, _ in progress.seen)
    # both seeds' chunks of 4 rates share one batch (the quadratic model on a point)
    assert max(running for _, running, _ in progress.seen) == 8
    # Early stops really happen here, so counting their remaining steps matters.
    assert (ds.steps.values < 400).any()
    made = int(ds.steps.values.sum())
    assert made < total
    statuses = Counter(ds.status.values.ravel().tolist())
    assert progress.counts == statuses
    rows = parse(stream.getvalue())
    assert rows[0][:3] == (0, 0, 8) and rows[0][4] == 0
    last = rows[-1]
    assert last[0] == 100 and last[1] == last[2] == 8 and last[4] == 0
    assert last[3] == ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))


def test_tally_counts_remaining_steps_of_early_stops():
    t = Tally(max_steps=10)
    for _ in range(3):
        t.add(4)                         # four runs make three updates each
    t.add(0, ["diverged"], 3)            # one stops after 3 updates: 7 more count as done
    assert (t.n, t.running) == (12 + 7, 3)
    for _ in range(7):
        t.add(3)
    t.add(0, ["max_steps"] * 3, 10)      # the rest run out of steps: nothing to add
    assert (t.n, t.running) == (40, 0)
    assert t.counts == Counter({"max_steps": 3, "diverged": 1})


def test_resume_counts_stored_points_as_done():
    stream = io.StringIO()
    progress = Progress(stream, min_interval=0)
    progress.start(4, already=["converged", "diverged"], max_steps=50)
    assert progress.n == 100 and progress.done == 2
    progress.advance(2)
    progress.advance(0, ["converged", "converged"], 1)
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("resuming: 2 of 4 grid points already done\n")
    rows = parse(text.split("\n", 1)[1])
    assert rows[0][0] == 50 and rows[-1][0] == 100
    assert rows[-1][1:4] == (4, 4, "3 converged, 1 diverged")


def test_log_output_is_throttled_to_plain_lines():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, clock=lambda: now[0])   # not a terminal: every 10 s
    assert progress.min_interval == 10.0
    progress.start(2, max_steps=1000)
    for step in range(1000):                   # 1000 steps of 25 ms each
        now[0] = 0.025 * (step + 1)
        progress.advance(2)
    progress.advance(0, ["max_steps", "max_steps"], 1000)
    progress.finish()
    text = stream.getvalue()
    rows = parse(text)
    assert "\r" not in text and len(rows) == 4         # start, at 10 s and 20 s, finish
    assert [r[0] for r in rows] == [0, 40, 80, 100]
    assert rows[-1][:4] == (100, 2, 2, "2 max_steps")
    assert "[00:25<00:00, 80.0 run-steps/s" in text.splitlines()[-1]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_bar_redraws_in_place():
    stream = FakeTerminal()
    progress = Progress(stream, min_interval=0)
    progress.start(3, max_steps=10)
    for _ in range(4):
        progress.advance(3)
    progress.advance(0, ["converged", "diverged", "trivial"], 4)
    progress.finish()
    text = stream.getvalue()
    frames = [f for f in text.split("\r") if f.strip()]
    assert len(frames) >= 3 and text.endswith("\n") and "|" in frames[-1]
    assert "100%" in frames[-1] and "30.0/30.0 run-steps" in frames[-1]
    assert "3/3 done (1 converged, 1 diverged, 1 trivial), 0 running" in frames[-1]
    assert "3 running" in text


def test_chunk_reporter_publishes_cumulative_state_throttled():
    now = [0.0]
    sent = []
    reporter = ChunkReporter("topic", "chunk-a", max_steps=100, interval=0.25,
                             publish=sent.append, clock=lambda: now[0])
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.6):
        now[0] = t
        reporter(5)
    assert [m["n"] for m in sent] == [5, 20, 30]          # at t = 0, 0.3 and 0.6
    now[0] = 0.7
    reporter(0, ["diverged", "converged"], 6)              # within the interval: held back
    now[0] = 1.0
    reporter(3)
    assert sent[-1] == {"key": "chunk-a", "n": 30 + 2 * 94 + 3, "running": 3,
                        "counts": {"diverged": 1, "converged": 1}}


def test_remote_chunks_aggregate_and_settle():
    stream = io.StringIO()
    progress = Progress(stream, min_interval=0)
    progress.start(6, max_steps=10)
    progress.update_chunk("a", 12, 3, {})
    progress.update_chunk("b", 25, 1, {"diverged": 2})
    assert (progress.n, progress.running, progress.done) == (37, 4, 2)
    progress.update_chunk("a", 20, 2, {"converged": 1})    # newer state replaces older
    assert (progress.n, progress.running) == (45, 3)
    progress.chunk_done("a", ["converged", "converged", "max_steps"])
    progress.update_chunk("a", 5, 3, {})                   # a late event of a settled chunk
    assert (progress.n, progress.running) == (55, 1)
    progress.update_chunk("b", 4, 3, {})                   # chunk b recomputed elsewhere
    assert (progress.n, progress.running, progress.done) == (34, 3, 3)
    progress.chunk_done("b", ["diverged"] * 3)
    progress.finish()
    assert progress.n == progress.total == 60
    assert progress.counts == Counter({"converged": 2, "max_steps": 1, "diverged": 3})
    assert progress.remote_events == 4


@pytest.mark.slow
def test_dask_workers_stream_progress(manager, tmp_path):
    """With a scheduler the bar moves while chunks run: events from the workers
    carry run-steps and runs in flight before any chunk's result arrives."""
    distributed = pytest.importorskip("dask.distributed")
    config, data = resolve_config(small(chunk_size=2, tol=0.0, max_steps=300), manager)
    stream = io.StringIO()
    progress = Recording(stream)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        ds = execute(config, data, manager, tmp_path / "d.nc", progress=progress,
                     scheduler=cluster.scheduler_address, derive=add_critical)
    assert progress.remote_events > 0
    total = 8 * 300
    in_flight = [(n, running) for n, running, done in progress.seen if running > 0]
    assert in_flight and all(0 < n < total for n, _ in in_flight)
    assert progress.n == total and progress.running == 0
    assert progress.counts == Counter(ds.status.values.ravel().tolist())
    assert parse(stream.getvalue())[-1][:3] == (100, 8, 8)


# -- the dry run's time model ---------------------------------------------------------------

def test_chunk_seconds_counts_active_runs_and_recorded_steps():
    """Runs stopping after 2 and 4 updates, recorded at steps 0, 1 and 4: every step
    costs U(active), steps 0, 1, 2 (a stop) and 4 add R(active), and step 2 evaluates
    the one run going on once more (U(1))."""
    costs = StepCosts(Linear(1.0, 10.0), Linear(100.0, 1000.0), 2)
    active = [2, 2, 2, 1, 1]                            # runs evaluated at t = 0..4
    expected = sum(1 + 10 * a for a in active) + sum(100 + 1000 * active[t]
                                                     for t in (0, 1, 2, 4)) + (1 + 10 * 1)
    assert chunk_seconds(np.array([4, 2]), np.array([0, 1, 4, 10]), costs) == expected


def test_linear_stop_solves_the_linearised_descent():
    """One direction: |L_s - L_(s-1)| = r^2 (1 - q) q^(s-1) / (2D), q = (1 - eta lam)^2;
    the first s below tol.  A direction with eta lam >= 2 (catapulted away) does not
    count; a slow one runs to the horizon."""
    lam, r2, eta, tol = np.array([0.5, 2.0]), np.array([0.3, 0.0]), 0.4, 1e-8
    q = (1 - eta * 0.5) ** 2
    w = 0.3 * (1 - q) / 4
    expected = next(s for s in range(1, 10_000) if w * q ** (s - 1) < tol)
    assert linear_stop(lam, r2, eta, tol, 10_000) == expected
    unstable = linear_stop(np.array([0.5, 6.0]), np.array([0.3, 5.0]), eta, tol, 10_000)
    assert unstable == expected
    assert linear_stop(np.array([1e-6, 2.0]), np.array([0.3, 0.0]), eta, tol, 500) == 500


@pytest.fixture(scope="module")
def planned(manager):
    raw = merge(small(), {"sweep": {"eta_lambda0": [0.2, 0.5, 1.8, 2.5, 3.5, 6.0],
                                    "chunk_size": 4}})
    config, data = resolve_config(raw, manager)
    engines = PointEngines(config, data, manager)
    chunks = [c for c in make_chunks(config.sweep, 0, engines.chunk_size(0))
              if c.seed_index == 0]
    prepared = engines.prepared(0, 0)
    costs = calibrate(engines[0], chunks[0], prepared)
    return config, data, engines[0], chunks, prepared, costs


def test_calibration_measures_positive_step_costs(planned):
    costs = planned[-1]
    assert costs.batch == 4
    assert costs.unrecorded(1) > 0 and costs.unrecorded(4) >= costs.unrecorded(1)
    assert costs.recording(4) >= costs.recording(1) >= 0


def test_pilot_predicts_the_steps_each_run_takes(planned, manager):
    """A pilot long enough for every run gives the real steps of the first seed; a
    10-step pilot gives those of the runs that stop within it, the linearised model
    those of the lazy runs (c < 2) beyond it, and for a catapult on one point (no
    direction left in the model) the least it can be."""
    config, data, engine, chunks, prepared, costs = planned
    real = execute(config, data, manager, derive=add_critical).steps.values[0]
    whole = pilot(engine, chunks, prepared, costs, float("inf"))
    assert whole.pilot_steps == 400 and whole.modelled == 0
    np.testing.assert_array_equal(whole.steps, real)
    short = pilot(engine, chunks, prepared, costs, 0.0)
    assert short.pilot_steps == 10
    within = real <= 10
    assert short.stopped == within.sum() and short.modelled == (~within).sum() > 0
    np.testing.assert_array_equal(short.steps[within], real[within])
    c = np.asarray(config.sweep["eta_lambda0"])
    lazy, catapult = ~within & (c < 2), ~within & (c > 2)
    assert lazy.sum() >= 2 and catapult.sum() >= 2
    np.testing.assert_allclose(short.steps[lazy], real[lazy], rtol=0.25)
    assert np.all(short.steps[catapult] == 11) and np.all(real[catapult] > 11)


def test_pilot_caps_predictions_at_max_steps(planned):
    config, data, engine, chunks, prepared, costs = planned
    capped = engine_variant(engine, max_steps=25)
    short = pilot(capped, chunks, prepared, costs, 0.0)
    assert short.steps.max() == 25 and short.at_max >= 1        # c = 0.2 takes 38


def test_dry_run_report_states_the_model(planned, manager):
    config, data = planned[:2]
    text = dry_run_report(config, data, manager, budget=float("inf"))
    assert "ran every run to its stop" in text
    assert "steps per run: median" in text and "of 400" in text
    assert "ms per step of a full batch (8 runs; fitted to " in text
    assert "to prepare the first seed" in text and "s each further one" in text
    assert "estimated time:" in text and "preparing seeds" in text and "training" in text
    assert "at most" in text and "if every run went to max_steps = 400" in text
