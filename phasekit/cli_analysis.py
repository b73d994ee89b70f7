"""Command line of the analysis: ``phasekit plot``, ``phasekit analyze``, ``phasekit boundary``.

:func:`add_subcommands` registers the three subcommands on the main parser's
subparsers; each sets ``handler`` (also listed in :data:`HANDLERS`).  Every
expected failure is a :class:`~phasekit.options.ConfigError`,
:class:`~phasekit.storage.SweepFileError` or
:class:`~phasekit.dataset.DataError`, which the main command line prints as
``phasekit: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

from .options import ConfigError
from .storage import SweepFileError, open_sweep, write_sweep


def add_subcommands(subparsers) -> None:
    """Register ``plot``, ``analyze`` and ``boundary`` on ``subparsers``."""
    plot = subparsers.add_parser(
        "plot", help="draw the paper's panels from a stored sweep",
        description="Draw the paper's panels from a stored sweep: (a) loss, (b) theta^2_t/"
                    "theta^2_0, (c) eta lambda_max(H_t) against step for a few c; (d) final "
                    "sharpness, (e) theta^2_inf/theta^2_0, (f) sparsity, (g) generalisation gap "
                    "against c. See docs/plotting.md.")
    plot.add_argument("sweep", help="a netCDF file written by 'phasekit run' or 'boundary'")
    plot.add_argument("-o", "--output", help="figure file, .png, .pdf or .svg (default: the "
                      "sweep's name with .png)")
    plot.add_argument("--panels", help="comma-separated panel letters a-g (default: a-e, plus "
                      "f and g when the sweep records them)")
    plot.add_argument("--c", dest="c_values", metavar="C1,C2,...",
                      help="learning rates c of the trajectory panels (nearest stored values; "
                           "default: picked from each phase)")
    plot.set_defaults(handler=cmd_plot)

    analyze = subparsers.add_parser(
        "analyze", help="classify every run (lazy, catapult, divergent, trivial) and report",
        description="Add a 'phase' variable to a stored sweep (criteria: docs/phases.md) and "
                    "print the phases and critical learning rates. Without -o or --in-place "
                    "nothing is written.")
    analyze.add_argument("sweep", help="a netCDF file written by 'phasekit run'")
    where = analyze.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="write the sweep with 'phase' to this file")
    where.add_argument("--in-place", action="store_true", help="add 'phase' to SWEEP itself")
    analyze.add_argument("--catapult-factor", type=float, default=2.0,
                         help="a converged run is a catapult if its loss rose to at least this "
                              "multiple of L_0 (default: 2)")
    analyze.set_defaults(handler=cmd_analyze)

    boundary = subparsers.add_parser(
        "boundary", help="find c_max (and the trivial onset) per seed by bisection",
        description="Find, per seed, the largest c that converges (c_max) and the onset of "
                    "the trivial phase: the config's eta_lambda0 grid, then doubling/halving to "
                    "a bracket, then bisection to --tol, all seeds batched each round. Stores "
                    "every evaluated run. See docs/boundary.md.")
    boundary.add_argument("config", nargs="?", help="config TOML file")
    boundary.add_argument("--preset", help="start from a named preset (see 'phasekit presets')")
    boundary.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="override one key with a TOML value")
    boundary.add_argument("--tol", type=float, default=0.01,
                          help="width of the final bracket, in c (default: 0.01)")
    boundary.add_argument("--points", type=int, default=1,
                          help="trial points per bracket and round (default 1: bisection)")
    boundary.add_argument("-o", "--output", default="boundary.nc",
                          help="output netCDF file (default: boundary.nc)")
    boundary.add_argument("--overwrite", action="store_true",
                          help="replace an existing output of a different search")
    boundary.add_argument("-q", "--quiet", action="store_true", help="no per-round lines")
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
        from .plot import FORMATS, plot_sweep
    except ImportError as exc:  # pragma: no cover - matplotlib is not a core dependency
        raise ConfigError(f"phasekit plot needs matplotlib ({exc}); install it with "
                          f"'pip install matplotlib'") from None

    ds = open_sweep(args.sweep)
    out = Path(args.output) if args.output else Path(args.sweep).with_suffix(".png")
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"-o {out}: the figure file must end in {', '.join(FORMATS)}")
    plot_sweep(ds, panels=args.panels, c_values=_floats(args.c_values), path=out)
    print(f"wrote {out}")
    return 0


def cmd_analyze(args) -> int:
    from .phases import add_phases, summary_text

    if not args.catapult_factor > 1:
        raise ConfigError(f"--catapult-factor must be above 1, got {args.catapult_factor}")
    ds = open_sweep(args.sweep)
    ds = add_phases(ds, args.catapult_factor)
    print(summary_text(ds, args.catapult_factor))
    target = Path(args.sweep) if args.in_place else (Path(args.output) if args.output else None)
    if target is not None:
        write_sweep(ds, target)
        print(f"wrote {target} (variable 'phase')")
    return 0


def _same_search(path: Path, config_toml: str, tol: float) -> bool:
    """Whether ``path`` holds a boundary search of the same config (grid aside) and tol."""
    try:
        old = open_sweep(path)
    except SweepFileError:
        return False
    if old.attrs.get("boundary_tol") != tol:
        return False

    def strip(text: str) -> dict:
        cfg = tomllib.loads(text)
        cfg.get("sweep", {}).pop("eta_lambda0", None)
        return cfg

    return strip(old.attrs["config"]) == strip(config_toml)


def cmd_boundary(args) -> int:
    from .api import build_config
    from .boundary import boundary_report, find_boundary, stderr_log
    from .config import resolve_config
    from .manager import get_plugin_manager

    manager = get_plugin_manager()
    raw = build_config(args.config, preset=args.preset, overrides=args.overrides,
                       manager=manager)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        config, _ = resolve_config(raw, manager)
        if not _same_search(out, config.to_toml(), args.tol):
            raise ConfigError(f"output {out} exists and holds something else; choose another "
                              f"-o or pass --overwrite to replace it")
    started = time.perf_counter()
    ds = find_boundary(raw, manager, tol=args.tol, points=args.points,
                       log=None if args.quiet else stderr_log)
    write_sweep(ds, out)
    print(boundary_report(ds))
    print(f"wrote {out} ({time.perf_counter() - started:.1f} s)")
    return 0


HANDLERS = {"plot": cmd_plot, "analyze": cmd_analyze, "boundary": cmd_boundary}


def main(argv: list[str] | None = None) -> int:
    """Run one analysis subcommand on its own (the main ``phasekit`` wires them in)."""
    from .dataset import DataError

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
