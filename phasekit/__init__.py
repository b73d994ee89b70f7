"""phasekit: learning-rate phase diagrams of quadratic models and wide networks.

``docs/theory.md`` explains the physics; equation numbers (eq. N) refer to
Meltzer & Liu, "Catapult Dynamics and Phase Transitions in Quadratic Nets".

``import phasekit`` registers the ``ds.phasekit`` xarray accessor
(:mod:`phasekit.accessor`) without importing xarray itself: at once if xarray is
already imported, else right after xarray's own import completes (a one-shot
import hook), so ``import phasekit; xr.open_dataset(...).phasekit`` works in
either order while the command line, which imports this package, stays light
(docs/performance.md, start-up).
"""

from phasekit import _startup

_startup.install_if_command()       # first: Ctrl-C while the command starts is one line

import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from phasekit.hookspecs import hookimpl  # noqa: E402

try:
    __version__ = version("phasekit")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"


def _register_accessor() -> None:
    from phasekit import accessor  # noqa: F401  (registers the ds.phasekit xarray accessor)


class _RegisterAfterXarray(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when ``xarray`` is first imported it removes itself from
    ``sys.meta_path``, lets the other finders locate xarray, and wraps that spec's
    ``exec_module`` so that the accessor is registered as soon as xarray is loaded."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "xarray":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("xarray")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_accessor()

        spec.loader.exec_module = exec_then_register
        return spec


if "xarray" in sys.modules:
    _register_accessor()
elif not any(isinstance(f, _RegisterAfterXarray) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterXarray())


__all__ = ["hookimpl", "__version__"]
