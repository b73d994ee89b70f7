"""Command line: ``phasekit run`` and ``phasekit plugins``.

Only light modules are imported here; torch and the rest load inside
:func:`main`, after its Ctrl-C and SIGTERM handler is in place.  Before that,
from the first line of ``import phasekit`` on, :mod:`phasekit._startup` answers
them, so an interrupt at any moment ends in one line (``docs/reliability.md``).
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
import time
from pathlib import Path

from phasekit import __version__, errors
from phasekit.cli.common import add_config_arguments
from phasekit.config.registry import get_plugin_manager
from phasekit.errors import ConfigError, DataError, SweepFileError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasekit",
        description="Learning-rate phase diagrams of quadratic models and wide networks.")
    parser.add_argument("--version", action="version", version=f"phasekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep over (axes, seed, eta_lambda0) and store it",
                         description="Run a sweep. With no CONFIG and no --preset, runs the "
                                     "built-in 'default' preset (fig1's setting, coarse grid).")
    add_config_arguments(run)
    run.add_argument("-o", "--output", default="sweep.nc", help="output netCDF file "
                     "(default: sweep.nc)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing output written with a different config")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    run.add_argument("--dry-run", action="store_true",
                     help="print grid size, chunking, memory and a calibrated time estimate, "
                          "then stop")
    run.add_argument("--workers", type=int, default=0, metavar="N",
                     help="run chunks on a local Dask cluster of N worker processes")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run chunks on an existing dask.distributed scheduler "
                          "(tcp://host:8786, or tls://host:8786 with Dask's TLS settings, "
                          "distributed.comm.tls.*). Dask ships tasks and results with "
                          "pickle: use only a scheduler you trust (docs/reliability.md)")

    bench = sub.add_parser("bench", help="benchmark phasekit against a plain per-run loop")
    from phasekit.cli.bench import add_arguments as bench_arguments

    bench_arguments(bench)
    plugins = sub.add_parser("plugins",
                             help="list registered models, datasets, observables, presets")
    plugins.add_argument("--options", nargs="*", metavar="NAME",
                         help="list the options of every model and dataset (or of those "
                              "named; 'sweep' for the [sweep] table) instead")
    sub.add_parser("presets", help="list the presets with their descriptions")
    from phasekit.cli.analysis import add_subcommands

    add_subcommands(sub)                     # plot, analyze, boundary
    return parser


def _existing_output(path: Path, config_toml: str, overwrite: bool) -> bool:
    """True when ``path`` already holds this very sweep and no rewrite of it is under
    way (nothing to do); the rule itself is :func:`phasekit.io.parts.refuse_replacing`."""
    from phasekit.io.parts import PartStore, refuse_replacing

    same = refuse_replacing(path, overwrite, lambda old: old.attrs.get("config") == config_toml,
                            config_toml)
    return same and PartStore(path).stored_config() is None


def cmd_run(args) -> int:
    from phasekit.analysis.phases import add_critical
    from phasekit.analysis.report import summary_table
    from phasekit.cli.dryrun import dry_run_report
    from phasekit.config.resolve import build_config, resolve_config
    from phasekit.io.files import OutputLock, check_writable
    from phasekit.runner.execute import check_dataset_size, execute
    from phasekit.runner.progress import Progress

    manager = get_plugin_manager()
    raw = build_config(args.config, preset=args.preset, overrides=args.overrides,
                       axes=args.axes)
    config, data = resolve_config(raw, manager)
    if args.workers < 0:
        raise ConfigError(f"--workers must be zero or positive, got {args.workers}")
    if args.scheduler is not None:
        from phasekit.runner.dask import check_address

        check_address(args.scheduler)            # an empty or unparsable one: at once
    if args.dry_run:
        print(dry_run_report(config, data, manager))
        return 0
    check_dataset_size(config)                   # before the config is even written out
    out = check_writable(args.output)
    with OutputLock(out):
        if _existing_output(out, config.to_toml(), args.overwrite):
            print(f"{out} already holds this sweep (same config); nothing to do. "
                  f"Pass --overwrite to recompute it.")
            return 0
        progress = None if args.quiet else Progress()
        started = time.perf_counter()
        ds = execute(config, data, manager, out, progress=progress, workers=args.workers,
                     scheduler=args.scheduler, overwrite=args.overwrite, derive=add_critical)
    if not args.quiet:
        print(summary_table(ds))
        print(f"wrote {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def cmd_bench(args) -> int:
    from phasekit.cli.bench import run

    return run(args)


def cmd_plugins(args) -> int:
    manager = get_plugin_manager()
    if args.options is not None:
        from phasekit.config.reference import options_text

        print(options_text(manager, args.options))
        return 0
    rows = [(r.kind, r.name, r.distribution, r.version, r.plugin)
            for r in manager.registrations()]
    header = ("kind", "name", "distribution", "version", "plugin")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    for fail in manager.failures:
        print(f"FAILED  {fail.plugin} ({fail.distribution} {fail.version}): {fail.error}")
    return 0


def cmd_presets(args) -> int:
    for name, preset in sorted(get_plugin_manager().presets().items()):
        print(f"{name:10} {preset.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``phasekit`` command.  Every expected failure is one ``phasekit: error:``
    line (exit status 2); Ctrl-C at any moment is one ``phasekit: interrupted;`` line
    saying what was kept (exit status 130), and SIGTERM the same (exit status 143):
    the lock is released and every finished chunk kept."""
    main_thread = threading.current_thread() is threading.main_thread()
    signals: list[int] = []
    previous = _catch_signals(signals) if main_thread else {}
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        # A second Ctrl-C while the line is printed: no traceback either.
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if getattr(sys.stderr, "isatty", lambda: False)():
            sys.stderr.write("\n")                   # off the progress bar's line
        what = str(exc) if str(exc) else "nothing was written"
        by = " by SIGTERM" if signals == [signal.SIGTERM] else ""
        print(f"{errors.PROG}: interrupted{by}; {what}", file=sys.stderr)
        return 128 + (signals[0] if signals else signal.SIGINT)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _catch_signals(signals: list[int]) -> dict[int, object]:
    """Ctrl-C and SIGTERM raise ``KeyboardInterrupt`` (noted in ``signals``), so that
    both end as an interrupt does: the lock released, finished chunks kept, one line.
    Returns the handlers they replace."""
    def interrupt(signum, frame):
        signals[:] = [signum]
        raise KeyboardInterrupt

    return {number: signal.signal(number, interrupt)
            for number in (signal.SIGINT, signal.SIGTERM)}


def _main(argv: list[str] | None) -> int:
    errors.install()               # phasekit's warnings as one 'phasekit: warning:' line
    args = _build_parser().parse_args(argv)
    from phasekit.cli.analysis import HANDLERS

    handler = {"run": cmd_run, "plugins": cmd_plugins, "presets": cmd_presets,
               "bench": cmd_bench, **HANDLERS}[args.command]
    try:
        return handler(args)
    except Exception as exc:
        if not isinstance(exc, (ConfigError, DataError, SweepFileError)):
            raise
        print(errors.error_line(exc), file=sys.stderr)
        return 2


#: the installed script's first-generation collection threshold (Python's default is
#: 700 new container objects): importing torch, pandas and xarray makes hundreds of
#: thousands, and at 700 the collector walks the young ones some thousand times,
#: about 0.1 s of every command (docs/performance.md, start-up)
GC_YOUNG_THRESHOLD = 10_000


def console(argv: list[str] | None = None) -> int:
    """The installed ``phasekit`` script: :func:`main`, then an exit without the
    interpreter's last walks over the heap.

    Once the command has returned, one collection finalises whatever it left in
    reference cycles (open files are flushed and closed, as at any exit), and
    ``gc.freeze()`` then moves every surviving object out of the collector's reach.
    The interpreter's shutdown otherwise traverses torch's, pandas' and xarray's
    hundreds of thousands of objects again while it unloads modules, about 0.3 s of
    every command (docs/performance.md, start-up); ``atexit`` handlers, Dask's
    included, still run.  Only for a process that is about to end: :func:`main`
    itself leaves the collector alone, so tests and notebooks may call it repeatedly.
    """
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    status = main(argv)
    gc.collect()
    gc.freeze()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console())
