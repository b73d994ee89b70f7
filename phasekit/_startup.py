"""The first lines the ``phasekit`` command runs: Ctrl-C or SIGTERM while it starts (the
package and the command line import) end in one line, never a traceback.

:mod:`phasekit` imports this before anything else; only when the process is the
``phasekit`` command (``sys.argv[0]``) are the handlers installed, so a library or
notebook that imports phasekit keeps its own.  :func:`phasekit.cli.main.main`
replaces them with its own, which say what was kept.
"""

import os
import signal
import sys


def interrupted_while_starting(signum, frame) -> None:
    """Before :func:`phasekit.cli.main.main` runs nothing is written: say so, and exit
    as the signal would (128 + its number)."""
    os.write(2, b"phasekit: interrupted; nothing was written\n")
    os._exit(128 + signum)


def install_if_command() -> None:
    """Install the handlers where this process is the ``phasekit`` command itself: not
    a library, nor a worker process it spawned (``multiprocessing`` already loaded,
    ``sys.argv`` copied from the command), and never over a signal that is ignored
    (Dask's workers are started with SIGINT ignored)."""
    if os.path.basename(sys.argv[0] if sys.argv else "") != "phasekit" \
            or "multiprocessing" in sys.modules:
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, interrupted_while_starting)
