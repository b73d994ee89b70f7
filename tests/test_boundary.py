"""Critical learning rates by bracketing and bisection (phasekit.analysis.boundary,
`phasekit boundary`)."""

from __future__ import annotations

import numpy as np
import pytest

from phasekit import api
from phasekit.analysis.boundary import (
    _next_points,
    _Search,
    bracket,
    find_boundary,
    not_converged,
)
from phasekit.analysis.report import boundary_report
from phasekit.cli.analysis import main as analysis_main
from phasekit.config.resolve import merge
from phasekit.engine.engine import Engine
from phasekit.errors import ConfigError
from phasekit.io.netcdf import open_sweep, stored_config

from .helpers import sweep


def fig1(width=None, **sweep_kw) -> dict:
    raw = api.build_config(preset="fig1")
    if width is not None:
        raw = merge(raw, {"model": {"width": width}})
    return merge(raw, {"sweep": sweep_kw}) if sweep_kw else raw


# -- the bracket rule ------------------------------------------------------------------

def test_bracket_is_below_the_first_failure():
    ev = {1.0: "converged", 3.0: "converged", 3.5: "diverged", 3.7: "converged",
          4.0: "diverged"}
    assert bracket(ev, not_converged) == (3.0, 3.5)      # 3.7 converges, but above 3.5
    assert bracket({1.0: "converged"}, not_converged) == (1.0, None)
    assert bracket({5.0: "diverged"}, not_converged) == (None, 5.0)
    assert bracket({1.0: "converged", 2.0: "max_steps"}, not_converged) == (1.0, 2.0)


def _search_with(ev: dict) -> _Search:
    s = _Search([0])
    s.evaluated[0] = dict(ev)
    return s


def test_next_points_bisect_expand_and_refine_the_trivial_onset():
    nxt = _next_points
    kw = {"tol": 0.01, "points": 1, "c_limit": 100.0, "c_floor": 0.01}
    assert nxt(_search_with({1.0: "converged", 2.0: "diverged"}), 0, **kw) == [1.5]
    assert nxt(_search_with({1.0: "converged", 1.005: "diverged"}), 0, **kw) == []
    assert nxt(_search_with({1.0: "converged", 2.0: "converged"}), 0, **kw) == [4.0]
    assert nxt(_search_with({4.0: "diverged", 8.0: "diverged"}), 0, **kw) == [2.0]
    # c_max and the trivial onset are refined in the same round
    ev = {1.0: "converged", 2.0: "diverged", 3.0: "converged", 4.0: "trivial", 5.0: "trivial"}
    assert nxt(_search_with(ev), 0, **kw) == [1.5, 3.5]
    # when the first failure is trivial, both searches share one point
    ev = {1.0: "converged", 2.0: "converged", 3.0: "trivial"}
    assert nxt(_search_with(ev), 0, **kw) == [2.5]
    assert nxt(_search_with(ev), 0, **{**kw, "points": 3}) == [2.25, 2.5, 2.75]
    s = _search_with({60.0: "converged", 80.0: "converged"})
    assert nxt(s, 0, **kw) == [] and "converged up to c = 80" in s.unbounded[0]


# -- end to end --------------------------------------------------------------------------

def test_all_seeds_are_batched_each_round(monkeypatch):
    engines, chunks = [], []
    init, run_batch = Engine.__init__, Engine.run_batch

    def counting_init(self, *a, **k):
        engines.append(self)
        init(self, *a, **k)

    short_runs = []

    def counting_run(self, batch, progress=None, **kw):
        window = self.sweep["max_steps"] == self.sweep["early_window"] and not self.sweep["tol"]
        (short_runs if window else chunks).extend(batch)
        return run_batch(self, batch, progress, **kw)

    monkeypatch.setattr(Engine, "__init__", counting_init)
    monkeypatch.setattr(Engine, "run_batch", counting_run)
    tol = 0.02
    ds = find_boundary(fig1(width=100, seeds=[0, 1, 2]), tol=tol)
    # one engine for whole runs, one for the early-window runs, one to assemble the dataset
    assert len(engines) == 3
    rounds = ds.attrs["boundary_rounds"]
    assert rounds >= 4
    # one chunk per seed per round, the first holding the whole initial grid
    assert [c.seed for c in chunks[:3]] == [0, 1, 2]
    assert all(len(c.c_values) == 23 for c in chunks[:3])
    assert len(chunks) <= 3 * rounds and len(short_runs) <= 3 * rounds
    assert [c.seed for c in short_runs[:3]] == [0, 1, 2]
    assert ds.attrs["boundary_early_runs"] == sum(len(c.c_values) for c in short_runs)
    per_round = ds["boundary_round"].values
    for r in range(rounds):
        assert ((per_round == r).sum(axis=1) > 0).sum() >= 1

    c_max, c_fail = ds["c_max"].values, ds["c_fail"].values
    assert np.all(c_fail - c_max <= tol + 1e-12) and np.all(c_fail > c_max)
    assert np.all((3.6 < c_max) & (c_max < 4.3))
    status = ds["status"].values
    for s in range(3):
        assert status[s, list(ds["eta_lambda0"].values).index(c_max[s])] == "converged"
        assert status[s, list(ds["eta_lambda0"].values).index(c_fail[s])] == "diverged"
    assert list(ds["fail_status"].values) == ["diverged"] * 3
    # the stored grid is the sorted union of evaluated c; the rest is pending
    grid = ds["eta_lambda0"].values
    assert np.all(np.diff(grid) > 0)
    assert stored_config(ds)["sweep"]["eta_lambda0"] == list(grid)
    assert ((per_round >= 0) == (status != "pending")).all()
    assert (status == "pending").any()

    # runs are stored at the right grid points: rerunning two points agrees
    again = sweep(fig1(width=100, seeds=[1], eta_lambda0=[float(c_max[1]), float(c_fail[1])]))
    assert list(again["status"].values[0]) == ["converged", "diverged"]
    stored = ds["loss"].sel(seed=1, eta_lambda0=[c_max[1], c_fail[1]]).isel(step=slice(0, 6))
    np.testing.assert_allclose(stored.values, again["loss"].isel(step=slice(0, 6)).values[0],
                               rtol=1e-8)
    assert "c_max = " in boundary_report(ds)


@pytest.mark.parametrize("grid", [[0.5, 1.0], [6.0, 8.0]])
def test_brackets_by_doubling_and_halving(grid):
    ds = find_boundary(fig1(width=60, seeds=[0], eta_lambda0=grid), tol=0.05)
    assert 3.4 < float(ds["c_max"][0]) < 4.4
    assert float(ds["c_fail"][0]) - float(ds["c_max"][0]) <= 0.05


def test_trivial_onset_is_located(monkeypatch):
    """A stand-in for a ReLU net: runs end trivial for 3.3 <= c < 6.1, diverge above."""
    run_batch = Engine.run_batch

    def fake(self, batch, progress=None, **kw):
        results = run_batch(self, batch, progress, **kw)
        for res in results:
            c = np.asarray(res.chunk.c_values)
            res.status = np.where(c < 3.3, "converged",
                                  np.where(c < 6.1, "trivial", "diverged"))
        return results

    monkeypatch.setattr(Engine, "run_batch", fake)
    ds = find_boundary(fig1(width=20, seeds=[0, 1], eta_lambda0=[1.0, 2.0, 4.0, 8.0]), tol=0.01)
    assert np.all((3.29 <= ds["c_max"].values) & (ds["c_max"].values < 3.3))
    assert np.all((3.3 <= ds["c_trivial"].values) & (ds["c_trivial"].values <= 3.31))
    assert list(ds["fail_status"].values) == ["trivial", "trivial"]
    assert "trivial phase from c = 3.30" in boundary_report(ds)


@pytest.mark.slow
def test_fig1_preset_lands_between_3_9_and_4_2():
    """The true figure 1 preset (n = 1000, seeds 0-7): the window closes near 4.

    Measured: c_max = 3.869, 3.863, 3.869, 3.869, 3.913, 3.944, 4.019, 3.969
    (mean 3.914 +/- 0.058); every seed fails by divergence just above its c_max.
    """
    ds = find_boundary(fig1(), tol=0.01)
    c_max = ds["c_max"].values
    assert len(c_max) == 8
    assert 3.9 <= c_max.mean() <= 4.2
    assert np.all((3.8 < c_max) & (c_max < 4.2))
    assert np.all(ds["c_fail"].values - c_max <= 0.01)
    assert set(ds["fail_status"].values) == {"diverged"}
    assert np.all(c_max - ds["bound_eq60"].values > 1.0)     # eq. 60 sits ~1.5 below


def test_tolerance_is_checked():
    with pytest.raises(ConfigError, match="tol"):
        find_boundary(fig1(width=20), tol=0)
    with pytest.raises(ConfigError, match="points"):
        find_boundary(fig1(width=20), points=0)


@pytest.mark.slow
def test_boundary_command(tmp_path, capsys):
    out = tmp_path / "b.nc"
    argv = ["boundary", "--preset", "fig1", "--set", "model.width=60", "--set",
            "sweep.eta_lambda0=[1.0, 2.0, 3.0, 4.0, 5.0]", "--tol", "0.05", "-o", str(out), "-q"]
    assert analysis_main(argv) == 0
    text = capsys.readouterr().out
    assert "c_max = " in text and "catapult window: (2, " in text and "bound_eq60" in text
    ds = open_sweep(out)
    assert {"c_max", "c_fail", "c_trivial", "boundary_round"} <= set(ds.variables)
    assert ds.attrs["boundary_tol"] == 0.05
    assert "tolerance 0.05" in ds.phasekit.summary()        # the boundary report is included
    assert analysis_main(argv) == 0                          # same search: may replace
    other = [a if a != "0.05" else "0.1" for a in argv]
    assert analysis_main(other) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert analysis_main(other + ["--overwrite"]) == 0
    assert analysis_main(["boundary", "--preset", "nope", "-o", str(out), "-q"]) == 2
    fig = api.plot(out, tmp_path / "b.png")
    assert fig is not None and (tmp_path / "b.png").exists()
