"""Declared options of models, datasets and the sweep, and their validation.

Every configurable thing declares its options as a mapping ``name -> Option``.
:func:`resolve_options` turns the user's table into a complete, type-checked
mapping (defaults filled in) or raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and how to fix it."""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list"}


@dataclass(frozen=True)
class Option:
    """One option of a plugin or of the sweep.

    ``type`` is one of ``int``, ``float``, ``str``, ``bool``, ``list``; ``None``
    as default means "derived from the other options" (the plugin fills it in).
    ``item`` is the element type of a list.  ``check`` returns an error message
    for a value that has the right type but is out of range, else ``None``.
    """

    default: Any
    help: str
    type: type | None = None
    choices: tuple | None = None
    item: type | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def kind(self) -> type:
        if self.type is not None:
            return self.type
        if self.default is None:
            raise TypeError("an Option with default None needs an explicit type")
        return type(self.default)


def _coerce(key: str, value: Any, kind: type, item: type | None) -> Any:
    """Check the TOML value's type, converting ints to floats where a number is wanted."""
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if item is not None:
            return [_coerce(f"{key}[{i}]", v, item, None) for i, v in enumerate(value)]
        return list(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
    return value


def unknown_key_message(key: str, known) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}'.{hint} Known keys: {', '.join(sorted(known)) or '(none)'}."


def resolve_options(table: str, schema: Mapping[str, Option], given: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """Validate ``given`` against ``schema`` and fill in defaults.

    ``table`` is the dotted prefix used in error messages, e.g. ``"model"``.
    """
    for key in given:
        if key not in schema:
            raise ConfigError(unknown_key_message(f"{table}.{key}", schema))
    out: dict[str, Any] = {}
    for key, opt in schema.items():
        full = f"{table}.{key}"
        if key not in given:
            out[key] = opt.default
            continue
        value = _coerce(full, given[key], opt.kind, opt.item)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{full} must be finite, got {value!r}")
        if opt.choices is not None and value not in opt.choices:
            raise ConfigError(f"{full} must be one of {', '.join(map(repr, opt.choices))}; "
                              f"got {value!r}")
        if opt.check is not None:
            problem = opt.check(value)
            if problem:
                raise ConfigError(f"{full} {problem}; got {value!r}")
        out[key] = value
    return out


# Reusable range checks -------------------------------------------------------------

def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be zero or positive"


def positive_even(v) -> str | None:
    if v <= 0:
        return "must be a positive even integer"
    return None if v % 2 == 0 else "must be even (eigenvalues come in +/- pairs, SPEC 2.1)"
