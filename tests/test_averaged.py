"""Critical learning rates of seed-averaged trajectories (phasekit.analysis.averaged):
hand-made sweeps where thresholding the seed mean of L_t/L_0 and lambda_t/lambda_0
gives other answers than thresholding each seed."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import phasekit  # noqa: F401  (registers ds.phasekit)
from phasekit.analysis.averaged import add_seed_averaged, seed_averaged_rates
from phasekit.analysis.phases import critical_rates
from phasekit.cli.main import main
from phasekit.errors import ConfigError
from phasekit.io.netcdf import open_sweep, write_sweep
from tests.test_critical import T, make_sweep, runs, two_axis_sweep

CS = [1.0, 2.0, 3.0]
DECAY = 0.5 ** np.arange(T)


def level(value: float, stop: int = T - 1) -> np.ndarray:
    """x_0 = 1, then ``value`` at every step up to ``stop``; NaN after."""
    out = np.full(T, value)
    out[0] = 1.0
    out[stop + 1:] = np.nan
    return out


def test_one_big_rise_lifts_the_mean_below_a_seeds_own_c_loss():
    # seed 0 rises 5x at c = 2, seed 1 decays there: the mean (5 + 0.5) / 2 rises
    loss = runs([DECAY, level(5.0), level(2.0)], [DECAY, level(0.5), level(2.0)])
    ds = make_sweep([["converged"] * 3] * 2, loss, cs=CS)
    np.testing.assert_array_equal(critical_rates(ds)["c_loss"], [2.0, 3.0])
    mean = seed_averaged_rates(ds)
    assert mean["c_loss"].dims == ()
    assert float(mean["c_loss"]) == 2.0 and float(mean["c_loss_below"]) == 1.0


def test_a_small_rise_of_one_seed_is_averaged_away():
    # seed 0 rises 1.5x at c = 2, seed 1 falls to 0.25: the mean 0.875 does not rise
    loss = runs([DECAY, level(1.5), level(2.0)], [DECAY, level(0.25), level(2.0)])
    ds = make_sweep([["converged"] * 3] * 2, loss, cs=CS)
    np.testing.assert_array_equal(critical_rates(ds)["c_loss"], [2.0, 2.0 + 1.0])
    assert float(seed_averaged_rates(ds)["c_loss"]) == 3.0


def test_c_sharp_of_the_mean_sharpness_ratio():
    # at c = 2 seed 0's sharpness falls 20%, seed 1's rises 30%: the mean ratio is 1.05
    sharp = runs([level(1.0), level(0.8), level(0.5)], [level(1.0), level(1.3), level(0.5)])
    ds = make_sweep([["converged"] * 3] * 2, sharpness=sharp, cs=CS)
    np.testing.assert_array_equal(critical_rates(ds)["c_sharp"], [2.0, 3.0])
    mean = seed_averaged_rates(ds)
    assert float(mean["c_sharp"]) == 3.0 and "c_loss" not in mean


def test_a_stopped_run_holds_its_value_and_a_diverged_one_makes_the_mean_infinite():
    # c = 2: seed 0 converged at step 2 at L = 0.1 L_0 and holds it; seed 1 rises to
    # 1.5 at step 5: the mean (0.1 + 1.5) / 2 stays below 1 (dropping the stopped run
    # would give 1.5).  c = 3: seed 0 diverges at step 4, seed 1 decays: the mean is inf.
    late = level(1.0)
    late[5:] = 1.5
    diverged = level(0.5, stop=4)
    diverged[4] = np.inf
    loss = runs([DECAY, level(0.1, stop=2), diverged], [DECAY, late, DECAY])
    sharp = runs([level(1.0), level(1.0), level(0.5, stop=4)],
                 [level(1.0), level(1.0), level(1.0)])
    status = [["converged", "converged", "diverged"], ["converged"] * 3]
    ds = make_sweep(status, loss, sharp, cs=CS)
    np.testing.assert_array_equal(critical_rates(ds)["c_loss"], [3.0, 2.0])
    mean = seed_averaged_rates(ds)
    assert float(mean["c_loss"]) == 3.0
    # the diverged seed's sharpness leaves the mean from its divergence on: before it,
    # (0.5 + 1) / 2 = 0.75 < 0.95 already counts
    assert float(mean["c_sharp"]) == 3.0


def test_c_max_of_the_mean_counts_only_divergence():
    # seed 0 diverges from c = 3; seed 1 ends trivial at c = 2 and diverges at c = 3
    loss = runs([DECAY, DECAY, level(np.inf, stop=1)], [DECAY, DECAY, level(np.inf, stop=1)])
    status = [["converged", "converged", "diverged"], ["converged", "trivial", "diverged"]]
    ds = make_sweep(status, loss, cs=CS)
    per_seed = critical_rates(ds)
    np.testing.assert_array_equal(per_seed["c_max"], [2.0, 1.0])
    np.testing.assert_array_equal(per_seed["c_fail"], [3.0, 2.0])
    mean = seed_averaged_rates(ds)
    assert float(mean["c_max"]) == 2.0 and float(mean["c_fail"]) == 3.0
    assert mean["c_max"].attrs["average"] == "seeds"
    # one seed diverging is enough, even where the other converged
    status[1][2] = "converged"
    loss[1, 2] = DECAY
    assert float(seed_averaged_rates(make_sweep(status, loss, cs=CS))["c_max"]) == 2.0


def test_axes_give_one_value_per_axis_point():
    ds = two_axis_sweep()
    mean = seed_averaged_rates(ds)
    for name in ("c_loss", "c_sharp", "c_max", "c_fail"):
        assert mean[name].dims == ("hidden_layers", "width"), name
    # the loss rises from c_loss(point, seed) on: 1 + 0.1 t against 0.9^t; at depth 2,
    # width 64 the seeds rise from 4 and 5: at c = 4 the mean (1.1 + 0.9)/2 is flat at
    # t = 1 but above 1 at later steps, so the mean rises with the first seed
    per_seed = critical_rates(ds)["c_loss"].min("seed")
    xr.testing.assert_equal(mean["c_loss"], per_seed)     # values and coordinates, not attrs
    np.testing.assert_array_equal(mean["c_max"].values[:, 0], [4.0, 5.0])
    # each axis point on its own gives the same numbers
    alone = seed_averaged_rates(ds.isel(hidden_layers=1, width=0))
    assert float(alone["c_loss"]) == float(mean["c_loss"][1, 0])


def test_stored_beside_the_per_seed_values_and_through_netcdf(tmp_path):
    loss = runs([DECAY, level(1.5), level(2.0)], [DECAY, level(0.25), level(2.0)])
    ds = make_sweep([["converged"] * 3] * 2, loss, cs=CS)
    out = add_seed_averaged(ds)
    assert float(out["c_loss_mean_traj"]) == 3.0
    assert out["c_loss_mean_traj"].attrs["average"] == "seeds"
    assert {"c_loss_below_mean_traj", "c_max_mean_traj", "c_fail_mean_traj"} <= set(out)
    write_sweep(out, tmp_path / "s.nc")
    back = open_sweep(tmp_path / "s.nc")
    assert float(back["c_loss_mean_traj"]) == 3.0
    # the accessor gives the same, unsuffixed
    rates = ds.phasekit.critical(average="seeds")
    assert float(rates["c_loss"]) == 3.0
    added = ds.phasekit.add_critical(average="seeds")
    assert "c_loss" in added and "c_loss_mean_traj" in added
    with pytest.raises(ConfigError, match='average must be "seeds"'):
        ds.phasekit.critical(average="mean")


def test_analyze_average_seeds_prints_and_writes_them(tmp_path, capsys):
    loss = runs([DECAY, level(1.5), level(2.0)], [DECAY, level(0.25), level(2.0)])
    path = tmp_path / "s.nc"
    write_sweep(make_sweep([["converged"] * 3] * 2, loss, cs=CS), path)
    assert main(["analyze", str(path), "--average", "seeds", "--in-place"]) == 0
    printed = capsys.readouterr().out
    assert "seed-averaged trajectories" in printed and "c_loss = 3" in printed
    assert "c_loss_mean_traj" in printed                           # in the "wrote" line
    assert float(open_sweep(path)["c_loss_mean_traj"]) == 3.0
    assert main(["analyze", str(path), "--average", "mean"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['phasekit: error: --average must be "seeds" (thresholds on seed-averaged '
                   "trajectories) or left out (per seed), got 'mean'"]
