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
import itertools
import math
import os
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from phasekit.config.limits import check_sweep_size
from phasekit.config.registry import PluginManager, get_plugin_manager
from phasekit.dataset import Data
from phasekit.errors import ConfigError, toml_value
from phasekit.options import Option, non_negative, positive, resolve_options, unknown_key_message

TABLES = ("model", "dataset", "sweep")

#: the values of ``sweep.normalize``: the eigenvalue at initialisation that c = eta * lambda
#: is measured in (phasekit.engine.hessian.c_unit)
NORMALIZATIONS = ("ntk", "hessian")
#: how the recorded sharpness's lambda_max is computed (:mod:`phasekit.engine.spectrum`)
SOLVERS = ("auto", "eigvalsh", "lanczos")

#: above this D, ``auto`` uses Lanczos (measured crossover on a 2-core CPU; docs/performance.md)
LANCZOS_ABOVE_D = 100

SWEEP_OPTIONS: dict[str, Option] = {
    "eta_lambda0": Option(
        [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0],
        "normalised learning rates c = eta * lambda_max(H_0) (eta * lambda^H_0 with "
        "normalize = \"hessian\"): a list, or a table "
        "{start, stop, num} for evenly spaced values (both ends included)", type=list),
    "seeds": Option([0], "random seeds: a list of integers, or a count n for 0..n-1",
                    type=list),
    "axes": Option({}, "phase-diagram axes: a table mapping model or dataset options to "
                   "lists of values, e.g. {\"model.width\" = [64, 256, 1024]}; each becomes a "
                   "dimension of the stored sweep, named after the option, and several axes "
                   "form their product (docs/phases.md)", type=dict),
    "max_steps": Option(10000, "gradient-descent steps after which a run stops (status "
                        "max_steps)", check=positive),
    "tol": Option(1e-8, "a run has converged when |L_t - L_(t-1)| < tol (the paper's rule); "
                  "0 never stops early", check=non_negative),
    "divergence_loss": Option(1e10, "a run has diverged once its loss is non-finite or "
                              "above this value", check=positive),
    "device": Option("cpu", "torch device: cpu or cuda (cuda:N)"),
    "dtype": Option("float64", "floating-point type of the computation",
                    choices=("float64", "float32")),
    "chunk_size": Option(0, "grid points (learning rates of one seed at one axis point) "
                         "advanced together; 0 = all learning rates of a seed in one chunk, or "
                         "as many as fit memory_budget", check=non_negative),
    "seed_batch": Option(0, "seeds trained together in one batch where the model can stack "
                         "their fixed objects (Model.can_stack_seeds: the networks, linear_bias, "
                         "the pure quadratic model on one training point); 0 = every seed of "
                         "an axis point as far as the batch fits memory_budget (1 GiB "
                         "without one); the results depend on it only within the bound of "
                         "docs/scale.md (phasekit.engine.batched.BATCH_RTOL per step)",
                         check=non_negative),
    "memory_budget": Option(0.0, "GiB a chunk may use on the device (estimated from the "
                            "model at each axis point); with chunk_size = 0 each axis point's "
                            "chunks hold the most runs that fit; 0 = no budget",
                            check=non_negative),
    "threads": Option(1, "torch threads per process while training; matrix-product rounding "
                      "depends on it, so runs are bit-identical across resume and Dask workers "
                      "at equal threads (0 = torch's default); use --workers to spread the grid "
                      "over cores", check=non_negative),
    "observables": Option(["all"], "observables to record besides loss, weight norm and "
                          "sharpness: [\"all\"] (every one that applies, except opt-in ones "
                          "such as hessian_sharpness, recorded only by name), [] (none) or a list "
                          "of names", type=list, item=str),
    "record_dense": Option(200, "trajectories are recorded at every step t < record_dense",
                           check=non_negative),
    "record_per_decade": Option(50, "after record_dense, recorded steps are log-spaced with "
                                "this many per decade", check=non_negative),
    "early_window": Option(10, "steps t = 1..early_window that count as early training for the "
                           "critical learning rates c_loss and c_sharp (docs/phases.md); must be "
                           "recorded at every step (early_window < record_dense)",
                           check=positive),
    "loss_rise": Option(0.0, "c_loss: the loss counts as risen when L_t > (1 + loss_rise) L_0 "
                        "for some t in the early window", check=non_negative),
    "sharpness_drop": Option(0.05, "c_sharp: the sharpness counts as reduced when it falls below "
                             "(1 - sharpness_drop) times its initial value within the early "
                             "window", check=lambda v: None if 0 <= v < 1 else
                             "must be in [0, 1)"),
    "sharpness_solver": Option("auto", "how lambda_max(H_t) of the recorded sharpness is "
                               "computed: eigvalsh (O(D^3)), lanczos (certified to a relative "
                               "residual of 1e-10 in float64, 1e-5 in float32, O(k D^2)) or auto "
                               f"(lanczos above D = {LANCZOS_ABOVE_D}); lambda_max(H_0) "
                               "always uses eigvalsh", choices=SOLVERS),
    "normalize": Option("ntk", "what c = eta_lambda0 is measured in: ntk (c = eta lambda_0, "
                        "lambda_0 the NTK's top eigenvalue at initialisation) or hessian (c = "
                        "eta lambda^H_0, lambda^H_0 the loss Hessian's, stored as "
                        "lambda0_hessian; bounds are then stored as eta_bound lambda^H_0); "
                        "docs/theory.md §1", choices=NORMALIZATIONS),
    "hessian": Option(False, "store lambda0_hessian, the loss Hessian's top eigenvalue at "
                      "initialisation, with sweep.normalize = \"ntk\" too (Hessian-vector "
                      "products and Lanczos, per seed); always stored with normalize = "
                      "\"hessian\"", type=bool),
    "batch_size": Option(0, "training points per update: 0 = full-batch gradient descent; "
                         "B > 0 = mini-batch SGD, each epoch visiting the training set in "
                         "batches of B drawn without replacement, in an order set by the "
                         "run's seed alone (every c of a seed sees the same batches); "
                         "stopping, the loss and the sharpness stay full-batch "
                         "(docs/phases.md)", check=non_negative),
}


@dataclass
class ResolvedConfig:
    """A fully validated config with every default filled in.

    ``model``, ``dataset`` and ``sweep`` are what is stored with the sweep (and
    re-resolve to themselves).  ``points`` lists the sweep's axis points
    (:class:`AxisPoint`): one per combination of ``sweep.axes`` values, or a single
    point without axes.  They are derived, never stored.
    """

    model: dict[str, Any]      # includes "name"
    dataset: dict[str, Any]    # includes "name"
    sweep: dict[str, Any]
    points: list[AxisPoint] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"model": dict(self.model), "dataset": dict(self.dataset),
                "sweep": dict(self.sweep)}

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    @property
    def axes(self) -> dict[str, list]:
        """``sweep.axes``: option key (``"model.width"``) -> its values, in config order."""
        return self.sweep.get("axes", {})

    @property
    def axis_dims(self) -> list[str]:
        """The dataset dimension of each axis: the option's name (``width``)."""
        return [key.split(".", 1)[1] for key in self.axes]

    @property
    def axis_shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())


@dataclass
class AxisPoint:
    """One point of the product of the sweep's axes.

    ``config`` is the one-point config (no axes) that a separate sweep with the
    axis values written into ``[model]``/``[dataset]`` resolves to, so running it
    gives that sweep's results; ``data`` is its dataset.
    """

    index: int                     # position in the flattened product (C order)
    values: dict[str, Any]         # axis key -> resolved value
    config: ResolvedConfig
    data: Data


# -- reading and merging -----------------------------------------------------------

#: longest grid a config may ask for along one axis (learning rates, seeds, axis values);
#: far more than any phase diagram needs, and small enough to be refused at once
MAX_GRID = 100_000
#: largest config file read (a config is a few hundred bytes)
MAX_CONFIG_BYTES = 1 << 20


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config file {path} is not a regular file; give a TOML file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} has {info.st_size} bytes; a config is a "
                              f"small TOML file (at most {MAX_CONFIG_BYTES} bytes)")
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
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


def parse_assignment(assignment: str) -> tuple[list[str], Any]:
    """Read ``sweep.max_steps=200`` as the key path ``["sweep", "max_steps"]`` and the
    value ``200``.

    The key is a TOML dotted key ``TABLE.KEY``, or ``sweep.axes."model.width"`` for
    an axis; the value is read as a TOML value, and a bare word that is not valid
    TOML is taken as a string (so ``--set model.name=quadratic`` works).
    """
    if "=" not in assignment:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. sweep.max_steps=200), "
                          f"got {assignment!r}")
    key, raw = assignment.split("=", 1)
    path = _key_path(key.strip())
    is_axis = len(path) == 3 and path[:2] == ["sweep", "axes"]
    if not (len(path) == 2 and path[0] in TABLES or is_axis):
        raise ConfigError(f"--set key must be TABLE.KEY with TABLE one of "
                          f"{', '.join(TABLES)} (or sweep.axes.\"model.KEY\" for an axis); "
                          f"got {key.strip()!r}")
    return path, _parse_value(raw)


def parse_set(assignment: str) -> dict:
    """Turn ``sweep.max_steps=200`` into ``{"sweep": {"max_steps": 200}}``
    (:func:`parse_assignment`)."""
    path, value = parse_assignment(assignment)
    for part in reversed(path):
        value = {part: value}
    return value


def apply_set(base: Mapping, assignment: str) -> dict:
    """``base`` with one ``--set KEY=VALUE`` applied: the value replaces what is at KEY,
    a table included (``--set 'sweep.axes={}'`` removes a preset's axes; a deep merge
    would keep them)."""
    path, value = parse_assignment(assignment)
    out = copy.deepcopy(dict(base))
    table = out
    for part in path[:-1]:
        inner = table.get(part)
        table[part] = dict(inner) if isinstance(inner, Mapping) else {}
        table = table[part]
    table[path[-1]] = value
    return out


def parse_axis(assignment: str) -> dict:
    """``--axis model.width=[256,512]``: the same as
    ``--set 'sweep.axes."model.width"=[256,512]'``."""
    if "=" not in assignment:
        raise ConfigError(f"--axis expects TABLE.KEY=[VALUES] (e.g. --axis "
                          f"model.width=[256,512]), got {assignment!r}")
    key, raw = assignment.split("=", 1)
    return {"sweep": {"axes": {key.strip(): _parse_value(raw)}}}


def build_config(config: Mapping | str | os.PathLike | None = None, *,
                 preset: str | None = None, overrides: Iterable[str] | Mapping = (),
                 axes: Iterable[str] = (), manager: PluginManager | None = None) -> dict:
    """The raw config ``phasekit run`` would use: preset, then file or mapping, then
    overrides (``"sweep.max_steps=200"`` strings or a nested mapping), then axes
    (``"model.width=[256,512]"`` strings, as ``--axis``)."""
    manager = manager or get_plugin_manager()
    raw: dict = {}
    if preset or config is None:
        raw = manager.get("preset", preset or "default").config
    if isinstance(config, str | os.PathLike):
        if not os.path.lexists(config) and str(config) in manager.presets():
            raise ConfigError(f"no config file {config}; {config!s} is a preset: use "
                              f"--preset {config}")
        raw = merge(raw, load_toml(config))
    elif config is not None:
        raw = merge(raw, config)
    if isinstance(overrides, Mapping):
        raw = merge(raw, overrides)
    else:
        for assignment in overrides:
            raw = apply_set(raw, assignment)
    for assignment in axes:
        raw = merge(raw, parse_axis(assignment))
    return raw


def _key_path(key: str) -> list[str]:
    try:
        parsed = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"--set key {key!r} is not a dotted key like sweep.max_steps or "
                          f"sweep.axes.\"model.width\"") from None
    path = []
    while isinstance(parsed, dict):
        (name, parsed), = parsed.items()
        path.append(name)
    return path


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()


# -- validation --------------------------------------------------------------------

def _not_too_long(key: str, n: int) -> None:
    if n > MAX_GRID:
        raise ConfigError(f"{key} asks for {n:,} values; phasekit takes at most {MAX_GRID:,} "
                          f"per grid axis (a finer grid than that is better found by "
                          f"'phasekit boundary')")


def _grid(value: Any) -> list[float]:
    """The learning-rate grid, validated in one place whatever its form: finite,
    positive, no repeated values, stored in increasing order.

    A table ``{start, stop, num}`` gives evenly spaced values computed in decimal
    arithmetic from the numbers as written, so ``{start = 0.1, stop = 1, num = 10}``
    holds exactly 0.3 (not 0.30000000000000004) and ``ds.sel(eta_lambda0=0.3)``
    finds it.
    """
    key = "sweep.eta_lambda0"
    if isinstance(value, Mapping):
        if set(value) != {"start", "stop", "num"}:
            raise ConfigError(f"{key} as a table needs exactly start, stop and num; "
                              f"got {sorted(value)}")
        num = value["num"]
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ConfigError(f"{key}.num must be a positive integer, got {num!r}")
        _not_too_long(f"{key}.num", num)
        ends = {}
        for end in ("start", "stop"):
            v = value[end]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"{key}.{end} must be a finite number, got {v!r}")
            ends[end] = Decimal(repr(v))
        lo, hi = ends["start"], ends["stop"]
        out = [float(lo)] if num == 1 else [float(lo + (hi - lo) * i / (num - 1))
                                            for i in range(num)]
    elif isinstance(value, list | tuple) and value:
        _not_too_long(key, len(value))
        out = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{key}[{i}] must be a number, got {v!r}")
            out.append(float(v))
    else:
        raise ConfigError(f"{key} must be a non-empty list of numbers or a table "
                          f"{{start, stop, num}}, got {value!r}")
    for v in out:
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{key} values must be positive and finite (c = eta * lambda_0 "
                              f"> 0), got {v!r}")
    if len(set(out)) != len(out):
        repeated = sorted({v for v in out if out.count(v) > 1})
        raise ConfigError(f"{key} repeats the value(s) {repeated}; give each learning rate "
                          f"once")
    return sorted(out)


def _seeds(value: Any) -> list[int]:
    key = "sweep.seeds"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{key} as a count must be at least 1, got {value}")
        _not_too_long(key, value)
        return list(range(value))
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a non-empty list of integers or a count, "
                          f"got {value!r}")
    _not_too_long(key, len(value))
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{key}[{i}] must be a non-negative integer, got {s!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key} has repeated seeds: {list(value)}")
    return list(value)


#: special [sweep] keys, validated by their own functions rather than as plain options
GRID_SWEEP_KEYS = ("eta_lambda0", "seeds", "axes")
#: dimension and variable names of every sweep; an axis may not take one of them
RESERVED_NAMES = ("seed", "eta_lambda0", "step", "eta", "lambda0", "steps", "status")


def _axes(value: Any) -> dict[str, list]:
    """``sweep.axes`` as far as it can be checked without the plugins: a table of
    ``"model.KEY"`` / ``"dataset.KEY"`` -> non-empty list of distinct scalars."""
    if not isinstance(value, Mapping):
        raise ConfigError(f'sweep.axes must be a table like {{"model.width" = [64, 128]}}, '
                          f"got {value!r}")
    out = {}
    for key, values in value.items():
        where = f'sweep.axes."{key}"'
        table, _, option = key.partition(".")
        if table not in ("model", "dataset") or not option or "." in option:
            raise ConfigError(f'{where}: an axis is a model or dataset option written '
                              f'"model.KEY" or "dataset.KEY" (e.g. "model.width")')
        if option == "name":
            raise ConfigError(f"{where}: the {table} plugin itself cannot be an axis; run one "
                              f"sweep per {table}")
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"{where} must be a non-empty list of values, got {values!r}")
        _not_too_long(where, len(values))
        for i, v in enumerate(values):
            if isinstance(v, Mapping | list | tuple):
                raise ConfigError(f"{where}[{i}] must be a single value (number, string or "
                                  f"boolean), got {v!r}")
        out[key] = list(values)
    return out


def resolve_sweep(table: Mapping[str, Any]) -> dict[str, Any]:
    table = dict(table)
    special = {k: table.pop(k) for k in GRID_SWEEP_KEYS if k in table}
    plain = {k: v for k, v in SWEEP_OPTIONS.items() if k not in GRID_SWEEP_KEYS}
    out = resolve_options("sweep", plain, table, extra_known=GRID_SWEEP_KEYS)
    out["eta_lambda0"] = _grid(special.get("eta_lambda0", SWEEP_OPTIONS["eta_lambda0"].default))
    out["seeds"] = _seeds(special.get("seeds", SWEEP_OPTIONS["seeds"].default))
    out["axes"] = _axes(special.get("axes", {}))
    device = out["device"]
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"sweep.device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    # steps 1..early_window must be recorded: every t < record_dense is, and max_steps
    if out["record_dense"] <= min(out["early_window"], out["max_steps"] - 1):
        raise ConfigError(f"sweep.early_window = {out['early_window']} needs sweep.record_dense "
                          f">= {out['early_window'] + 1} (steps 0..record_dense-1 are recorded "
                          f"at every step, and the early window is steps 1..early_window), "
                          f"got {out['record_dense']}; raise record_dense or lower "
                          f"early_window")
    order = list(SWEEP_OPTIONS)
    return {k: out[k] for k in order}


def resolve_config(raw: Mapping[str, Any], manager: PluginManager
                   ) -> tuple[ResolvedConfig, Data]:
    """Validate ``raw`` and build the dataset of every axis point; nothing is trained.

    Returns the resolved config (defaults filled in, ready to be stored; its
    ``points`` hold each axis point's one-point config and data) and the first
    point's :class:`~phasekit.dataset.Data` (the only one without axes).

    Every axis value is validated exactly like the option itself: each axis point
    is resolved as the config with that value written in, and an error names the
    axis and the value.
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
    classes, tables = _plugin_tables(raw, manager)
    known = set(manager.observables())
    for name in sweep["observables"]:
        if name != "all" and name not in known:
            raise ConfigError(f"sweep.observables: unknown observable '{name}'. Available: "
                              f"all, {', '.join(sorted(known))}.")
    axes = sweep["axes"]
    _check_axis_names(axes, classes)
    check_sweep_size(sweep, [len(v) for v in axes.values()])   # before a point is resolved
    points = _axis_points(classes, tables, sweep)
    for key, given in list(axes.items()):  # coordinates hold the resolved values
        axes[key] = list(dict.fromkeys(p.values[key] for p in points))
        if len(axes[key]) != len(given):
            raise ConfigError(f'sweep.axes."{key}" = {given} repeats a value (as the option '
                              f"reads them: {axes[key]}); give each value once")

    if axes:
        # Stored: the tables as given, defaults filled but derived values left to each
        # axis point (a width axis re-derives zeta = sqrt(2/width), say).
        model = {"name": classes["model"].name,
                 **resolve_options("model", classes["model"].options, tables["model"])}
        dataset = {"name": classes["dataset"].name,
                   **resolve_options("dataset", classes["dataset"].options, tables["dataset"])}
        resolved = ResolvedConfig(model, dataset, sweep, points)
    else:
        only = points[0].config
        resolved = ResolvedConfig(only.model, only.dataset, sweep, points)
        points[0].config = resolved
    return resolved, points[0].data


def _plugin_tables(raw: Mapping[str, Any], manager: PluginManager
                   ) -> tuple[dict[str, type], dict[str, dict]]:
    """The dataset and model plugin classes the config names, and their tables without
    ``name``."""
    classes, tables = {}, {}
    for kind in ("dataset", "model"):
        table = dict(raw.get(kind, {}))
        if "name" not in table:
            available = ", ".join(sorted(getattr(manager, f"{kind}s")()))
            raise ConfigError(f"{kind}.name is required. Available: {available}.")
        name = table.pop("name")
        if not isinstance(name, str):
            raise ConfigError(f"{kind}.name must be a string, got {name!r}")
        classes[kind] = manager.get(kind, name)
        tables[kind] = table
    return classes, tables


def _axis_points(classes: Mapping[str, type], tables: Mapping[str, dict],
                 sweep: Mapping[str, Any]) -> list[AxisPoint]:
    """Every axis point (one without axes): the tables with the point's values written
    in, resolved by the plugins, and its data (one dataset per distinct dataset table).
    An error at a point names the axes and values."""
    loaded: dict[str, Data] = {}          # one dataset per distinct dataset table
    axes = sweep["axes"]

    def point(values: Mapping[str, Any]) -> tuple[dict, dict, Data]:
        given = {kind: dict(tables[kind]) for kind in tables}
        for key, value in values.items():
            kind, option = key.split(".", 1)
            given[kind][option] = value
        dcls, mcls = classes["dataset"], classes["model"]
        dataset = resolve_options("dataset", dcls.options, given["dataset"])
        tag = dump_toml({"dataset": dataset})
        if tag not in loaded:
            loaded[tag] = dcls(dataset).load()
        data = loaded[tag]
        model = mcls.resolve(resolve_options("model", mcls.options, given["model"]), data)
        return ({"name": mcls.name, **model}, {"name": dcls.name, **dataset}, data)

    one_point = {**sweep, "axes": {}}
    points = []
    for index, combo in enumerate(itertools.product(*axes.values())):
        values = dict(zip(axes, combo, strict=True))
        try:
            model, dataset, data = point(values)
        except ConfigError as exc:
            if not values:
                raise
            where = ", ".join(f'sweep.axes."{k}" value {toml_value(v)}'
                              for k, v in values.items())
            raise ConfigError(f"{where}: {exc}") from None
        resolved_values = {k: (model if k.startswith("model.") else dataset)[k.split(".", 1)[1]]
                           for k in values}
        points.append(AxisPoint(index, resolved_values,
                                ResolvedConfig(model, dataset, one_point), data))
    return points


def _check_axis_names(axes: Mapping[str, list], classes: Mapping[str, type]) -> None:
    """Every axis names an option of its plugin, and becomes a distinct dimension."""
    dims: dict[str, str] = {}
    for key in axes:
        kind, option = key.split(".", 1)
        cls = classes[kind]
        if option not in cls.options:
            raise ConfigError("sweep.axes: " + unknown_key_message(
                f"{kind}.{option}", cls.options) + f" ({kind} {cls.name!r})")
        if option in RESERVED_NAMES:
            raise ConfigError(f'sweep.axes."{key}" would become the dimension {option!r}, '
                              f"which every sweep already has ({', '.join(RESERVED_NAMES)}); "
                              f"this option cannot be an axis")
        if option in dims:
            raise ConfigError(f'sweep.axes."{dims[option]}" and "{key}" would both become the '
                              f"dimension {option!r}; keep one of them")
        dims[option] = key


# -- writing TOML --------------------------------------------------------------------

def _without_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def dump_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """Write a config as TOML with tomli-w (``None`` values, i.e. options derived
    from the others, are omitted)."""
    import tomli_w

    return tomli_w.dumps(_without_none(config))
