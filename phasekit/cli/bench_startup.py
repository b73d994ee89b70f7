"""The bench row START: the start-up of a whole ``phasekit run`` process against
``import torch`` and the same run in an already warm process (docs/performance.md,
start-up).

The three are measured in fresh interpreters of this Python, back to back, best of
``repeats`` each (the machine's load moves single samples by tenths of a second):

* ``import torch``: ``python -c "import torch"``;
* whole: ``phasekit run --preset fig1`` as the console script runs it, to a
  temporary file;
* in process: the same run a second time in one interpreter, timed around the
  call (everything imported and every kernel warm).

``gap = whole - import torch - in process`` is what start-up costs beyond torch:
Python itself, phasekit's and the plugins' imports, xarray and netCDF4 (a run writes a
file), and the first use of each kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

#: the run timed: the fig1 preset, its output to a temporary file
RUN = ["run", "--preset", "fig1", "-q"]
#: a second call in the same interpreter, timed around main() (printed on stdout)
_WARM = ("import sys, time\n"
         "from phasekit.cli.main import main\n"
         "args, out = sys.argv[1:-1], sys.argv[-1]\n"
         "assert not main([*args, '-o', out + '.1'])\n"
         "start = time.perf_counter()\n"
         "assert not main([*args, '-o', out + '.2'])\n"
         "print(time.perf_counter() - start)\n")
_WHOLE = "import sys\nfrom phasekit.cli.main import console\nsys.exit(console())\n"


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def startup_times(repeats: int) -> dict[str, float]:
    """Best of ``repeats`` of each time (seconds) and the gap."""
    times: dict[str, list[float]] = {"torch": [], "whole": [], "in_process": []}
    with tempfile.TemporaryDirectory(prefix="phasekit-bench-") as tmp:
        for i in range(repeats):
            out = os.path.join(tmp, f"run{i}.nc")
            times["torch"].append(_wall([sys.executable, "-c", "import torch"]))
            times["whole"].append(_wall([sys.executable, "-c", _WHOLE, *RUN, "-o", out]))
            warm = subprocess.run([sys.executable, "-c", _WARM, *RUN, out], check=True,
                                  capture_output=True, text=True)
            times["in_process"].append(float(warm.stdout.split()[-1]))
    best = {name: min(values) for name, values in times.items()}
    best["gap"] = best["whole"] - best["torch"] - best["in_process"]
    return best


def print_startup(quick: bool) -> None:
    repeats = 2 if quick else 5
    print(f"START: 'phasekit {' '.join(RUN)}' as a whole process against 'import torch' and "
          f"the same run in a warm process, best of {repeats} each")
    print(f"{'row':8} {'import torch s':>14} {'whole s':>8} {'in process s':>12} "
          f"{'gap s':>6} {'load':>5}")
    r = startup_times(repeats)
    print(f"{'START':8} {r['torch']:>14.2f} {r['whole']:>8.2f} {r['in_process']:>12.2f} "
          f"{r['gap']:>6.2f} {os.getloadavg()[0]:>5.1f}")
    sys.stdout.flush()
