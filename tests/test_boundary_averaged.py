"""`phasekit boundary --average seeds`: bisection of the seed-averaged critical rates
(phasekit.analysis.boundary with phasekit.analysis.averaged's flags), on the uv toy."""

from __future__ import annotations

import numpy as np
import pytest

from phasekit import api
from phasekit.analysis.averaged import SUFFIX, seed_averaged_rates
from phasekit.analysis.boundary import _next_points, _Search, find_boundary
from phasekit.analysis.report import boundary_report
from phasekit.cli.analysis import main as analysis_main
from phasekit.errors import ConfigError
from phasekit.io.netcdf import open_sweep

# The uv model of `uv_width` at two widths, 4 seeds, runs of 10 steps at tol = 0: a whole
# run is an early-window run, so the stored runs hold every trajectory the flags read.
UV = ["sweep.max_steps=10", "sweep.tol=0.0", 'sweep.axes={"model.width" = [16, 64]}']
NAMES = ("c_loss", "c_loss_below", "c_sharp", "c_sharp_below", "c_max", "c_fail")


def uv(grid, *extra: str) -> dict:
    return api.build_config(preset="uv_width", overrides=[*UV, f"sweep.eta_lambda0={grid}",
                                                          *extra])


def test_next_points_bisect_the_some_seed_diverged_bracket():
    search = _Search([0, 1], 1, average="seeds")
    search.diverged[0] = {1.0: False, 2.0: True, 3.0: False}
    kw = {"tol": 0.01, "points": 1, "c_limit": 100.0, "c_floor": 0.01}
    assert _next_points(search, 0, **kw) == [1.5]
    search.diverged[0] = {1.0: False, 2.0: False}
    assert _next_points(search, 0, **kw) == [4.0]
    search.diverged[0] = {50.0: False, 100.0: False}
    assert _next_points(search, 0, **kw) == []
    assert "no run diverged up to c = 100" in search.unbounded[0]
    search.diverged[0] = {0.01: True}
    assert _next_points(search, 0, **kw) == []
    assert "some seed diverged at every c" in search.unbounded[0]


def test_the_flags_are_those_of_analysis_averaged_on_the_same_runs():
    """A tolerance wider than the grid's gaps ends the search after the grid: its onsets
    come from its own runs (whole and early-window) by its own flags, and must equal
    seed_averaged_rates on the whole runs it stores, the same rates at tol = 0."""
    ds = find_boundary(uv("[0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]"), tol=10.0,
                       average="seeds")
    assert ds.attrs["boundary_rounds"] == 1 and ds.attrs["boundary_average"] == "seeds"
    assert (ds["status"] != "pending").all()
    grid = seed_averaged_rates(ds)
    for name in NAMES:
        np.testing.assert_array_equal(ds[f"{name}{SUFFIX}"].values, grid[name].values,
                                      err_msg=name)
    assert np.isfinite(grid["c_max"]).all() and np.isfinite(grid["c_loss"]).all()


def test_refined_rates_agree_with_a_fine_grid():
    """Bisection from a coarse grid to tol = 0.02 against a grid of step 0.02: each
    refined onset lies within one step and tol of the fine grid's."""
    tol, step = 0.02, 0.02
    ds = find_boundary(uv("[0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]"), tol=tol, average="seeds")
    fine = seed_averaged_rates(api.run(uv("{start = 0.5, stop = 6.0, num = 276}")))
    for name in ("c_loss", "c_sharp", "c_max"):
        got, want = ds[f"{name}{SUFFIX}"].values, fine[name].values
        assert np.isfinite(got).all() and np.isfinite(want).all(), name
        assert np.abs(got - want).max() <= step + tol + 1e-9, (name, got, want)
    hi, lo = ds[f"c_fail{SUFFIX}"].values, ds[f"c_max{SUFFIX}"].values
    assert (hi - lo <= tol + 1e-9).all() and (hi > lo).all()
    assert ds["c_max_mean_traj"].dims == ("width",)
    # every seed ran every trial rate of its axis point
    ran = (ds["status"] != "pending")
    assert (ran.all("seed") | ~ran.any("seed")).all()


def test_average_must_be_seeds():
    with pytest.raises(ConfigError, match='must be "seeds"'):
        find_boundary(uv("[1.0, 5.0]"), average="runs")


@pytest.mark.slow
def test_boundary_command_with_average(tmp_path, capsys):
    out = tmp_path / "b.nc"
    argv = ["boundary", "--preset", "uv_width", *(a for s in UV for a in ("--set", s)),
            "--set", "sweep.eta_lambda0=[1.0, 2.0, 3.0, 4.0, 5.0]", "--tol", "0.1",
            "--average", "seeds", "-o", str(out), "-q"]
    assert analysis_main(argv) == 0
    text = capsys.readouterr().out
    assert "seed-averaged trajectories" in text and "width = 16: c_loss = " in text
    assert "c_fail = 4" in text
    ds = open_sweep(out)
    assert boundary_report(ds) in ds.phasekit.summary()
    # analyze --average seeds keeps the refined values of the file
    refined = ds["c_max_mean_traj"].values
    assert analysis_main(["analyze", str(out), "--average", "seeds", "--in-place"]) == 0
    np.testing.assert_array_equal(open_sweep(out)["c_max_mean_traj"].values, refined)
    # a per-seed search is another search: it does not replace this file silently
    per_seed = [a for a in argv if a not in ("--average", "seeds")]
    assert analysis_main(per_seed) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert analysis_main(argv[:-3] + ["--average", "mean", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and '--average must be "seeds"' in err
    assert analysis_main(argv + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "seed-averaged trajectories" in dry and "c_trivial: not searched" in dry
