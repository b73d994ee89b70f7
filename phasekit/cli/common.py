"""What several subcommands share on the command line: the arguments that build a
config (``run`` and ``boundary``)."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``CONFIG``, ``--preset``, ``--set`` and ``--axis``: the config is the preset (or
    the file) with the overrides and axes applied (:func:`phasekit.config.resolve.build_config`
    reads ``args.config``, ``args.preset``, ``args.overrides`` and ``args.axes``)."""
    parser.add_argument("config", nargs="?",
                        help="config TOML file ([model], [dataset], [sweep])")
    parser.add_argument("--preset", help="start from a named preset (see 'phasekit presets')")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one key with a TOML value, e.g. --set "
                             "sweep.max_steps=200")
    parser.add_argument("--axis", dest="axes", action="append", default=[],
                        metavar="KEY=[VALUES]",
                        help="add a phase-diagram axis over a model or dataset option, e.g. "
                             "--axis model.width=[64,256,1024] (the same as --set "
                             "'sweep.axes.\"model.width\"=[64,256,1024]'); repeat for a "
                             "product")
