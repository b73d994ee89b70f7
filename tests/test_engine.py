"""The sweep engine: phases of figure 1, stopping rules, divergence isolation, observables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phasekit.config.resolve import resolve_config
from phasekit.engine.chunks import make_chunks
from phasekit.engine.engine import Engine, record_schedule
from phasekit.errors import ConfigError
from phasekit.io.netcdf import stored_config

from .helpers import sweep, toy_quadratic

FIG1 = {"model": {"name": "quadratic", "width": 1000, "eigen_low": 1.0, "eigen_high": 2.0},
        "dataset": {"name": "toy"}, "sweep": {}}


@pytest.fixture(scope="module")
def fig1_sweep():
    return sweep(FIG1, eta_lambda0=[0.5, 1.0, 1.5, 1.9, 2.5, 3.0, 3.5, 4.5, 5.0],
                 seeds=[0, 1, 2], max_steps=20000)


def test_fig1_phases(fig1_sweep):
    """Lazy below 2 (monotone loss), catapult for 2 < c < 4, divergent above ~4.2."""
    ds = fig1_sweep
    w0 = ds.weight_norm.isel(step=0)
    for c in ds.eta_lambda0.values:
        d = ds.sel(eta_lambda0=c)
        if c < 2:
            assert (d.status == "converged").all()
            for s in ds.seed.values:
                loss = d.loss.sel(seed=s).values[: int(d.steps.sel(seed=s)) + 1]
                assert np.all(np.diff(loss) <= 0), c
        elif c < 4:
            assert (d.status == "converged").all()
            assert (d.loss.max("step") > d.loss.isel(step=0)).all()      # the spike
            assert (d.final_weight_norm < w0).all()                       # theta^2_inf < theta^2_0
            assert (d.final_sharpness < 2).all()
        else:
            assert (d.status == "diverged").all()


def test_eq60_bound_near_expected(fig1_sweep):
    """For +/-U[1,2] and large n the eq. 60 bound sits near 4 E[l^2]/max l^2 = 2.33
    (docs/theory.md §3)."""
    b = fig1_sweep.bound_eq60.values
    assert np.all(np.abs(b - 7 / 3) < 0.1)
    assert np.all(fig1_sweep.bound_eq68.values > 4)


def test_trajectory_step_zero_is_initialisation(manager):
    raw = toy_quadratic(20, 1.0, 2.0)
    config, data = resolve_config(raw, manager)
    engine = Engine(config, data, manager)
    feats, theta0 = engine.model.setup(0, torch.device("cpu"), torch.float64)
    ds = sweep(raw, eta_lambda0=[0.5, 3.0], seeds=[0])
    z0, _ = engine.model.forward(feats, theta0[None])
    H0 = engine.model.ntk(feats, theta0[None], None)[0]
    lam0 = float(torch.linalg.eigvalsh(H0)[-1])
    assert float(ds.lambda0[0]) == pytest.approx(lam0, rel=1e-14)
    np.testing.assert_allclose(ds.weight_norm.isel(step=0), float((theta0 ** 2).sum()),
                               rtol=1e-14)
    np.testing.assert_allclose(ds.loss.isel(step=0), 0.5 * float(z0[0, 0]) ** 2, rtol=1e-14)
    np.testing.assert_allclose(ds.sharpness.isel(step=0), ds.eta_lambda0.values[None],
                               rtol=1e-12)
    np.testing.assert_allclose(ds.eta, ds.eta_lambda0.values[None] / lam0, rtol=1e-14)


def test_divergence_is_frozen_and_does_not_leak(manager):
    ds = sweep(toy_quadratic(50, 1.0, 2.0), eta_lambda0=[0.5, 2.5, 12.0], seeds=[0, 1],
               max_steps=5000)
    div = ds.sel(eta_lambda0=12.0)
    assert (div.status == "diverged").all()
    assert (div.steps < 50).all()
    for s in ds.seed.values:
        n = int(div.steps.sel(seed=s))
        assert np.isnan(div.loss.sel(seed=s).values[n + 1:]).all()  # frozen after the stop
    ok = ds.sel(eta_lambda0=[0.5, 2.5])
    assert (ok.status == "converged").all()
    for v in ("final_loss", "final_weight_norm", "final_sharpness"):
        assert np.isfinite(ok[v]).all()
    for s in ds.seed.values:
        for c in (0.5, 2.5):
            d = ok.sel(seed=s, eta_lambda0=c)
            n = int(d.steps)
            assert np.isfinite(d.loss.values[: n + 1]).all()


def test_divergence_threshold_and_max_steps(manager):
    raw = toy_quadratic(50, 1.0, 2.0)
    ds = sweep(raw, eta_lambda0=[3.0], seeds=[0], divergence_loss=1.0, max_steps=1000)
    assert ds.status.item() == "diverged"          # the catapult spike exceeds loss 1
    assert ds.final_loss.item() > 1.0
    ds = sweep(raw, eta_lambda0=[1.5], seeds=[0], max_steps=3, tol=0.0)
    assert ds.status.item() == "max_steps" and ds.steps.item() == 3


def test_stopping_rule_is_per_step_loss_change(manager):
    ds = sweep(toy_quadratic(50, 1.0, 2.0), eta_lambda0=[0.5], seeds=[0], tol=1e-8,
               record_dense=10_000)
    d = ds.isel(seed=0, eta_lambda0=0)
    n = int(d.steps)
    loss = d.loss.values
    assert abs(loss[n] - loss[n - 1]) < 1e-8
    assert np.all(np.abs(np.diff(loss[:n])) >= 1e-8)
    assert float(d.final_loss) == loss[n]


def test_record_schedule():
    s = record_schedule(10_000, 100, 20)
    assert list(s[:100]) == list(range(100))
    assert s[-1] == 10_000 and np.all(np.diff(s) > 0)
    assert len(s) < 100 + 20 * 2 + 3
    assert list(record_schedule(5, 200, 50)) == [0, 1, 2, 3, 4, 5]


def test_chunking_is_deterministic_and_covers_grid():
    sw = {"eta_lambda0": [1.0, 2.0, 3.0, 4.0, 5.0], "seeds": [3, 7], "chunk_size": 2}
    chunks = make_chunks(sw)
    assert [(c.seed, c.c_values) for c in chunks] == [
        (3, [1.0, 2.0]), (3, [3.0, 4.0]), (3, [5.0]), (7, [1.0, 2.0]), (7, [3.0, 4.0]),
        (7, [5.0])]


def test_float32(manager):
    ds = sweep(toy_quadratic(50, 1.0, 2.0), eta_lambda0=[0.5, 3.0], seeds=[0],
               dtype="float32", tol=1e-6)
    assert (ds.status == "converged").all()
    assert "float32" in ds.attrs["config"]


def test_cuda_requested_without_gpu_fails_cleanly(manager):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        sweep(toy_quadratic(10), device="cuda")


GPU_CONFIGS = [
    {"name": "quadratic", "width": 100, "eigen_low": 1.0, "eigen_high": 2.0},
    {"name": "quadratic_bias", "width": 40, "feature_width": 5},
    {"name": "homogeneous", "width": 64},
    {"name": "relu", "width": 64},
    {"name": "deep_relu", "width": 32, "hidden_layers": 2},
    {"name": "linear_bias", "width": 64},
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model", GPU_CONFIGS, ids=[m["name"] for m in GPU_CONFIGS])
@pytest.mark.parametrize("dataset", [{"name": "toy"},
                                     {"name": "random", "num_train": 8, "input_dim": 3,
                                      "num_test": 16}], ids=["toy", "random"])
def test_cuda_matches_cpu(manager, model, dataset):
    """Every built-in model runs on CUDA and agrees with the CPU (same draws,
    docs/theory.md §1)."""
    raw = {"model": model, "dataset": dataset, "sweep": {}}
    kw = dict(eta_lambda0=[0.5, 1.5], seeds=[0], max_steps=200, tol=0.0)
    cpu = sweep(raw, **kw)
    gpu = sweep(raw, device="cuda", **kw)
    assert (cpu.status.values == gpu.status.values).all()
    np.testing.assert_allclose(cpu.lambda0, gpu.lambda0, rtol=1e-9)
    for v in ("final_loss", "final_weight_norm", "final_sharpness"):
        np.testing.assert_allclose(cpu[v], gpu[v], rtol=1e-6, atol=1e-12)


SPAN_GPU_CONFIGS = [{"name": "homogeneous", "width": 64}, {"name": "relu", "width": 64},
                    {"name": "deep_relu", "width": 32, "hidden_layers": 1}]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model", SPAN_GPU_CONFIGS, ids=[m["name"] for m in SPAN_GPU_CONFIGS])
def test_cuda_span_coordinates_and_lanczos_match_cpu(manager, model):
    """D = 120 < d = 200: input-span coordinates and Lanczos sharpness (D > 100) on CUDA."""
    raw = {"model": model, "sweep": {},
           "dataset": {"name": "random", "num_train": 120, "input_dim": 200, "num_test": 16}}
    kw = dict(eta_lambda0=[0.5, 1.5], seeds=[0], max_steps=100, tol=0.0)
    cpu = sweep(raw, **kw)
    gpu = sweep(raw, device="cuda", **kw)
    assert stored_config(gpu)["model"]["input_span"] is True
    assert (cpu.status.values == gpu.status.values).all()
    for v in ("lambda0", "final_loss", "final_weight_norm", "final_sharpness", "final_test_loss"):
        np.testing.assert_allclose(cpu[v], gpu[v], rtol=1e-6, atol=1e-12)


def test_random_data_bounds_and_test_loss(manager):
    raw = {"model": {"name": "quadratic", "width": 60, "eigen_low": 0.9, "eigen_high": 1.1},
           "dataset": {"name": "random", "num_train": 8, "input_dim": 2, "num_test": 20},
           "sweep": {}}
    ds = sweep(raw, eta_lambda0=[0.5, 2.5], seeds=[0, 1], max_steps=300)
    assert {"bound_method1", "bound_method2"} <= set(ds.data_vars)
    assert "bound_eq60" not in ds
    assert ds.bound_method1.attrs["equation"] == "eq. 138"
    assert np.isfinite(ds.final_test_loss).all()
    assert ds.test_loss.dims == ("seed", "eta_lambda0", "step")


def test_method2_equals_eq60_for_one_point(manager):
    """With one datapoint e = 1 and psi_eff = psi, so method 2 reduces to eq. 60."""
    from phasekit_plugins.quadratic import effective

    psi = torch.randn(1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(effective(torch.ones(1, dtype=torch.float64), psi), psi[0])


def test_bias_model_teacher_student(manager):
    raw = {"model": {"name": "quadratic_bias", "width": 30, "feature_width": 4,
                     "activation": "tanh"},
           "dataset": {"name": "teacher_student", "teacher_width": 40,
                       "teacher_feature_width": 6, "student_width": 30,
                       "student_feature_width": 4, "num_train": 8, "num_test": 16},
           "sweep": {}}
    ds = sweep(raw, eta_lambda0=[0.5, 2.5], seeds=[0], max_steps=2000)
    assert "bound_eq163" in ds and "bias_norm" in ds and "test_loss" in ds
    assert ds.bound_eq163.attrs["kind"] == "catapult"


def test_observables_can_be_chosen(manager):
    raw = {"model": {"name": "quadratic", "width": 20},
           "dataset": {"name": "random", "num_train": 4, "num_test": 5}, "sweep": {}}
    assert "test_loss" in sweep(raw, eta_lambda0=[1.0], max_steps=50)
    ds = sweep(raw, eta_lambda0=[1.0], max_steps=50, observables=[])
    assert "test_loss" not in ds and "final_test_loss" not in ds and "loss" in ds
    with pytest.raises(ConfigError, match="unknown observable 'test_los'. Available: all, "):
        sweep(raw, observables=["test_los"])


def test_vanishing_ntk_at_init_is_a_clean_error(manager):
    with pytest.raises(ConfigError, match=r"lambda_max\(H_0\) = 0.0 for seed 0: the NTK vanishes"):
        sweep({**toy_quadratic(10), "dataset": {"name": "toy", "x": [0.0]}})
