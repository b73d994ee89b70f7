"""phasekit: learning-rate phase diagrams of quadratic models and wide networks.

``docs/theory.md`` explains the physics; equation numbers (eq. N) refer to
Meltzer & Liu, "Catapult Dynamics and Phase Transitions in Quadratic Nets".
"""

from importlib.metadata import PackageNotFoundError, version

from .hookspecs import hookimpl

try:
    __version__ = version("phasekit")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

from . import accessor  # noqa: E402,F401  (registers the ds.phasekit xarray accessor)

__all__ = ["hookimpl", "__version__"]
