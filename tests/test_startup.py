"""Start-up: ``phasekit --help`` and every subcommand's ``--help`` build their parsers
without importing the heavy libraries, and ``import phasekit`` registers the
``ds.phasekit`` accessor without importing xarray (docs/performance.md, start-up).

Each case runs in a fresh interpreter and checks ``sys.modules``; nothing here
measures time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "xarray", "netCDF4", "matplotlib", "dask")
COMMANDS = [[], ["run"], ["plot"], ["analyze"], ["boundary"], ["bench"]]


def _imported_after(code: str) -> list[str]:
    """The HEAVY modules present in ``sys.modules`` after ``code`` ran in a fresh
    interpreter (its own stdout is discarded; the list comes back on stderr)."""
    script = (f"import json, sys\n{code}\n"
              f"sys.stderr.write(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "phasekit")
def test_help_imports_no_heavy_module(command):
    code = ("from phasekit.cli.main import main\n"
            "try:\n"
            f"    main({command + ['--help']!r})\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n"
            "else:\n"
            "    raise AssertionError('--help did not exit')\n")
    assert _imported_after(code) == []


def test_help_lists_every_subcommand():
    """The light parser is the whole parser: every subcommand is there."""
    proc = subprocess.run([sys.executable, "-c", "from phasekit.cli.main import main; main()",
                           "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("run", "bench", "plugins", "presets", "plot", "analyze", "boundary"):
        assert name in proc.stdout


def test_import_phasekit_is_light():
    assert _imported_after("import phasekit") == []


@pytest.mark.parametrize("order", ["import phasekit\nimport xarray as xr",
                                   "import xarray as xr\nimport phasekit",
                                   "import phasekit\nfrom xarray import Dataset\n"
                                   "import xarray as xr"])
def test_accessor_is_registered_in_either_import_order(order):
    """``import phasekit`` before or after xarray: ``ds.phasekit`` exists either way."""
    code = (f"{order}\n"
            "accessor = xr.Dataset().phasekit\n"     # before phasekit.accessor is named
            "assert type(accessor).__qualname__ == 'PhasekitAccessor'\n"
            "assert type(accessor).__module__ == 'phasekit.accessor'\n")
    assert "xarray" in _imported_after(code)


def test_console_script_finalises_what_the_command_left_and_returns_its_status(tmp_path):
    """The installed script (``console``) ends with a collection and a freeze: an
    object the command left in a reference cycle is still finalised before the
    process ends (its ``__del__`` runs, as at any exit), and the script's exit status
    is the command's, for success and for a one-line error."""
    marker = tmp_path / "finalised.txt"
    code = ("import gc, sys\n"
            "gc.disable()\n"              # no automatic collection: only the script's own
            "from phasekit.cli.main import console\n"
            "class Cycle:\n"
            "    def __init__(self):\n"
            "        self.me = self\n"
            "    def __del__(self):\n"
            f"        with open({str(marker)!r}, 'w') as f:\n"
            "            f.write('finalised')\n"
            "Cycle()\n"                                 # garbage at once, only in a cycle
            "sys.exit(console(sys.argv[1:]))\n")
    ok = subprocess.run([sys.executable, "-c", code, "presets"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "fig1" in ok.stdout
    assert marker.read_text() == "finalised"
    bad = subprocess.run([sys.executable, "-c", code, "run", "--set", "sweep.sedes=2"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith("phasekit: error:") and "'seeds'" in bad.stderr


def test_main_leaves_the_collector_alone(capsys):
    """Only the script's end freezes the collector; ``main`` called in a test or a
    notebook does not, so repeated calls are collected as usual."""
    import gc

    from phasekit.cli.main import main
    threshold = gc.get_threshold()
    assert main(["presets"]) == 0
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
