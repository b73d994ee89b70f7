"""Helpers shared by the tests."""

from __future__ import annotations

import numpy as np

from phasekit.analysis.phases import add_critical
from phasekit.config.registry import get_plugin_manager
from phasekit.config.resolve import merge, resolve_config
from phasekit.engine.points import PointEngines
from phasekit.io.parts import PartStore, chunk_key
from phasekit.runner.execute import execute


def sweep(raw: dict, manager=None, **sweep_overrides):
    """Resolve and run a config mapping; ``sweep_overrides`` go into [sweep]."""
    manager = manager or get_plugin_manager()
    raw = merge(raw, {"sweep": sweep_overrides}) if sweep_overrides else raw
    config, data = resolve_config(raw, manager)
    return execute(config, data, manager, derive=add_critical)


def toy_quadratic(width=100, low=1.0, high=2.0, zeta=None, activation="identity", **sweep_kw):
    model = {"name": "quadratic", "width": width, "eigen_low": low, "eigen_high": high,
             "activation": activation}
    if zeta is not None:
        model["zeta"] = zeta
    return {"model": model, "dataset": {"name": "toy"}, "sweep": sweep_kw}


#: a few units in the last place of float64: the resolution of a change of theta^2
ULP = 8 * np.finfo(np.float64).eps


def dense(raw, c, seed, max_steps=400):
    """One run (``seed``, ``c``) recorded at every step, as a dataset without grid axes."""
    return sweep(raw, eta_lambda0=[c], seeds=[seed], max_steps=max_steps,
                 record_dense=max_steps + 1).isel(seed=0, eta_lambda0=0)


def check_monotone(values: np.ndarray, predicted: np.ndarray, scale: np.ndarray, sign: int):
    """values[t+1] - values[t] has the sign of ``sign`` wherever the predicted change
    is resolvable in float64, and never the wrong way beyond rounding."""
    delta = np.diff(values)
    resolvable = np.abs(predicted) > ULP * scale
    assert np.all(np.sign(predicted[resolvable]) == sign)
    assert np.all(sign * delta[resolvable] > 0), (delta, predicted)
    assert np.all(sign * delta >= -ULP * scale)


def eq12_series(d) -> tuple[np.ndarray, np.ndarray]:
    """theta^2_t over the finite part of a one-point (y = 0) run, and the change eq. 12
    predicts for each step, eta z_t^2 (eta H_t - 4) with z^2 = 2L and eta H_t = sharpness."""
    n = int(d.steps)
    w, loss, sharp = (d[v].values[: n + 1] for v in ("weight_norm", "loss", "sharpness"))
    ok = np.isfinite(w) & np.isfinite(sharp) & np.isfinite(loss)
    last = int(np.flatnonzero(ok).max())
    w, loss, sharp = w[: last + 1], loss[: last + 1], sharp[: last + 1]
    return w, float(d.eta) * 2 * loss[:-1] * (sharp[:-1] - 4)


def stored(path):
    """A written sweep as the dataset that was written: ``open_sweep`` without the
    ``history`` attribute, the one thing a write adds (when, and by which command)."""
    from phasekit.io.netcdf import open_sweep

    ds = open_sweep(path)
    del ds.attrs["history"]
    return ds


def killed_run(config, data, manager, output, saved, overwrite: bool = False) -> PartStore:
    """Leave ``output``'s parts folder as a run of ``config`` killed after saving the chunks
    for which ``saved(chunk)`` is true: each is computed as that run computes it, in the
    config's batch (``PointEngines.batches``; the batches holding no such chunk are not
    trained).  ``overwrite``: the run was ``--overwrite``, so other parts are discarded."""
    store = PartStore(output)
    store.open(config.to_toml(), overwrite=overwrite)
    engines = PointEngines(config, data, manager)
    for batch in engines.batches(engines.chunks()):
        if any(saved(c) for c in batch):
            for result in engines[batch[0].point].run_batch(
                    batch, prepared=engines.prepared_batch(batch)):
                if saved(result.chunk):
                    store.save(result)
    return store


def unfinished_batches(config, data, manager, saved) -> list[str]:
    """The keys of the chunks a resumed run trains when the chunks ``saved(chunk)`` are
    stored: every chunk of each batch that misses one (``phasekit.runner.execute``)."""
    engines = PointEngines(config, data, manager)
    return [chunk_key(c) for batch in engines.batches(engines.chunks())
            if not all(saved(c) for c in batch) for c in batch]
