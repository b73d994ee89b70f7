"""Command line of the analysis: ``phasekit plot``, ``phasekit analyze``, ``phasekit boundary``.

:func:`add_subcommands` registers the three subcommands on the main parser's
subparsers; each sets ``handler`` (also listed in :data:`HANDLERS`).  Every
expected failure is a :class:`~phasekit.options.ConfigError`,
:class:`~phasekit.errors.SweepFileError` or
:class:`~phasekit.dataset.DataError`, which the main command line prints as
``phasekit: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import tomllib
from pathlib import Path

from phasekit.cli.common import add_config_arguments
from phasekit.errors import ConfigError
from phasekit.io.files import OutputLock, check_writable

# storage (torch, xarray, netCDF4) loads inside the handlers: building the parser and
# --help stay light (docs/performance.md, start-up).


def add_subcommands(subparsers) -> None:
    """Register ``plot``, ``analyze`` and ``boundary`` on ``subparsers``."""
    _add_plot(subparsers)
    _add_analyze(subparsers)
    _add_boundary(subparsers)


def _add_plot(subparsers) -> None:
    plot = subparsers.add_parser(
        "plot", help="draw the paper's panels, or the phase diagram of a sweep with axes",
        description="Draw the paper's panels from a stored sweep: (a) loss, (b) theta^2_t/"
                    "theta^2_0, (c) eta lambda_max(H_t) against step for a few c; (d) final "
                    "sharpness, (e) theta^2_inf/theta^2_0, (f) sparsity, (g) generalisation gap "
                    "against c. A sweep with axes (sweep.axes) gets a 2-D phase diagram "
                    "instead: c against one axis (--x), phases as coloured cells, c_loss, "
                    "c_sharp, c_max and the bounds per axis point (--average seeds: of the "
                    "seed-averaged trajectories); --select fixes axes (with every axis fixed, "
                    "the panels are drawn). See docs/plotting.md.")
    plot.add_argument("sweep", help="a netCDF file written by 'phasekit run' or 'boundary'")
    plot.add_argument("-o", "--output", help="figure file, .png, .pdf or .svg (default: the "
                      "sweep's name with .png)")
    plot.add_argument("--panels", help="comma-separated panel letters a-g (default: a-e, plus "
                      "f and g when the sweep records them)")
    plot.add_argument("--c", dest="c_values", metavar="C1,C2,...",
                      help="learning rates c of the trajectory panels (nearest stored values; "
                           "default: picked from each phase)")
    plot.add_argument("--x", metavar="AXIS", help="x of the phase diagram: an axis (width or "
                      "model.width) or an arithmetic expression of axes, e.g. "
                      "hidden_layers/width or '(hidden_layers+2)/width' (all its axes on one "
                      "panel); default: the numeric axis with the most values; every other "
                      "axis gets a panel per value")
    plot.add_argument("--select", action="append", metavar="AXIS=VALUE",
                      help="fix an axis to one of its values, e.g. width=512 (repeatable); "
                           "with every axis fixed, the panels a-g of that axis point are drawn")
    plot.add_argument("--average", metavar="seeds",
                      help="phase diagram of the seed-averaged trajectories (Kalra & "
                           "Barkeshli's convention): curves c_loss, c_sharp, c_max of the mean "
                           "trajectories as the file stores them (c_loss_mean_traj, ...; "
                           "computed where absent), cells their regime (docs/plotting.md)")
    plot.add_argument("--ylog", action="store_true",
                      help="c on a log axis in the phase diagram (default: log only for a "
                           "geometric grid of c)")
    plot.set_defaults(handler=cmd_plot)


def _add_analyze(subparsers) -> None:
    analyze = subparsers.add_parser(
        "analyze", help="classify every run (lazy, catapult, divergent, trivial) and report",
        description="Add a 'phase' variable and the critical learning rates (c_loss, "
                    "c_sharp, c_max, c_trivial) to a stored sweep (definitions: docs/phases.md) "
                    "and print them. Without -o or --in-place nothing is written.")
    analyze.add_argument("sweep", help="a netCDF file written by 'phasekit run'")
    where = analyze.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="write the sweep with 'phase' to this file")
    where.add_argument("--in-place", action="store_true", help="add 'phase' to SWEEP itself")
    analyze.add_argument("--overwrite", action="store_true",
                         help="replace an existing -o file that holds something else than "
                              "this sweep")
    analyze.add_argument("--catapult-factor", type=float, default=2.0,
                         help="a converged run is a catapult if its loss rose to at least this "
                              "multiple of L_0 (default: 2)")
    analyze.add_argument("--early-window", type=int, metavar="STEPS",
                         help="c_loss and c_sharp look at the steps 1..STEPS (default: the "
                              "sweep's sweep.early_window, else 10)")
    analyze.add_argument("--sharpness-drop", type=float, metavar="FRACTION",
                         help="c_sharp: the sharpness fell below (1 - FRACTION) times its "
                              "initial value (default: sweep.sharpness_drop, else 0.05)")
    analyze.add_argument("--loss-rise", type=float, metavar="FRACTION",
                         help="c_loss: the loss rose above (1 + FRACTION) L_0 (default: "
                              "sweep.loss_rise, else 0)")
    analyze.add_argument("--average", metavar="seeds",
                         help="also apply the thresholds to the seed-averaged trajectories "
                              "<L_t/L_0> and <lambda_t/lambda_0> (Kalra & Barkeshli's "
                              "convention), per axis point; written as c_loss_mean_traj, "
                              "c_sharp_mean_traj, c_max_mean_traj, ... (docs/phases.md)")
    analyze.set_defaults(handler=cmd_analyze)


def _add_boundary(subparsers) -> None:
    boundary = subparsers.add_parser(
        "boundary", help="find c_loss, c_sharp, c_max and the trivial onset by bisection, "
                         "for every axis point and seed at once",
        description="Locate the critical learning rates of every axis point and seed: "
                    "c_max (largest c that converges) and the trivial onset from whole "
                    "runs, c_loss and c_sharp from runs of sweep.early_window steps; all "
                    "cells batched in each round of bracketing and bisection. Writes every "
                    "evaluated whole run. See docs/boundary.md.")
    add_config_arguments(boundary)
    boundary.add_argument("--no-early", dest="early", action="store_false",
                          help="skip c_loss and c_sharp (only c_max and the trivial onset)")
    boundary.add_argument("--tol", type=float, default=0.01,
                          help="width of the final bracket, in c (default: 0.01)")
    boundary.add_argument("--points", type=int, default=1,
                          help="trial points per bracket and round (default 1: bisection)")
    boundary.add_argument("--average", metavar="seeds",
                          help="bisect c_loss, c_sharp and c_max of the seed-averaged "
                               "trajectories per axis point (the rules of 'analyze --average "
                               "seeds'), every seed running every trial rate; written as "
                               "c_max_mean_traj, c_loss_mean_traj, ... (docs/boundary.md)")
    boundary.add_argument("-o", "--output", default="boundary.nc",
                          help="output netCDF file (default: boundary.nc)")
    boundary.add_argument("--overwrite", action="store_true",
                          help="replace an existing output of a different search")
    boundary.add_argument("-q", "--quiet", action="store_true", help="no per-round lines")
    boundary.add_argument("--dry-run", action="store_true",
                          help="estimate the rounds, runs and time of the search (per "
                               "quantity and in all) from a calibration and a short pilot, "
                               "then stop; nothing is written")
    boundary.set_defaults(handler=cmd_boundary)


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--c expects comma-separated numbers such as 2.5,3.5; got "
                          f"{text!r}") from None
    if not values:
        raise ConfigError("--c needs at least one number")
    return values


def cmd_plot(args) -> int:
    try:
        from phasekit.plot.figure import plot_sweep
        from phasekit.plot.style import FORMATS
    except ImportError as exc:  # pragma: no cover - matplotlib is not a core dependency
        raise ConfigError(f"phasekit plot needs matplotlib ({exc}); install it with "
                          f"'pip install matplotlib'") from None
    from phasekit.io.netcdf import open_sweep

    ds = open_sweep(args.sweep)
    out = Path(args.output) if args.output else Path(args.sweep).with_suffix(".png")
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"-o {out}: the figure file must end in {', '.join(FORMATS)}")
    plot_sweep(ds, panels=args.panels, c_values=_floats(args.c_values), path=out, x=args.x,
               select=args.select, average=args.average, ylog=args.ylog)
    print(f"wrote {out}")
    return 0


def cmd_analyze(args) -> int:
    from phasekit.analysis.averaged import (
        SUFFIX,
        add_seed_averaged,
        averaged_report,
        check_average,
        seed_averaged_rates,
    )
    from phasekit.analysis.phases import BRACKETS, add_critical, add_phases
    from phasekit.analysis.report import summary_text
    from phasekit.io.netcdf import open_sweep, write_output
    from phasekit.io.parts import refuse_replacing

    if not args.catapult_factor > 1:
        raise ConfigError(f"--catapult-factor must be above 1, got {args.catapult_factor}")
    check_average(args.average, "--average")
    early = {"early_window": args.early_window, "sharpness_drop": args.sharpness_drop,
             "loss_rise": args.loss_rise}
    target = Path(args.sweep) if args.in_place else (Path(args.output) if args.output else None)
    with contextlib.ExitStack() as stack:
        if target is not None:               # writable and ours before any work
            open_sweep(args.sweep, load=False).close()
            target = check_writable(target)
            stack.enter_context(OutputLock(target))
        ds = open_sweep(args.sweep)
        if target is not None:
            refuse_replacing(target, args.overwrite,
                             lambda old: old.attrs.get("config") == ds.attrs.get("config"))
        ds = add_critical(add_phases(ds, args.catapult_factor), **early)
        print(summary_text(ds, args.catapult_factor, **early))
        if args.average:
            print(averaged_report(seed_averaged_rates(ds, **early)))
            ds = add_seed_averaged(ds, **early)
        if target is None:
            return 0
        write_output(ds, target)
    added = ["phase", "loss_peak_ratio"] + [n for pair in BRACKETS.items() for n in pair
                                            if n in ds.variables]
    added += [str(n) for n in ds.data_vars if str(n).endswith(SUFFIX)]
    print(f"wrote {target} (variables {', '.join(added)})")
    return 0


def _same_search(old, config_toml: str, tol: float, average: str | None) -> bool:
    """Whether the stored sweep ``old`` is a boundary search of the same config (grid
    aside), tol and average."""
    if (old.attrs.get("boundary_tol") != tol
            or old.attrs.get("boundary_average", "none") != (average or "none")):
        return False

    def strip(text: str) -> dict:
        cfg = tomllib.loads(text)
        cfg.get("sweep", {}).pop("eta_lambda0", None)
        return cfg

    return strip(old.attrs["config"]) == strip(config_toml)


def cmd_boundary(args) -> int:
    from phasekit.analysis.averaged import check_average
    from phasekit.analysis.boundary import find_boundary, stderr_log
    from phasekit.analysis.report import boundary_report
    from phasekit.config.registry import get_plugin_manager
    from phasekit.config.resolve import build_config, resolve_config
    from phasekit.io.netcdf import write_output
    from phasekit.io.parts import refuse_replacing

    check_average(args.average, "--average")
    manager = get_plugin_manager()
    raw = build_config(args.config, preset=args.preset, overrides=args.overrides,
                       axes=args.axes, manager=manager)
    if args.dry_run:
        return _boundary_dry_run(args, raw, manager)
    out = check_writable(args.output)
    started = time.perf_counter()
    with OutputLock(out):
        refuse_replacing(out, args.overwrite, lambda old: _same_search(
            old, resolve_config(raw, manager)[0].to_toml(), args.tol, args.average))
        ds = find_boundary(raw, manager, tol=args.tol, points=args.points, early=args.early,
                           average=args.average, log=None if args.quiet else stderr_log)
        write_output(ds, out, then=lambda: "nothing was written; free space and rerun the "
                                           "search")
    print(boundary_report(ds))
    print(f"wrote {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _boundary_dry_run(args, raw, manager) -> int:
    """``phasekit boundary --dry-run``: the search's options and the config checked as
    the search checks them, then the estimate; no output touched."""
    from phasekit.analysis.boundary import DEFAULT_C_FLOOR, DEFAULT_C_LIMIT, check_search
    from phasekit.cli.boundary_dryrun import boundary_dry_run
    from phasekit.config.resolve import resolve_config

    check_search(args.tol, args.points, DEFAULT_C_FLOOR, DEFAULT_C_LIMIT)
    config, _ = resolve_config(raw, manager)
    print(boundary_dry_run(config, manager, tol=args.tol, points=args.points,
                           early=args.early, average=args.average))
    return 0


HANDLERS = {"plot": cmd_plot, "analyze": cmd_analyze, "boundary": cmd_boundary}


def main(argv: list[str] | None = None) -> int:
    """Run one analysis subcommand on its own (the main ``phasekit`` wires them in)."""
    from phasekit.errors import DataError, SweepFileError

    parser = argparse.ArgumentParser(prog="phasekit")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, DataError, SweepFileError) as exc:
        print(f"phasekit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
