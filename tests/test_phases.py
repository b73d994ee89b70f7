"""Phase classification (phasekit.analysis.phases), the ds.phasekit accessor and
`phasekit analyze`."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import phasekit
from phasekit import api
from phasekit.analysis.phases import (
    PHASES,
    add_phases,
    classify,
    critical_summary,
    loss_peak_ratio,
)
from phasekit.analysis.report import summary_text
from phasekit.cli.analysis import main as analysis_main
from phasekit.errors import SweepFileError
from phasekit.io.netcdf import open_sweep, write_sweep

from .helpers import sweep, toy_quadratic

# -- a synthetic sweep in the stored schema (no training) ------------------------------

def _trajectory(kind: str, c: float, steps: np.ndarray, L0: float = 0.5) -> np.ndarray:
    t = steps.astype(float)
    if kind == "converged_lazy":
        out = L0 * 0.25 ** t
        stop = 10
    elif kind == "converged_catapult":
        out = L0 * np.where(t < 5, 10.0 ** t, 10.0 ** (10 - t))
        stop = 15
    elif kind == "diverged":
        out = L0 * 100.0 ** t
        stop = 6
    elif kind == "trivial":
        out = L0 * np.where(t < 3, 1 + t, 0.0) + 2.0
        stop = 8
    elif kind == "max_steps":
        out = L0 * (1 + 0.5 * np.sin(t))
        stop = int(steps[-1])
    else:                                            # pending
        return np.full(t.shape, np.nan)
    out = np.where(t <= stop, out, np.nan)
    return out


def synthetic_sweep(kinds: list[list[str]], cs: list[float], *, layers: int = 0,
                    gap: bool = False) -> xr.Dataset:
    """A sweep with the given run kinds per (seed, c); ``kinds`` entries as in _trajectory."""
    steps = np.arange(21)
    S, C = len(kinds), len(cs)
    status = np.empty((S, C), dtype=object)
    loss = np.full((S, C, len(steps)), np.nan)
    for s in range(S):
        for j in range(C):
            kind = kinds[s][j]
            status[s, j] = kind.split("_")[0] if kind.startswith("converged") else kind
            if kind == "max_steps":
                status[s, j] = "max_steps"
            loss[s, j] = _trajectory(kind, cs[j], steps)
    last = np.array([[np.flatnonzero(np.isfinite(r))[-1] if np.isfinite(r).any() else -1
                      for r in row] for row in loss])
    final_loss = np.take_along_axis(loss, np.maximum(last, 0)[..., None], -1)[..., 0]
    final_loss[last < 0] = np.nan
    weight = np.where(np.isfinite(loss), 100.0 - np.arange(21) * 0.5, np.nan)
    sharp = np.where(np.isfinite(loss), np.asarray(cs)[None, :, None] * 0.9, np.nan)
    grid = ("seed", "eta_lambda0")
    traj = grid + ("step",)
    data = {
        "eta": (grid, np.tile(np.asarray(cs) / 2.0, (S, 1))),
        "lambda0": (("seed",), np.full(S, 2.0)),
        "loss": (traj, loss), "final_loss": (grid, final_loss),
        "weight_norm": (traj, weight), "final_weight_norm": (grid, weight[..., 10]),
        "sharpness": (traj, sharp), "final_sharpness": (grid, sharp[..., 0]),
        "steps": (grid, np.maximum(last, -1)),
        "status": (grid, status.astype(str)),
        "bound_toy": (("seed",), np.full(S, 2.5), {"equation": "eq. 0", "kind": "catapult",
                                                 "long_name": "a toy bound"}),
    }
    coords = {"seed": np.arange(S), "eta_lambda0": np.asarray(cs, float), "step": steps}
    if layers:
        sp = np.linspace(0.1, 0.9, C)[None, :, None] * np.ones((S, C, layers))
        sp = sp + 0.05 * np.arange(layers)[None, None, :]
        data["final_sparsity"] = (grid + ("layer",), sp, {"long_name": "sparsity"})
        coords["layer"] = np.arange(1, layers + 1)
    if gap:
        data["final_generalisation_gap"] = (grid, np.tile(np.linspace(0.01, 0.1, C), (S, 1)),
                                            {"long_name": "test - train loss"})
    attrs = {"config": '[model]\nname = "fake"\n\n[dataset]\nname = "toy"\n\n[sweep]\n'
                       'seeds = [0]\n', "phasekit_version": "0.1.0", "model": "fake",
             "dataset": "toy"}
    return xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords,
                      attrs=attrs)


KINDS = ["converged_lazy", "converged_catapult", "diverged", "trivial", "max_steps", "pending"]
EXPECTED = ["lazy", "catapult", "divergent", "trivial", "undetermined", "pending"]


def test_every_status_maps_to_its_phase():
    ds = synthetic_sweep([KINDS], [0.5, 2.5, 3.0, 4.5, 5.0, 6.0])
    phase = classify(ds)
    assert phase.dims == ("seed", "eta_lambda0")
    assert list(phase.values[0]) == EXPECTED
    assert set(phase.attrs["flag_meanings"].split()) == set(PHASES)
    assert "2 * L_0" in phase.attrs["criteria"]


def test_catapult_factor_is_the_threshold():
    ds = synthetic_sweep([["converged_lazy", "converged_catapult"]], [0.5, 2.5])
    ds["loss"][0, 0, 3] = 2.0 * float(ds["loss"][0, 0, 0])       # exactly twice L_0
    assert classify(ds).values[0, 0] == "catapult"
    ds["loss"][0, 0, 3] = 1.99 * float(ds["loss"][0, 0, 0])
    assert classify(ds).values[0, 0] == "lazy"
    # the catapult peaks at 1e5 L_0: a factor above that makes it lazy
    assert classify(ds, catapult_factor=1e6).values[0, 1] == "lazy"
    with pytest.raises(ValueError):
        classify(ds, catapult_factor=1.0)


def test_peak_ratio_counts_the_final_loss_and_handles_zero_initial_loss():
    ds = synthetic_sweep([["converged_lazy", "converged_lazy"]], [0.5, 0.5001])
    ds["loss"][0, 0, 1:] = np.nan                              # stopped after step 0 ...
    ds["final_loss"][0, 0] = 3 * float(ds["loss"][0, 0, 0])    # ... with a larger final loss
    ds["loss"][0, 1, :] = 0.0
    ds["final_loss"][0, 1] = 0.0
    ratio = loss_peak_ratio(ds).values[0]
    assert ratio[0] == pytest.approx(3.0)
    assert ratio[1] == 0.0
    assert list(classify(ds).values[0]) == ["catapult", "lazy"]


def test_add_phases_survives_a_netcdf_round_trip(tmp_path):
    ds = synthetic_sweep([KINDS, KINDS[::-1]], [0.5, 2.5, 3.0, 4.5, 5.0, 6.0])
    out = add_phases(ds)
    assert "phase" not in ds and "phase" in out
    write_sweep(out, tmp_path / "s.nc")
    back = open_sweep(tmp_path / "s.nc")
    assert list(back["phase"].values[1]) == EXPECTED[::-1]
    assert back["phase"].attrs["catapult_factor"] == 2.0
    assert "loss_peak_ratio" in back


def test_not_a_sweep_and_missing_variables_are_clear_errors():
    with pytest.raises(SweepFileError, match="not a phasekit sweep"):
        classify(xr.Dataset({"x": ("a", [1.0])}))
    ds = synthetic_sweep([["converged_lazy"]], [0.5]).drop_vars("loss")
    with pytest.raises(SweepFileError, match="loss"):
        classify(ds)
    bad = synthetic_sweep([["converged_lazy"]], [0.5])
    bad["status"][:] = "exploded"
    with pytest.raises(SweepFileError, match="exploded"):
        classify(bad)


@pytest.fixture(scope="module")
def real_sweep():
    return sweep(toy_quadratic(width=100, seeds=[0, 1], eta_lambda0=[0.5, 1.5, 2.6, 3.2, 4.6],
                               max_steps=3000))


def test_real_sweep_phases_follow_the_paper(real_sweep):
    phase = classify(real_sweep)
    for s in range(2):
        assert list(phase.values[s]) == ["lazy", "lazy", "catapult", "catapult", "divergent"]
    ratio = loss_peak_ratio(real_sweep).values
    assert (ratio[:, :2] < 1).all()          # lazy: the loss only falls
    assert (ratio[:, 2:4] > 2).all()


def test_critical_summary_on_a_grid(real_sweep):
    crit = critical_summary(real_sweep)
    assert np.allclose(crit["c_max"].values, 3.2)
    assert np.allclose(crit["c_fail"].values, 4.6)
    assert np.allclose(crit["c_catapult"].values, 2.6)
    assert np.isnan(crit["c_trivial"].values).all()
    gap = crit["gap_eq60"].values
    assert np.allclose(gap, 3.2 - real_sweep["bound_eq60"].values)
    text = summary_text(real_sweep)
    assert "catapult window (2, c_max): (2, 3.2)" in text
    assert "bound_eq60 (eq. 60, catapult)" in text


def test_critical_summary_reports_non_monotone_seeds():
    ds = synthetic_sweep([["converged_lazy", "diverged", "converged_catapult", "diverged"]],
                         [1.0, 3.0, 3.5, 4.0])
    crit = critical_summary(ds)
    assert crit["c_max"].item() == 1.0 and crit["c_fail"].item() == 3.0
    assert crit["converged_above"].item() == 1
    assert "converge again above c_fail" in summary_text(ds)


def test_accessor_is_registered_by_import_phasekit(real_sweep, tmp_path):
    assert hasattr(xr.Dataset, "phasekit") and phasekit.__version__
    xr.testing.assert_equal(real_sweep.phasekit.phases(), classify(real_sweep))
    assert "phase" in real_sweep.phasekit.add_phases()
    assert real_sweep.phasekit.config()["model"]["name"] == "quadratic"
    assert "critical learning rates" in real_sweep.phasekit.summary()
    assert set(real_sweep.phasekit.critical()) >= {"c_max", "c_fail", "gap_eq60"}
    with pytest.raises(SweepFileError):
        xr.Dataset().phasekit.phases()


def test_api_classify_writes_and_reads_paths(real_sweep, tmp_path):
    write_sweep(real_sweep, tmp_path / "in.nc")
    out = api.classify(tmp_path / "in.nc", output=tmp_path / "out.nc")
    assert "phase" in out and "phase" in api.load(tmp_path / "out.nc")


def test_analyze_command(real_sweep, tmp_path, capsys):
    path = tmp_path / "s.nc"
    write_sweep(real_sweep, path)
    assert analysis_main(["analyze", str(path)]) == 0
    assert "catapult window" in capsys.readouterr().out
    assert "phase" not in open_sweep(path)                 # nothing written by default
    assert analysis_main(["analyze", str(path), "-o", str(tmp_path / "p.nc")]) == 0
    assert "phase" in open_sweep(tmp_path / "p.nc")
    assert analysis_main(["analyze", str(path), "--in-place", "--catapult-factor", "3"]) == 0
    assert open_sweep(path)["phase"].attrs["catapult_factor"] == 3.0
    capsys.readouterr()
    assert analysis_main(["analyze", str(tmp_path / "missing.nc")]) == 2
    assert "phasekit: error:" in capsys.readouterr().err
    (tmp_path / "junk.nc").write_text("not netcdf")
    assert analysis_main(["analyze", str(tmp_path / "junk.nc")]) == 2
    assert analysis_main(["analyze", str(path), "--catapult-factor", "0.5"]) == 2


def test_analyze_stores_the_critical_rates_with_its_thresholds(real_sweep, tmp_path, capsys):
    path = tmp_path / "s.nc"
    write_sweep(real_sweep.drop_vars([v for v in real_sweep.data_vars
                                      if str(v).startswith("c_")]), path)
    assert analysis_main(["analyze", str(path), "-o", str(tmp_path / "a.nc"),
                          "--early-window", "5", "--sharpness-drop", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "early window: steps 1-5;" in out and "< 0.8 x its initial value" in out
    assert "c_loss, c_loss_below, c_sharp, c_sharp_below, c_max, c_fail" in out
    back = open_sweep(tmp_path / "a.nc")
    assert back["c_loss"].attrs["early_window"] == 5
    assert back["c_sharp"].attrs["sharpness_drop"] == 0.2
    np.testing.assert_array_equal(back["c_max"].values, [3.2, 3.2])
    np.testing.assert_array_equal(back["c_loss"].values, [2.6, 2.6])   # the catapults
    assert analysis_main(["analyze", str(path), "--sharpness-drop", "1.5"]) == 2
    assert "sharpness_drop must be a number in [0, 1), got 1.5" in capsys.readouterr().err
    assert analysis_main(["analyze", str(path), "--early-window", "0"]) == 2
