"""Sweep configuration: TOML files, presets, ``--set`` overrides and validation.

A config has three tables::

    [model]            # name = a registered model, plus that model's options
    [dataset]          # name = a registered dataset, plus its options
    [sweep]            # the grid and the training loop (SWEEP_OPTIONS)

Everything is validated before any training starts: unknown keys, wrong types,
out-of-range values and unknown plugin names raise :class:`ConfigError` with a
message naming the key.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import Data
from .manager import PluginManager
from .options import ConfigError, Option, non_negative, positive, resolve_options
from .spectrum import LANCZOS_ABOVE_D, SOLVERS

TABLES = ("model", "dataset", "sweep")

SWEEP_OPTIONS: dict[str, Option] = {
    "eta_lambda0": Option(
        [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0],
        "normalised learning rates c = eta * lambda_max(H_0): a list, or a table "
        "{start, stop, num} for evenly spaced values (both ends included)", type=list),
    "seeds": Option([0], "random seeds: a list of integers, or a count n for 0..n-1",
                    type=list),
    "max_steps": Option(10000, "gradient-descent steps after which a run stops (status "
                        "max_steps)", check=positive),
    "tol": Option(1e-8, "a run has converged when |L_t - L_(t-1)| < tol (the paper's rule); "
                  "0 never stops early", check=non_negative),
    "divergence_loss": Option(1e10, "a run has diverged once its loss is non-finite or "
                              "above this value", check=positive),
    "device": Option("cpu", "torch device: cpu or cuda (cuda:N)"),
    "dtype": Option("float64", "floating-point type of the computation",
                    choices=("float64", "float32")),
    "chunk_size": Option(0, "grid points (learning rates of one seed) advanced together; "
                         "0 = all learning rates of a seed in one chunk, or as many as fit "
                         "memory_budget", check=non_negative),
    "memory_budget": Option(0.0, "GiB a chunk may use on the device (estimated from the "
                            "model); with chunk_size = 0 the chunk size becomes the most runs "
                            "that fit, and is stored; 0 = no budget", check=non_negative),
    "threads": Option(1, "torch threads per process while training; matrix-product rounding "
                      "depends on it, so runs are bit-identical across resume and Dask workers "
                      "at equal threads (0 = torch's default); use --workers to spread the grid "
                      "over cores", check=non_negative),
    "observables": Option(["all"], "observables to record besides loss, weight norm and "
                          "sharpness: [\"all\"] (every one that applies), [] (none) or a list "
                          "of names", type=list, item=str),
    "record_dense": Option(200, "trajectories are recorded at every step t < record_dense",
                           check=non_negative),
    "record_per_decade": Option(50, "after record_dense, recorded steps are log-spaced with "
                                "this many per decade", check=non_negative),
    "sharpness_solver": Option("auto", "how lambda_max(H_t) of the recorded sharpness is "
                               "computed: eigvalsh (O(D^3)), lanczos (certified to a relative "
                               "residual of 1e-10 in float64, 1e-5 in float32, O(k D^2)) or auto "
                               f"(lanczos above D = {LANCZOS_ABOVE_D}); lambda_max(H_0) "
                               "always uses eigvalsh", choices=SOLVERS),
}


@dataclass
class ResolvedConfig:
    """A fully validated config with every default filled in."""

    model: dict[str, Any]      # includes "name"
    dataset: dict[str, Any]    # includes "name"
    sweep: dict[str, Any]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"model": dict(self.model), "dataset": dict(self.dataset),
                "sweep": dict(self.sweep)}

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


# -- reading and merging -----------------------------------------------------------

def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def merge(base: Mapping, override: Mapping) -> dict:
    """Deep-merge two config mappings; ``override`` wins."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(assignment: str) -> dict:
    """Turn ``sweep.max_steps=200`` into ``{"sweep": {"max_steps": 200}}``.

    The value is read as a TOML value; a bare word that is not valid TOML is
    taken as a string (so ``--set model.name=quadratic`` works).
    """
    if "=" not in assignment:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. sweep.max_steps=200), "
                          f"got {assignment!r}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set key must be TABLE.KEY with TABLE one of "
                          f"{', '.join(TABLES)}; got {key!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return {parts[0]: {parts[1]: value}}


# -- validation --------------------------------------------------------------------

def _grid(value: Any) -> list[float]:
    key = "sweep.eta_lambda0"
    if isinstance(value, Mapping):
        unknown = set(value) - {"start", "stop", "num"}
        if unknown or set(value) != {"start", "stop", "num"}:
            raise ConfigError(f"{key} as a table needs exactly start, stop and num; "
                              f"got {sorted(value)}")
        num = value["num"]
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ConfigError(f"{key}.num must be a positive integer, got {num!r}")
        start, stop = float(value["start"]), float(value["stop"])
        if num == 1:
            return [start]
        return [start + (stop - start) * i / (num - 1) for i in range(num)]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a non-empty list of numbers or a table "
                          f"{{start, stop, num}}, got {value!r}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{key}[{i}] must be a number, got {v!r}")
        out.append(float(v))
    for v in out:
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{key} values must be positive and finite, got {v!r}")
    if len(set(out)) != len(out):
        raise ConfigError(f"{key} has repeated values: {out}")
    return out


def _seeds(value: Any) -> list[int]:
    key = "sweep.seeds"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{key} as a count must be at least 1, got {value}")
        return list(range(value))
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a non-empty list of integers or a count, "
                          f"got {value!r}")
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{key}[{i}] must be a non-negative integer, got {s!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key} has repeated seeds: {list(value)}")
    return list(value)


def resolve_sweep(table: Mapping[str, Any]) -> dict[str, Any]:
    table = dict(table)
    special = {k: table.pop(k) for k in ("eta_lambda0", "seeds") if k in table}
    plain = {k: v for k, v in SWEEP_OPTIONS.items() if k not in ("eta_lambda0", "seeds")}
    out = resolve_options("sweep", plain, table)
    out["eta_lambda0"] = _grid(special.get("eta_lambda0", SWEEP_OPTIONS["eta_lambda0"].default))
    out["seeds"] = _seeds(special.get("seeds", SWEEP_OPTIONS["seeds"].default))
    device = out["device"]
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"sweep.device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    order = list(SWEEP_OPTIONS)
    return {k: out[k] for k in order}


def resolve_config(raw: Mapping[str, Any], manager: PluginManager
                   ) -> tuple[ResolvedConfig, Data]:
    """Validate ``raw`` and build the dataset; nothing is trained here.

    Returns the resolved config (defaults filled in, ready to be stored) and
    the loaded :class:`~phasekit.dataset.Data`.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("a config must be a table with [model], [dataset] and [sweep]")
    for table in raw:
        if table not in TABLES:
            raise ConfigError(f"unknown table [{table}]; a config has the tables "
                              f"{', '.join(f'[{t}]' for t in TABLES)}")
        if not isinstance(raw[table], Mapping):
            raise ConfigError(f"[{table}] must be a table")
    sweep = resolve_sweep(raw.get("sweep", {}))

    def plugin_table(kind: str) -> tuple[type, dict]:
        table = dict(raw.get(kind, {}))
        if "name" not in table:
            available = ", ".join(sorted(getattr(manager, f"{kind}s")()))
            raise ConfigError(f"{kind}.name is required. Available: {available}.")
        name = table.pop("name")
        if not isinstance(name, str):
            raise ConfigError(f"{kind}.name must be a string, got {name!r}")
        cls = manager.get(kind, name)
        return cls, resolve_options(kind, cls.options, table)

    known = set(manager.observables())
    for name in sweep["observables"]:
        if name != "all" and name not in known:
            raise ConfigError(f"sweep.observables: unknown observable '{name}'. Available: "
                              f"all, {', '.join(sorted(known))}.")
    dataset_cls, dataset_settings = plugin_table("dataset")
    model_cls, model_settings = plugin_table("model")
    data = dataset_cls(dataset_settings).load()
    model_settings = model_cls.resolve(model_settings, data)
    resolved = ResolvedConfig(model={"name": model_cls.name, **model_settings},
                              dataset={"name": dataset_cls.name, **dataset_settings},
                              sweep=sweep)
    if sweep["memory_budget"]:
        from .memory import apply_memory_budget

        resolved = apply_memory_budget(resolved, data, manager)
    return resolved, data


# -- writing TOML --------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """Write a config of flat tables as TOML (``None`` values are omitted)."""
    lines = []
    for table, values in config.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
