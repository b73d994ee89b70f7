"""``phasekit bench``: phasekit against a plain per-run loop, measured in one process.

For each workload and dtype it prints run-steps per second of

* **phasekit**: the batched engine (``Engine.run_chunk``), every grid point of a
  seed advancing together, sharpness computed at every step;
* **baseline**: what a researcher would write in an afternoon -- a loop over
  grid points, each trained with autograd gradients (``loss.backward()``) and
  the NTK from the per-sample Jacobian (``torch.func.vmap(torch.func.jacrev)``)
  at every step, with the same fixed features (psi is precomputed once);

their ratio, and the achieved GFLOP/s of phasekit's training step (counted from
the step's matrix products with ``torch.utils.flop_counter``) next to the
measured matmul peak of this machine in the same dtype and thread count.  W4 times
a sweep over a width axis, W5 one run with the default observables (the tail of a
sweep: run-steps per second and the FLOPs of an average step, recorded steps
included, against the peak), M networks written as torch.nn.Module subclasses
(:mod:`phasekit.cli.bench_module`), ``P-<preset>`` whole presets.
Nothing here asserts a speed: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phasekit.config.registry import PluginManager, get_plugin_manager
from phasekit.errors import ConfigError, error_line, suggest

# torch, the config and the engine load inside the functions that use them, so that
# building the command line's parser (add_arguments) stays light (docs/performance.md).
if TYPE_CHECKING:
    import torch

    from phasekit.engine.engine import Engine


@dataclass
class Workload:
    name: str
    description: str
    config: dict
    grid_points: int
    steps: int
    baseline_points: int
    baseline_steps: int
    #: config overrides for the baseline: it gets the plain model, no phasekit shortcut
    plain: dict | None = None
    #: torch threads for both sides unless --threads is given (0: all cores); small
    #: per-step work (W1) runs best on one thread, large matrix products on all
    threads: int = 0


def workloads(quick: bool) -> list[Workload]:
    """W1-W3 of the scale issue (W2/W3 need the network models and Fashion-MNIST)."""
    from phasekit.config.resolve import merge

    def s(full: int, short: int) -> int:
        return short if quick else full

    image = {"name": "fmnist", "num_train": 128}
    full = {"model": {"input_span": False}}     # the baseline trains U itself, d = 784
    works = [
        Workload("W1", "pure quadratic, toy data, n = 1000, 64 grid points",
                 {"model": {"name": "quadratic", "width": 1000, "eigen_low": 1.0,
                            "eigen_high": 2.0},
                  "dataset": {"name": "toy"}, "sweep": {}},
                 64, s(200, 20), s(4, 2), s(50, 10), {"model": {"eigenbasis": "off"}}, 1),
        Workload("W2", "two-layer ReLU, width 1024, 128 two-class Fashion-MNIST images, "
                       "32 grid points, sharpness every step",
                 {"model": {"name": "relu", "width": 1024}, "dataset": image, "sweep": {}},
                 32, s(100, 10), s(2, 1), s(10, 3), full),
        Workload("W3", "three-layer ReLU (k = 1), width 1024, same data, 16 grid points",
                 {"model": {"name": "deep_relu", "width": 1024, "hidden_layers": 1},
                  "dataset": image, "sweep": {}},
                 16, s(50, 5), s(1, 1), s(5, 2), full),
    ]
    # The image workloads again with phasekit in full coordinates too (d = 784 first-layer
    # columns instead of D = 128): the same runs, more and larger matrix products; shows
    # the hardware efficiency of the step apart from the input-span saving.
    for work in works[1:]:
        works.append(dataclasses.replace(
            work, name=f"{work.name}-full", description=work.description
            + "; phasekit in full coordinates (model.input_span = false)",
            config=merge(work.config, full)))
    return works


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device | None = None,
                n: int = 2048, reps: int = 3) -> float:
    """Best GFLOP/s of an n x n matrix product in ``dtype`` (current thread count)."""
    import torch

    device = device or torch.device("cpu")
    if device.type == "cuda":
        n = 8192
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def _grid(points: int) -> list[float]:
    return [0.5 + 3.0 * i / max(points - 1, 1) for i in range(points)]


def phasekit_rate(engine: Engine, seed: int, points: int) -> tuple[float, float]:
    """(run-steps per second, seconds) of the batched engine on one chunk."""
    from phasekit.engine.chunks import Chunk

    cs = _grid(points)
    chunk = Chunk(0, seed, list(range(points)), cs)
    prepared = engine.prepare(seed)                           # features, as for the baseline
    engine.run_chunk(chunk, prepared=prepared)                # warm-up
    _sync(engine.device)
    t = time.perf_counter()
    engine.run_chunk(chunk, prepared=prepared)
    _sync(engine.device)
    elapsed = time.perf_counter() - t
    return points * (engine.sweep["max_steps"] + 1) / elapsed, elapsed


def step_flops(engine: Engine, seed: int, points: int) -> float:
    """FLOPs of one training step (forward, gradient, NTK) of ``points`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    model = engine.model
    feats, theta0 = model.setup(seed, engine.device, engine.dtype)
    theta = theta0.expand(points, -1).clone()
    y = engine.data.y_train.to(engine.device, engine.dtype)
    with FlopCounterMode(display=False) as counter:
        z, cache = model.forward(feats, theta)
        model.loss_gradient(feats, theta, cache, z - y)
        model.ntk(feats, theta, cache)
    return float(counter.get_total_flops())


def baseline_rate(engine: Engine, seed: int, points: int, steps: int) -> float:
    """Run-steps per second of the plain per-run loop (see the module docstring)."""
    import torch

    model = engine.model
    feats, theta0 = model.setup(seed, engine.device, engine.dtype)
    y = engine.data.y_train.to(engine.device, engine.dtype)
    H0 = model.ntk(feats, theta0[None], None)[0]
    lam0 = float(torch.linalg.eigvalsh(H0)[-1])

    def outputs(theta):
        return model.forward(feats, theta[None])[0][0]

    t = time.perf_counter()
    for c in _grid(points):                                   # one grid point at a time
        eta = c / lam0
        theta = theta0.clone().requires_grad_(True)
        for _ in range(steps):
            z = outputs(theta)
            loss = 0.5 * ((z - y) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                jac = torch.func.jacrev(outputs)(theta.detach())  # (D, P), vmapped VJPs
                ntk = jac @ jac.T / jac.shape[0]
                sharpness = eta * torch.linalg.eigvalsh(ntk)[-1]
                if not torch.isfinite(loss) or not torch.isfinite(sharpness):
                    break
                theta -= eta * theta.grad
            theta.grad = None
    _sync(engine.device)
    return points * steps / (time.perf_counter() - t)


def bench_one(work: Workload, dtype: str, manager: PluginManager, threads: int,
              device: str = "cpu") -> dict:
    from phasekit.config.resolve import SWEEP_OPTIONS, merge, resolve_config
    from phasekit.engine.engine import Engine, torch_threads

    # every step recorded: record_dense past the last step (any value beyond it records
    # the same steps), and at least the early window, which must lie in the dense part
    window = work.config["sweep"].get("early_window", SWEEP_OPTIONS["early_window"].default)
    raw = merge(work.config, {"sweep": {"eta_lambda0": _grid(work.grid_points), "seeds": [0],
                                        "device": device,
                                        "max_steps": work.steps, "tol": 0.0,
                                        "record_dense": max(work.steps + 1, window),
                                        "dtype": dtype,
                                        "observables": [],
                                        "threads": threads, "divergence_loss": 1e300}})
    config, data = resolve_config(raw, manager)
    engine = Engine(config, data, manager)
    plain_config, _ = resolve_config(merge(raw, work.plain or {}), manager)
    plain = Engine(plain_config, data, manager)
    with torch_threads(threads):
        rate, elapsed = phasekit_rate(engine, 0, work.grid_points)
        flops = step_flops(engine, 0, work.grid_points)
        base = baseline_rate(plain, 0, work.baseline_points, work.baseline_steps)
        peak = matmul_peak(engine.dtype, engine.device)
    step_time = elapsed / (work.steps + 1)
    return {"workload": work.name, "dtype": dtype, "phasekit": rate, "baseline": base,
            "ratio": rate / base, "gflops": flops / step_time / 1e9, "peak": peak}


#: W4: a width axis of five values against the same five widths run as separate sweeps
W4_WIDTHS = [64, 128, 256, 512, 1024]


def axis_sweep_times(quick: bool, dtype: str, manager: PluginManager, threads: int,
                     device: str = "cpu") -> dict:
    """W4: wall seconds of one sweep with ``model.width`` as an axis, and of the same
    axis points run as separate sweeps (each resolved and run on its own), in process.

    The work is identical (the results are bitwise equal, ``tests/test_axes.py``);
    the ratio shows what the axis machinery costs or saves."""
    from phasekit.config.resolve import merge, resolve_config
    from phasekit.runner.execute import execute

    base = {"model": {"name": "homogeneous", "a_plus": 1.0, "a_minus": 1.0},
            "dataset": {"name": "toy"},
            "sweep": {"eta_lambda0": _grid(16), "seeds": 2, "max_steps": 200 if quick else 2000,
                      "dtype": dtype, "device": device, "threads": threads}}

    def timed(raw: dict) -> float:
        config, data = resolve_config(raw, manager)
        t = time.perf_counter()
        execute(config, data, manager)
        return time.perf_counter() - t

    timed(merge(base, {"model": {"width": W4_WIDTHS[0]}}))          # warm-up
    axis = timed(merge(base, {"sweep": {"axes": {"model.width": W4_WIDTHS}}}))
    separate = sum(timed(merge(base, {"model": {"width": w}})) for w in W4_WIDTHS)
    return {"axis": axis, "separate": separate, "ratio": separate / axis}


#: W5: one grid point of the two-layer ReLU net on 128 Fashion-MNIST images (as W2),
#: trained with the default observables and record schedule: the per-run cost of the
#: tail of a sweep, where one or two slow runs are left (docs/performance.md)
W5_CONFIG = {"model": {"name": "relu", "width": 1024},
             "dataset": {"name": "fmnist", "num_train": 128},
             "sweep": {"eta_lambda0": [1.0], "seeds": [0], "tol": 0.0}}
#: W5's steps, full and under --quick
W5_STEPS = (2000, 100)

#: FLOP formulas for the products torch's counter does not know (matrix-vector products
#: and the in-place batched ones of ``Model.descend``), in its (shapes..., out_shape) form
_EXTRA_FLOPS = {
    "mv": lambda a, b, *args, out_shape=None, **kw: 2 * a[0] * a[1],
    "addmv": lambda c, a, b, *args, out_shape=None, **kw: 2 * a[0] * a[1],
    "addmv_": lambda c, a, b, *args, out_shape=None, **kw: 2 * a[0] * a[1],
    "addmm_": lambda c, a, b, *args, out_shape=None, **kw: 2 * a[0] * a[1] * b[1],
    "baddbmm_": lambda c, a, b, *args, out_shape=None, **kw: 2 * a[0] * a[1] * a[2] * b[2],
}


def _flop_counter():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        getattr(aten, name): formula for name, formula in _EXTRA_FLOPS.items()})


def run_step_flops(engine: Engine, prepared) -> tuple[float, float]:
    """FLOPs of one grid point's plain step (forward pass and gradient step) and of a
    recorded step (the same plus the NTK and what the engine records: sharpness by
    ``sweep.sharpness_solver``, weight norm, every observable), counted at initialisation
    from the matrix products (matrix-vector ones included)."""
    from phasekit.observables import Snapshot

    model = engine.model
    feats, theta0 = prepared.features, prepared.theta0
    y = engine.data.y_train.to(engine.device, engine.dtype)
    lambda0 = theta0.new_full((1,), prepared.lambda0)
    eta = 1.0 / lambda0                                               # c = 1

    def step(recorded: bool) -> float:
        theta = theta0[None].clone()
        with _flop_counter() as counter:
            z, cache = model.forward(feats, theta)
            eps = z - y
            if recorded:
                loss = 0.5 * (eps * eps).mean(-1)
                ntk = model.ntk(feats, theta, cache)
                engine._observe(Snapshot(model, engine.data, feats, theta, theta0[None], z,
                                         eps, loss, ntk, eta, lambda0, 0, cache))
            model.descend(feats, theta, cache, eps, eta)
        return float(counter.get_total_flops())

    return step(False), step(True)


def single_run_times(quick: bool, dtype: str, manager: PluginManager, threads: int,
                     device: str = "cpu") -> dict:
    """W5: one grid point's run (``Engine.run_chunk``, default observables and record
    schedule, ``tol = 0``) timed in process after its seed is prepared; run-steps per
    second and the FLOPs of an average step (plain steps and recorded ones, weighted by
    the record schedule) against the matmul peak."""
    from phasekit.config.resolve import merge, resolve_config
    from phasekit.engine.chunks import Chunk
    from phasekit.engine.engine import Engine, torch_threads

    steps = W5_STEPS[1] if quick else W5_STEPS[0]
    raw = merge(W5_CONFIG, {"sweep": {"max_steps": steps, "dtype": dtype, "device": device,
                                      "threads": threads}})
    config, data = resolve_config(raw, manager)
    engine = Engine(config, data, manager)
    chunk = Chunk(0, 0, [0], list(config.sweep["eta_lambda0"]))
    with torch_threads(threads):
        prepared = engine.prepare(0)
        _sync(engine.device)
        t = time.perf_counter()
        engine.run_chunk(chunk, prepared=prepared)
        _sync(engine.device)
        elapsed = time.perf_counter() - t
        plain, recorded = run_step_flops(engine, prepared)
        peak = matmul_peak(engine.dtype, engine.device)
    passes = steps + 1                      # forward passes: steps 0..max_steps
    n_rec = len(engine.schedule)            # every scheduled step is recorded (tol = 0)
    # the last pass makes no gradient step; its descend FLOPs are a rounding error here
    average = (n_rec * recorded + (passes - n_rec) * plain) / passes
    return {"steps": steps, "recorded": n_rec, "wall": elapsed, "rate": passes / elapsed,
            "plain": plain, "recorded_flops": recorded, "average": average,
            "gflops": average * passes / elapsed / 1e9, "peak": peak}


#: whole presets, end to end in process: name -> step cap under --quick (None: as is)
PRESET_ROWS = {"fig1": None, "default": None, "fig12": 200}


def preset_times(name: str, quick: bool, dtype: str, manager: PluginManager,
                 device: str = "cpu") -> dict:
    """A whole preset as a user runs it (to convergence, default observables and
    record schedule) in this process: wall seconds of resolving, training and
    assembling, and run-steps per second (updates made, summed over the grid)."""
    from phasekit.config.resolve import build_config, resolve_config
    from phasekit.runner.execute import execute

    overrides = [f"sweep.dtype={dtype}", f"sweep.device={device}"]
    cap = PRESET_ROWS[name]
    if quick and cap is not None:
        overrides.append(f"sweep.max_steps={cap}")
    t = time.perf_counter()
    config, data = resolve_config(build_config(None, preset=name, overrides=overrides,
                                               manager=manager), manager)
    ds = execute(config, data, manager)
    wall = time.perf_counter() - t
    run_steps = int(ds["steps"].values.clip(min=0).sum())
    return {"wall": wall, "run_steps": run_steps, "rate": run_steps / wall,
            "capped": quick and cap is not None}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main(argv: list[str] | None = None) -> int:
    from phasekit.errors import DataError

    parser = argparse.ArgumentParser(prog="phasekit bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ConfigError, DataError) as exc:                # as the phasekit command does
        print(error_line(exc), file=sys.stderr)
        return 2


#: what --workloads takes (W2 also runs W2-full, W3 W3-full; 'presets' all P- rows)
WORKLOAD_NAMES = ("W1", "W2", "W3", "W4", "W5", "M", "DRY", "START")


def wanted_workloads(text: str) -> set[str]:
    """The names of --workloads, each checked: a ConfigError names an empty list, an
    empty entry or an unknown workload, with the known ones."""
    known = [*WORKLOAD_NAMES, *(f"P-{p}" for p in PRESET_ROWS), "presets"]
    listing = f"choose from {', '.join(known)}, comma-separated"
    names = [w.strip() for w in text.split(",")]
    if not any(names):
        raise ConfigError(f"--workloads is empty; {listing}")
    for name in names:
        if not name:
            raise ConfigError(f"--workloads {text!r} has an empty entry; {listing}")
        if name not in known:
            close = suggest(name, known)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(f"--workloads: unknown workload '{name}'{hint}; {listing}")
    return set(names)


def missing_device(name: str) -> str | None:
    """Why ``--device name`` is not on this machine (every row is then skipped), or
    None when it is; a ConfigError when ``name`` is no device phasekit runs on."""
    import torch

    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", name):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N (a CUDA device number), "
                          f"got {name!r}")
    if name == "cpu":
        return None
    if not torch.cuda.is_available():
        return f"missing device: no CUDA device on this machine (--device {name})"
    index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        return f"missing device: no {name} on this machine ({count} CUDA device(s))"
    return None


def missing_dataset(exc: Exception) -> str:
    """The skip reason of a row whose dataset files are not on this machine: which
    dataset, and how to obtain it (the first and last sentences of the error)."""
    lines = str(exc).splitlines()
    what = lines[0].split(". Expected")[0]
    how = next((line for line in lines if line.startswith("To obtain them: ")), "")
    return f"missing dataset: {what}" + (f"; to obtain them: {how[16:]}" if how else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure phasekit's batched engine against a plain per-run loop (autograd "
        "gradients, per-sample Jacobian NTK) in this process: run-steps per second of "
        "each, their ratio, and the GFLOP/s of phasekit's step next to this machine's "
        "matmul peak. Workloads: W1 pure quadratic on toy data; W2 two-layer and W3 "
        "three-layer ReLU nets on 128 Fashion-MNIST images (skipped without the data); "
        "W4 a sweep over a width axis against its five points run as separate sweeps; "
        "W5 one run of the two-layer ReLU net with the default observables (the tail of a "
        "sweep): run-steps per second and FLOPs of an average step against the peak; "
        "M the uv and ReLU nets written as torch.nn.Modules (phasekit.module) against "
        "their closed-form built-ins and against a per-rate autograd loop (not in the "
        "default list). See docs/performance.md.")
    parser.add_argument("--quick", action="store_true", help="few steps (for CI)")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="floating-point type of both sides (default: both, one row "
                             "each)")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5",
                        help="comma-separated subset (W2 also runs W2-full, W3 W3-full; W4 "
                             "is a width-axis sweep against its points run separately; W5 "
                             "one run with the default observables, 2000 steps (100 with "
                             "--quick); "
                             "P-fig1, P-default, P-fig12 or 'presets' time whole presets "
                             "end to end, fig12 capped at 200 steps with --quick; DRY the "
                             "dry run's estimates against the runs; START the start-up of a "
                             "whole 'phasekit run --preset fig1' process against 'import "
                             "torch' and the run in a warm process)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for both sides and the peak (default 0: 1 for W1 "
                             "and W4, all cores for W2, W3 and W5); P- rows run with their "
                             "preset's sweep.threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (rows are "
                        "skipped, saying so, where the device is missing)")


def run(args) -> int:
    """Print the rows of ``args.workloads``.  Bad arguments raise ConfigError before
    anything is printed; a row says "skipped" only where its dataset's files or the
    device are missing on this machine, naming which."""
    import torch

    wanted = wanted_workloads(args.workloads)
    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 (each workload's default) or a positive "
                          f"number of torch threads, got {args.threads}")
    no_device = missing_device(args.device)
    manager = get_plugin_manager()
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    gpu = (f", GPU {torch.cuda.get_device_name(args.device)}"
           if args.device.startswith("cuda") and not no_device else "")
    print(f"machine: {machine()}{gpu}; device {args.device}")
    rows = _Rows(args, wanted, dtypes, manager, no_device)
    rows.workloads()
    rows.presets()
    rows.w5()
    rows.w4()
    rows.modules()
    if "DRY" in wanted:
        _print_dry(args, manager)
    if "START" in wanted:
        from phasekit.cli.bench_startup import print_startup

        print_startup(args.quick)
    return 0


class _Rows:
    """The rows of one ``phasekit bench``, group by group; a row is skipped, saying so,
    only where the device or the dataset's files are missing."""

    def __init__(self, args, wanted: set[str], dtypes: list[str], manager, no_device):
        self.args, self.wanted, self.dtypes = args, wanted, dtypes
        self.manager, self.no_device = manager, no_device

    def measured(self, row: str, measure, width: int = 8):
        """``(dtype, measure(dtype))`` for each dtype of the bench; where there is no
        device, or the images a workload needs are not installed, a ``skipped`` line
        for the row instead (``width``: the row column's width)."""
        from phasekit_plugins.images import DataFilesMissing

        for dtype in self.dtypes:
            if self.no_device:
                print(f"{row:{width}} {dtype:8} skipped: {self.no_device}")
                continue
            try:
                result = measure(dtype)
            except DataFilesMissing as exc:                     # the images are not here
                print(f"{row:{width}} {dtype:8} skipped: {missing_dataset(exc)}")
                continue
            yield dtype, result

    def workloads(self) -> None:
        """W1-W3: phasekit's run-steps/s against the per-run loop, and the step's rate."""
        args, wanted, manager = self.args, self.wanted, self.manager
        header = (f"{'workload':8} {'dtype':8} {'threads':>7} {'phasekit run-steps/s':>20} "
                  f"{'baseline run-steps/s':>20} {'ratio':>8} {'step GFLOP/s':>12} "
                  f"{'matmul peak':>11} {'% peak':>7}")
        if any(work.name.split("-")[0] in wanted for work in workloads(args.quick)):
            print(header)
        for work in workloads(args.quick):
            if work.name.split("-")[0] not in wanted:
                continue
            threads = args.threads or work.threads or os.cpu_count() or 1
            def measure(dtype, work=work, threads=threads):
                return bench_one(work, dtype, manager, threads, args.device)

            for _, r in self.measured(work.name, measure):
                print(f"{r['workload']:8} {r['dtype']:8} {threads:>7} {r['phasekit']:>20,.0f} "
                      f"{r['baseline']:>20,.1f} {r['ratio']:>7.1f}x {r['gflops']:>12.1f} "
                      f"{r['peak']:>11.1f} {100 * r['gflops'] / r['peak']:>6.1f}%")
                sys.stdout.flush()

    def presets(self) -> None:
        """Whole presets, end to end in process."""
        args, wanted, manager = self.args, self.wanted, self.manager
        presets = [p for p in PRESET_ROWS if f"P-{p}" in wanted or "presets" in wanted]
        if presets:
            print("whole presets, end to end in process (resolve, train to convergence, assemble)")
            print(f"{'preset':10} {'dtype':8} {'wall s':>9} {'run-steps':>11} {'run-steps/s':>12}")
            for name in presets:
                for dtype, r in self.measured(name, lambda dtype, name=name: preset_times(
                        name, args.quick, dtype, manager, args.device), width=10):
                    cap = f" (max_steps {PRESET_ROWS[name]}, --quick)" if r["capped"] else ""
                    print(f"{name:10} {dtype:8} {r['wall']:>9.2f} {r['run_steps']:>11,} "
                          f"{r['rate']:>12,.0f}{cap}")
                    sys.stdout.flush()

    def w5(self) -> None:
        """W5: one run's steps/s and FLOPs against the matmul peak."""
        args, wanted, manager = self.args, self.wanted, self.manager
        if "W5" in wanted:
            steps = W5_STEPS[1] if args.quick else W5_STEPS[0]
            print(f"W5: one grid point (c = 1), two-layer ReLU, width 1024, 128 two-class "
                  f"Fashion-MNIST images, default observables and record schedule, {steps} steps")
            print(f"{'workload':8} {'dtype':8} {'threads':>7} {'run-steps/s':>11} {'wall s':>7} "
                  f"{'recorded':>8} {'MFLOP plain':>11} {'MFLOP rec.':>10} {'MFLOP avg':>9} "
                  f"{'GFLOP/s':>8} {'matmul peak':>11} {'% peak':>7}")
            threads = args.threads or os.cpu_count() or 1
            for dtype, r in self.measured("W5", lambda dtype: single_run_times(
                    args.quick, dtype, manager, threads, args.device)):
                print(f"{'W5':8} {dtype:8} {threads:>7} {r['rate']:>11,.1f} {r['wall']:>7.2f} "
                      f"{r['recorded']:>8} {r['plain'] / 1e6:>11,.1f} "
                      f"{r['recorded_flops'] / 1e6:>10,.1f} {r['average'] / 1e6:>9,.1f} "
                      f"{r['gflops']:>8.1f} {r['peak']:>11.1f} "
                      f"{100 * r['gflops'] / r['peak']:>6.1f}%")
                sys.stdout.flush()

    def modules(self) -> None:
        """M: the nets as torch.nn.Modules against the built-ins and the per-rate loop."""
        from phasekit.cli.bench_module import STEPS, WIDTH, module_rows

        args = self.args
        if "M" not in self.wanted:
            return
        print(f"M: uv and ReLU nets as torch.nn.Modules (ModuleModel), width {WIDTH}, 128 "
              f"two-class Fashion-MNIST images, {STEPS[args.quick]} steps; M-uv, M-relu "
              f"against the closed-form built-ins, M-loop against a per-rate autograd loop")
        print(f"{'workload':8} {'dtype':8} {'threads':>7} {'module run-steps/s':>18} "
              f"{'other run-steps/s':>17} {'ratio':>8}")
        threads = args.threads or os.cpu_count() or 1
        for dtype, found in self.measured("M", lambda dtype: module_rows(
                args.quick, dtype, threads, args.device, sys.modules[__name__])):
            for r in found:
                print(f"{r['row']:8} {dtype:8} {threads:>7} {r['module']:>18,.2f} "
                      f"{r['other']:>17,.2f} {r['ratio']:>7.2f}x")
            sys.stdout.flush()

    def w4(self) -> None:
        """W4: one sweep with a width axis against five separate sweeps."""
        args, wanted, manager = self.args, self.wanted, self.manager
        if "W4" in wanted:
            print(f"W4: uv model (homogeneous a_+ = a_- = 1) on toy data, width axis "
                  f"{W4_WIDTHS}, 2 seeds x 16 rates, whole sweeps in process")
            print(f"{'workload':8} {'dtype':8} {'threads':>7} {'axis sweep s':>13} "
                  f"{'5 separate s':>13} {'separate/axis':>13}")
            threads = args.threads or 1
            for dtype, r in self.measured("W4", lambda dtype: axis_sweep_times(
                    args.quick, dtype, manager, threads, args.device)):
                print(f"{'W4':8} {dtype:8} {threads:>7} {r['axis']:>13.2f} {r['separate']:>13.2f} "
                      f"{r['ratio']:>12.2f}x")
                sys.stdout.flush()


#: DRY: the quick presets whose dry-run estimate is compared with their run (--quick: two)
DRY_PRESETS = ("default", "fig1", "fig2", "fig4", "fig6", "fig8", "fig9", "fig10", "uv_width",
               "quadratic_width")

#: DRY: how far an estimate may miss its run (issue 20: within +/- 30 % on every preset)
DRY_TOLERANCE = 0.30


def _print_dry(args, manager) -> None:
    """DRY: the dry run's estimate of each quick preset against its run, back to back in
    this process (start-up left out of both; docs/scale.md, dry run)."""
    from phasekit.analysis.phases import add_critical
    from phasekit.cli.dryrun import estimate_run
    from phasekit.config.resolve import build_config, resolve_config
    from phasekit.runner.execute import execute

    print("DRY: --dry-run's estimate against the run, in process (no start-up either side); "
          f"'outside' flags a ratio beyond 1 +/- {DRY_TOLERANCE:.0%}")
    print(f"{'preset':16} {'estimate s':>10} {'run s':>8} {'ratio':>6} {'dry run s':>9} "
          f"{'load':>5}")
    outside = []
    for name in DRY_PRESETS[:2] if args.quick else DRY_PRESETS:
        config, data = resolve_config(build_config(None, preset=name), manager)
        started = time.perf_counter()
        estimate = estimate_run(config, data, manager)
        dry = time.perf_counter() - started
        started = time.perf_counter()
        execute(config, data, manager, derive=add_critical)
        wall = time.perf_counter() - started
        ratio = round(estimate.work / wall, 2)          # flagged as printed
        flag = "" if abs(ratio - 1) <= DRY_TOLERANCE else "  outside"
        outside += [name] if flag else []
        print(f"{name:16} {estimate.work:>10.2f} {wall:>8.2f} {ratio:>6.2f} "
              f"{dry:>9.2f} {os.getloadavg()[0]:>5.1f}{flag}")
        sys.stdout.flush()
    print(f"DRY: {len(outside)} preset(s) outside 1 +/- {DRY_TOLERANCE:.0%}"
          + (f": {', '.join(outside)}" if outside else ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
