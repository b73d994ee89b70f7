"""The border between the plugins and the engine: every value a model or an observable
hands the engine is checked here, and a plugin that raises is reported, so that a
broken plugin ends in one :class:`~phasekit.errors.PluginError` naming the plugin, the
hook and what was expected, never in a traceback from deep inside the engine.

The checks are on types and shapes only (a few comparisons per call), so they run on
every call the engine makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from phasekit.errors import PluginError


def call(who: str, hook: str, fn: Callable, *args) -> Any:
    """``fn(*args)``; an exception from the plugin becomes a PluginError naming it."""
    try:
        return fn(*args)
    except PluginError:
        raise
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's failure, reported as such
        raise PluginError(f"{who}: {hook} raised {type(exc).__name__}: {exc}") from exc


def tensor(who: str, hook: str, value: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """``value`` if it is a floating-point tensor of ``shape`` (``-1``: any size)."""
    if not isinstance(value, torch.Tensor):
        raise PluginError(f"{who}: {hook} must return {what}, a tensor of shape "
                          f"{_shape_text(shape)}; it returned {type(value).__name__}")
    if tuple(value.shape) != shape and not _matches(tuple(value.shape), shape):
        raise PluginError(f"{who}: {hook} must return {what} of shape {_shape_text(shape)}; "
                          f"it returned shape {tuple(value.shape)}")
    if not (value.is_floating_point() or value.dtype == torch.bool):
        raise PluginError(f"{who}: {hook} must return floating-point {what}; it returned "
                          f"dtype {value.dtype}")
    return value


def setup_result(who: str, value: Any) -> tuple[Any, torch.Tensor]:
    """``Model.setup``'s ``(features, theta0)``, with ``theta0`` a 1-D float tensor."""
    if not (isinstance(value, tuple) and len(value) == 2):
        raise PluginError(f"{who}: setup must return (features, theta0); it returned "
                          f"{type(value).__name__} {value!r:.60}")
    features, theta0 = value
    tensor(who, "setup", theta0, (-1,), "theta0, the initial parameters,")
    if theta0.numel() == 0:
        raise PluginError(f"{who}: setup returned theta0 with no parameters")
    return features, theta0


def bounds(who: str, value: Any) -> list:
    """``Model.bounds``' list of :class:`~phasekit.model.Bound`."""
    from phasekit.model import Bound

    if not isinstance(value, list | tuple) or not all(isinstance(b, Bound) for b in value):
        raise PluginError(f"{who}: bounds must return a list of phasekit.model.Bound; it "
                          f"returned {type(value).__name__} {value!r:.60}")
    return list(value)


def _matches(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(shape) == len(want) and all(w in (-1, s) for s, w in zip(shape, want,
                                                                        strict=True))


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("any" if s == -1 else str(s) for s in shape) + \
        ("," if len(shape) == 1 else "") + ")"
