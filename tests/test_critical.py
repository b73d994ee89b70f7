"""Critical learning rates from a stored grid (phasekit.analysis.phases.critical_rates): c_loss,
c_sharp, c_max and c_trivial on hand-made trajectories, with and without sweep axes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr

from phasekit.analysis.boundary import bracket, ended_trivial, not_converged
from phasekit.analysis.phases import (
    add_critical,
    add_phases,
    classify,
    critical_rates,
    critical_summary,
    early_thresholds,
    majority,
    phase_counts,
)
from phasekit.analysis.report import summary_text
from phasekit.errors import ConfigError, SweepFileError
from phasekit.io.netcdf import open_sweep, write_sweep

NAN = np.nan


# -- sweeps in the stored schema, from hand-made arrays -------------------------------

def make_sweep(status, loss=None, sharpness=None, *, cs, axes=None, steps=None,
               sweep_toml: str = "", step=None, bounds=None) -> xr.Dataset:
    """A sweep with ``status(*axes, seed, c)`` and trajectories ``(*axes, seed, c, step)``.

    ``steps`` defaults to the last step with a non-NaN loss (-1 for pending runs);
    ``axes`` maps a dimension name (``width``) to its values (option ``model.<name>``).
    """
    axes = dict(axes or {})
    status = np.asarray(status, dtype=object)
    traj = loss if loss is not None else sharpness
    traj = np.asarray(traj, dtype=float)
    step = np.arange(traj.shape[-1]) if step is None else np.asarray(step)
    if steps is None:
        seen = ~np.isnan(traj)
        last = traj.shape[-1] - 1 - np.argmax(seen[..., ::-1], axis=-1)
        steps = np.where(seen.any(-1), step[last], -1)
        steps = np.where(status == "pending", -1, steps)
    steps = np.asarray(steps, dtype=np.int64)
    grid = (*axes, "seed", "eta_lambda0")
    data = {"status": (grid, status.astype(str)), "steps": (grid, steps)}
    pos = np.clip(np.searchsorted(step, steps), 0, len(step) - 1)
    for name, arr in (("loss", loss), ("sharpness", sharpness)):
        if arr is not None:
            arr = np.asarray(arr, dtype=float)
            final = np.take_along_axis(arr, pos[..., None], -1)[..., 0]
            data[name] = (grid + ("step",), arr)
            data[f"final_{name}"] = (grid, np.where(steps >= 0, final, NAN))
    for name, (values, kind) in (bounds or {}).items():
        data[f"bound_{name}"] = (grid[:-1], values, {"kind": kind, "equation": f"eq. {name}",
                                                     "long_name": f"bound {name}"})
    coords = {"seed": np.arange(status.shape[len(axes)]), "eta_lambda0": np.asarray(cs, float),
              "step": step}
    for name, values in axes.items():
        coords[name] = (name, np.asarray(values), {"axis_key": f"model.{name}",
                                                   "long_name": f"model option {name}"})
    attrs = {"config": f'[model]\nname = "fake"\n\n[dataset]\nname = "toy"\n\n[sweep]\n'
                       f'{sweep_toml}\n', "phasekit_version": "0.1.0", "model": "fake",
             "dataset": "toy"}
    if axes:
        attrs["axes"] = " ".join(axes)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def runs(*rows):
    """Stack trajectories of one seed each into (seed, c, step), padding with NaN."""
    T = max(len(r) for row in rows for r in row)
    out = np.full((len(rows), len(rows[0]), T), NAN)
    for s, row in enumerate(rows):
        for j, r in enumerate(row):
            out[s, j, :len(r)] = r
    return out


T = 16
FLAT = np.ones(T)                         # L_t = L_0: not a rise (strictly above is needed)
DECAY = 0.5 ** np.arange(T)


def rise_at(t: int, stop: int = T - 1, value: float = 1.5) -> np.ndarray:
    """L_t = 1 except ``value`` at step t; NaN after ``stop``."""
    out = np.ones(T)
    out[t] = value
    out[stop + 1:] = NAN
    return out


# -- c_loss -------------------------------------------------------------------------

def test_c_loss_edges_of_the_window():
    cs = [1.0, 2.0, 3.0, 4.0]
    loss = runs(
        [DECAY, rise_at(11), rise_at(10), DECAY],        # rise at t = W = 10 counts, t = 11 not
        [DECAY, FLAT, DECAY, rise_at(1)],                # rise at the first step
        [rise_at(3), DECAY, DECAY, DECAY],               # the smallest c already rises
        [DECAY, DECAY, rise_at(15), rise_at(12)],        # only after the window: none
    )
    status = np.full(loss.shape[:2], "converged", dtype=object)
    ds = make_sweep(status, loss, cs=cs)
    crit = critical_rates(ds)
    assert crit["c_loss"].dims == ("seed",)
    np.testing.assert_array_equal(crit["c_loss"].values, [3.0, 4.0, 1.0, NAN])
    np.testing.assert_array_equal(crit["c_loss_below"].values, [2.0, 3.0, NAN, NAN])
    assert crit["c_loss"].attrs["early_window"] == 10
    assert "1..10" in crit["c_loss"].attrs["definition"]
    assert crit["c_loss"].attrs["units"] == "1"
    assert "(c_loss_below, c_loss]" in crit["c_loss"].attrs["resolution"]


def test_c_loss_only_while_the_run_was_running():
    cs = [1.0, 2.0, 3.0]
    stopped = rise_at(6, value=5.0)                        # a value at t = 6 ...
    loss = runs([DECAY, stopped, rise_at(2, stop=4)])
    status = np.array([["converged", "converged", "converged"]], dtype=object)
    # ... but the run stopped after 3 updates: t = 6 is not part of it
    ds = make_sweep(status, loss, cs=cs, steps=[[15, 3, 4]])
    assert critical_rates(ds)["c_loss"].item() == 3.0
    ds = make_sweep(status, loss, cs=cs, steps=[[15, 6, 4]])
    assert critical_rates(ds)["c_loss"].item() == 2.0


def test_a_divergence_within_the_window_is_a_rise():
    cs = [1.0, 2.0, 3.0, 4.0]
    blowup = np.array([1.0, 0.9, 0.8, NAN])                # non-finite loss at t = 3
    late = np.concatenate([DECAY[:12], [NAN]])             # diverged at t = 12 > W
    at_init = np.array([NAN])                              # diverged at step 0: no rise
    loss = runs([DECAY, at_init, blowup, DECAY], [DECAY, late, DECAY, blowup])
    status = np.array([["converged", "diverged", "diverged", "converged"],
                       ["converged", "diverged", "converged", "diverged"]], dtype=object)
    ds = make_sweep(status, loss, cs=cs, steps=[[15, 0, 3, 15], [15, 12, 15, 3]])
    np.testing.assert_array_equal(critical_rates(ds)["c_loss"].values, [3.0, 4.0])
    # a window of 2 steps no longer holds the divergence at t = 3
    np.testing.assert_array_equal(critical_rates(ds, early_window=2)["c_loss"].values,
                                  [NAN, NAN])


def test_loss_rise_threshold_is_strict():
    cs = [1.0, 2.0]
    loss = runs([DECAY, rise_at(4, value=1.25)])
    status = np.full((1, 2), "converged", dtype=object)
    ds = make_sweep(status, loss, cs=cs)
    assert critical_rates(ds)["c_loss"].item() == 2.0
    assert critical_rates(ds, loss_rise=0.2)["c_loss"].item() == 2.0
    assert np.isnan(critical_rates(ds, loss_rise=0.25)["c_loss"].item())   # 1.25 = (1+0.25) L_0
    assert critical_rates(ds, loss_rise=0.25)["c_loss"].attrs["loss_rise"] == 0.25


def test_pending_runs_and_all_nan_trajectories_never_qualify():
    cs = [1.0, 2.0, 3.0]
    loss = runs([rise_at(2), rise_at(2), rise_at(2)], [DECAY, np.full(T, NAN), rise_at(2)])
    status = np.array([["pending", "converged", "converged"],
                       ["converged", "converged", "pending"]], dtype=object)
    ds = make_sweep(status, loss, cs=cs, steps=[[-1, 15, 15], [15, 15, -1]])
    crit = critical_rates(ds)
    np.testing.assert_array_equal(crit["c_loss"].values, [2.0, NAN])
    np.testing.assert_array_equal(crit["c_loss_below"].values, [NAN, NAN])
    everything_nan = make_sweep(np.full((1, 2), "converged", dtype=object),
                                np.full((1, 2, T), NAN), cs=[1.0, 2.0], steps=[[5, 5]])
    assert np.isnan(critical_rates(everything_nan)["c_loss"].values).all()


# -- c_sharp ------------------------------------------------------------------------

def sharp(t: int, value: float, stop: int = T - 1) -> np.ndarray:
    """eta lambda_max(H_t) = 2 except ``value`` from step t on; NaN after ``stop``."""
    out = np.full(T, 2.0)
    out[t:] = value
    out[stop + 1:] = NAN
    return out


def test_c_sharp_threshold_window_and_stop():
    cs = [1.0, 2.0, 3.0, 4.0]
    sharpness = runs(
        [sharp(1, 1.95), sharp(10, 1.8), sharp(1, 1.0), sharp(1, 1.0)],  # 1.95 > 0.95 * 2
        [sharp(11, 1.0), sharp(4, 1.5), sharp(2, 1.49), sharp(1, 1.0)],
        [sharp(5, 1.0, stop=4), sharp(1, 2.5), sharp(1, 2.0), sharp(1, 0.0)],
    )
    status = np.full(sharpness.shape[:2], "converged", dtype=object)
    ds = make_sweep(status, sharpness=sharpness, cs=cs)
    crit = critical_rates(ds)
    assert "c_loss" not in crit                          # no loss trajectory stored
    np.testing.assert_array_equal(crit["c_sharp"].values, [2.0, 2.0, 4.0])
    np.testing.assert_array_equal(crit["c_sharp_below"].values, [1.0, 1.0, 3.0])
    # 1.5 = (1 - 0.25) * 2 is not below; 1.49 is
    strict = critical_rates(ds, sharpness_drop=0.25)
    np.testing.assert_array_equal(strict["c_sharp"].values, [3.0, 3.0, 4.0])
    assert strict["c_sharp"].attrs["sharpness_drop"] == 0.25
    assert "(1 - 0.25)" in strict["c_sharp"].attrs["definition"]


def test_thresholds_come_from_the_stored_config_then_the_defaults():
    cs = [1.0, 2.0, 3.0]
    loss = runs([DECAY, rise_at(7), rise_at(3)])
    status = np.full((1, 3), "converged", dtype=object)
    old = make_sweep(status, loss, cs=cs)
    assert early_thresholds(old) == {"early_window": 10, "sharpness_drop": 0.05,
                                     "loss_rise": 0.0}
    assert critical_rates(old)["c_loss"].item() == 2.0
    stored = make_sweep(status, loss, cs=cs, sweep_toml="early_window = 5\nloss_rise = 0.1\n"
                                                        "sharpness_drop = 0.2")
    assert early_thresholds(stored) == {"early_window": 5, "sharpness_drop": 0.2,
                                        "loss_rise": 0.1}
    assert critical_rates(stored)["c_loss"].item() == 3.0      # the rise at t = 7 is outside
    assert critical_rates(stored, early_window=7)["c_loss"].item() == 2.0
    assert critical_rates(stored).attrs["early_window"] == 5


@pytest.mark.parametrize("kwargs, word", [({"early_window": 0}, "early_window"),
                                          ({"early_window": 2.5}, "early_window"),
                                          ({"early_window": True}, "early_window"),
                                          ({"sharpness_drop": 1.0}, "sharpness_drop"),
                                          ({"sharpness_drop": -0.1}, "sharpness_drop"),
                                          ({"loss_rise": -1.0}, "loss_rise"),
                                          ({"loss_rise": np.inf}, "loss_rise")])
def test_bad_thresholds_are_config_errors(kwargs, word):
    ds = make_sweep(np.full((1, 2), "converged", dtype=object), runs([DECAY, DECAY]),
                    cs=[1.0, 2.0])
    with pytest.raises(ConfigError, match=word):
        critical_rates(ds, **kwargs)


def test_a_window_without_recorded_steps_leaves_c_loss_and_c_sharp_out():
    loss = np.array([[[1.0, 0.5, 0.25]]])
    ds = make_sweep([["converged"]], loss, sharpness=loss, cs=[1.0], step=[0, 20, 40],
                    steps=[[40]])
    crit = critical_rates(ds)
    assert "c_loss" not in crit and "c_sharp" not in crit and "c_max" in crit


# -- c_max, c_fail, c_trivial: the bracket rule of phasekit boundary ---------------------

STATUSES = ("converged", "diverged", "trivial", "max_steps", "pending")


def test_c_max_and_c_trivial_follow_the_boundary_bracket_on_every_pattern():
    cs = [0.5, 1.0, 2.0, 3.5]
    patterns = list(itertools.product(STATUSES, repeat=len(cs)))
    status = np.array(patterns, dtype=object)                      # one "seed" per pattern
    ds = make_sweep(status, np.ones((len(patterns), len(cs), 3)), cs=cs,
                    steps=np.where(status == "pending", -1, 2))
    crit = critical_rates(ds)
    for s, pattern in enumerate(patterns):
        ev = {c: st for c, st in zip(cs, pattern, strict=True) if st != "pending"}
        lo, hi = bracket(ev, not_converged)
        want_max = NAN if hi is None or lo is None else lo
        assert np.array_equal(crit["c_max"].values[s], want_max, equal_nan=True), pattern
        assert np.array_equal(crit["c_fail"].values[s], NAN if hi is None else hi,
                              equal_nan=True), pattern
        tlo, thi = bracket(ev, ended_trivial)
        assert np.array_equal(crit["c_trivial"].values[s], NAN if thi is None else thi,
                              equal_nan=True), pattern
        assert np.array_equal(crit["c_trivial_below"].values[s],
                              NAN if thi is None or tlo is None else tlo, equal_nan=True)


def test_c_max_below_the_first_failure_of_a_non_monotone_seed():
    status = np.array([["converged", "converged", "diverged", "converged", "trivial"]],
                      dtype=object)
    ds = make_sweep(status, np.ones((1, 5, 3)), cs=[1.0, 2.0, 3.0, 4.0, 5.0])
    crit = critical_summary(ds)
    assert crit["c_max"].item() == 2.0 and crit["c_fail"].item() == 3.0
    assert crit["c_trivial"].item() == 5.0 and crit["c_trivial_below"].item() == 4.0
    assert crit["converged_above"].item() == 1
    assert "[c_max, c_fail)" in crit["c_max"].attrs["resolution"]


# -- sweeps with axes ---------------------------------------------------------------

def two_axis_sweep() -> xr.Dataset:
    """hidden_layers x width x 2 seeds x 5 c; the loss rises from c_loss(point, seed)
    = 2 + hidden_layers * 64 / width (+ 0.5 for seed 1) on, the sharpness drops from
    c = 2 on, runs diverge from 4 + hidden_layers on."""
    depth, width = np.array([1, 2]), np.array([64, 128, 256])
    cs = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    onset = 2 + depth[:, None, None] * 64 / width[None, :, None] + np.array([0.0, 0.5])
    c = cs[None, None, None, :]
    t = np.arange(T)
    rises = (c >= onset[..., None])[..., None]
    loss = np.where(rises, 1 + 0.1 * t, 0.9 ** t)                     # (d, w, s, c, t)
    sharpness = np.where((c >= 2)[..., None], 2.0 - 0.1 * t, 2.0) * np.ones_like(loss)
    fails = c >= 4 + depth[:, None, None, None]
    status = np.where(fails, "diverged", "converged") * np.ones(onset.shape + (1,), dtype=object)
    loss = np.where(fails[..., None] & (t > 12), NAN, loss)
    bounds = {"b60": (2.0 + 0.01 * depth[:, None, None] * np.ones((2, 3, 2)), "catapult"),
              "b68": (np.where(depth[:, None, None] == 1, 4.0, NAN) * np.ones((2, 3, 2)),
                      "divergence")}
    return make_sweep(status, loss, sharpness, cs=cs, axes={"hidden_layers": depth,
                                                            "width": width}, bounds=bounds)


def test_axes_give_critical_rates_per_axis_point():
    ds = two_axis_sweep()
    crit = critical_rates(ds)
    for name in ("c_loss", "c_sharp", "c_max", "c_fail", "c_trivial"):
        assert crit[name].dims == ("hidden_layers", "width", "seed"), name
    np.testing.assert_array_equal(crit["width"].values, [64, 128, 256])
    # c_loss = first grid c >= 2 + d * 64 / w (+ 0.5 for seed 1)
    want = np.array([[[3.0, 4.0], [3.0, 3.0], [3.0, 3.0]],
                     [[4.0, 5.0], [3.0, 4.0], [3.0, 3.0]]])
    np.testing.assert_array_equal(crit["c_loss"].values, want)
    assert (crit["c_sharp"].values == 2.0).all()
    np.testing.assert_array_equal(crit["c_max"].values[:, 0, 0], [4.0, 5.0])
    np.testing.assert_array_equal(crit["c_fail"].values[:, 0, 0], [5.0, 6.0])
    # depth 2, width 64, seed 1: its loss rises first at c = 5 > c_max
    assert crit["c_loss"].values[1, 0, 1] == 5.0
    # the same numbers as each axis point analysed on its own
    for d, w in itertools.product(range(2), range(3)):
        one = ds.isel(hidden_layers=d, width=w)
        alone = critical_rates(one)
        assert alone["c_loss"].dims == ("seed",)
        xr.testing.assert_equal(alone["c_loss"].drop_vars(["hidden_layers", "width"]),
                                crit["c_loss"].isel(hidden_layers=d, width=w)
                                .drop_vars(["hidden_layers", "width"]))
    # a selected axis is no longer an axis
    assert critical_rates(ds.sel(width=128))["c_max"].dims == ("hidden_layers", "seed")


def test_axes_dims_need_not_come_in_config_order():
    ds = two_axis_sweep()
    shuffled = ds.transpose("seed", "width", "eta_lambda0", "hidden_layers", "step")
    xr.testing.assert_equal(critical_rates(shuffled), critical_rates(ds))


def test_classify_and_summary_with_axes():
    ds = two_axis_sweep()
    phase = classify(ds)
    assert phase.dims == ("hidden_layers", "width", "seed", "eta_lambda0")
    assert (phase.sel(hidden_layers=1, eta_lambda0=6.0) == "divergent").all()
    assert phase.sel(hidden_layers=2, width=64, seed=1, eta_lambda0=4.0) == "lazy"
    crit = critical_summary(ds)
    assert crit["gap_b60"].dims == ("hidden_layers", "width", "seed")
    np.testing.assert_allclose(crit["gap_b60"].values, crit["c_max"].values - 2.0
                               - 0.01 * np.array([1, 2])[:, None, None])
    assert np.isnan(crit["gap_b68"].sel(hidden_layers=2)).all()
    text = summary_text(ds)
    assert ("sweep axes: hidden_layers (model.hidden_layers) = 1, 2; width (model.width) = "
            "64, 128, 256") in text
    assert ("hidden_layers=2 width=64: lazy 1-4, catapult 5, divergent 6 (seeds disagree "
            "at 1 c)") in text
    assert "early window: steps 1-10" in text
    row = next(line.split() for line in text.splitlines()
               if line.split()[:2] == ["2", "64"])
    assert row[2:5] == ["4.5+/-0.71", "2", "5"]               # c_loss, c_sharp, c_max


def test_phase_majority_breaks_ties_in_phase_order():
    phase = xr.DataArray([["lazy", "catapult"], ["catapult", "catapult"], ["pending", "pending"],
                          ["divergent", "pending"]], dims=("c", "seed"))
    names, disagree = majority(phase_counts(phase, "seed").values)
    assert list(names) == ["lazy", "catapult", "pending", "divergent"]
    assert list(disagree) == [True, False, False, False]


def test_add_critical_is_robust_and_survives_netcdf(tmp_path):
    ds = two_axis_sweep()
    out = add_critical(ds)
    for name in ("c_loss", "c_loss_below", "c_sharp", "c_max", "c_fail", "c_trivial"):
        assert out[name].dims == ("hidden_layers", "width", "seed"), name
    write_sweep(out, tmp_path / "s.nc")
    back = open_sweep(tmp_path / "s.nc")
    xr.testing.assert_identical(back["c_loss"], out["c_loss"])
    no_sharp = add_critical(ds.drop_vars(["sharpness", "final_sharpness"]))
    assert "c_sharp" not in no_sharp and "c_loss" in no_sharp
    neither = add_critical(ds.drop_vars(["sharpness", "final_sharpness", "loss",
                                         "final_loss"]))
    assert {"c_max", "c_trivial"} <= set(neither) and "c_loss" not in neither
    with pytest.raises(SweepFileError, match="status"):
        add_critical(ds.drop_vars("status"))
    # phases with axes survive too
    assert add_phases(out)["phase"].dims == ("hidden_layers", "width", "seed", "eta_lambda0")


def test_a_boundary_file_keeps_its_refined_values():
    status = np.array([["converged", "converged", "diverged"]], dtype=object)
    ds = make_sweep(status, runs([DECAY, rise_at(3), DECAY]), cs=[1.0, 2.0, 3.0])
    ds["c_max"] = ("seed", [2.7])
    ds["c_fail"] = ("seed", [2.71])
    ds["c_trivial"] = ("seed", [NAN])
    ds["c_loss"] = ("seed", [1.55])
    ds.attrs["boundary_tol"] = 0.01
    out = add_critical(ds)
    assert out["c_max"].item() == 2.7 and out["c_fail"].item() == 2.71
    assert out["c_loss"].item() == 1.55
    assert out["c_loss_below"].item() == 1.0       # not stored by the search: the grid's
    crit = critical_summary(ds)
    assert crit["c_max"].item() == 2.7 and crit["c_loss"].item() == 1.55
    text = summary_text(ds)                        # its c_loss carries no threshold attributes
    assert "c_loss: 1.55" in text and "c_loss: L_t > (1 + 0) L_0" in text
    del ds.attrs["boundary_tol"]                   # an ordinary file: recomputed on the grid
    assert add_critical(ds)["c_max"].item() == 2.0
    assert add_critical(ds)["c_loss"].item() == 2.0


def test_c_loss_of_a_wide_quadratic_model_is_two():
    """Pure quadratic model, one point: the lazy update z_(t+1) ~ (1 - c) z_t makes the
    loss grow from the first steps just above c = 2 and fall just below it."""
    from .helpers import sweep, toy_quadratic

    ds = sweep(toy_quadratic(width=600, seeds=[0, 1, 2], eta_lambda0=[1.98, 2.02],
                             max_steps=12))
    crit = critical_rates(ds)
    np.testing.assert_array_equal(crit["c_loss"].values, [2.02, 2.02, 2.02])
    np.testing.assert_array_equal(crit["c_loss_below"].values, [1.98, 1.98, 1.98])
