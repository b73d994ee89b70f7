"""Declared options of models, datasets and the sweep, and their validation.

Every configurable thing declares its options as a mapping ``name -> Option``.
:func:`resolve_options` turns the user's table into a complete, type-checked
mapping (defaults filled in) or raises :class:`ConfigError` naming the key.
Values in messages are written as TOML writes them
(:func:`phasekit.errors.toml_value`): ``got true``, ``got "abc"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from phasekit.errors import ConfigError, suggest, toml_value

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
            raise ConfigError(f"{key} must be a number, got {toml_value(value)}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {toml_value(value)}")
        return value
    if kind is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {toml_value(value)}")
        if item is not None:
            return [_coerce(f"{key}[{i}]", v, item, None) for i, v in enumerate(value)]
        return list(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                          f"got {toml_value(value)}")
    return value


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    """``unknown key 'T.K'. Did you mean 'X'? Known keys: ...`` for the dotted ``key``.

    ``known`` is every key the table accepts; the suggestion is
    :func:`phasekit.errors.suggest` of the key's last part among them.
    """
    known = sorted(set(map(str, known)))
    close = suggest(key.rsplit(".", 1)[-1], known)
    hint = f" Did you mean '{close}'?" if close else ""
    return f"unknown key '{key}'.{hint} Known keys: {', '.join(known) or '(none)'}."


def resolve_options(table: str, schema: Mapping[str, Option], given: Mapping[str, Any], *,
                    extra_known: Iterable[str] = ()) -> dict[str, Any]:
    """Validate ``given`` against ``schema`` and fill in defaults.

    ``table`` is the dotted prefix used in error messages, e.g. ``"model"``.
    ``extra_known`` names keys of the same table that the caller validates
    itself (``sweep.seeds``, ``model.name``): they are listed among the known
    keys and suggested for near misses in the unknown-key message, and if
    present in ``given`` they are copied to the result unchecked.
    Values in messages are the user's, written as TOML.
    """
    if not isinstance(given, Mapping):
        raise ConfigError(f"[{table}] must be a table, got {toml_value(given)}")
    if isinstance(extra_known, str):
        extra_known = (extra_known,)
    extra = [k for k in extra_known if k not in schema]
    for key in given:
        if key not in schema and key not in extra:
            raise ConfigError(unknown_key_message(f"{table}.{key}", [*schema, *extra]))
    out: dict[str, Any] = {}
    for key, opt in schema.items():
        full = f"{table}.{key}"
        if key not in given:
            out[key] = opt.default
            continue
        raw = given[key]
        value = _coerce(full, raw, opt.kind, opt.item)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{full} must be finite, got {toml_value(raw)}")
        if opt.choices is not None and value not in opt.choices:
            raise ConfigError(f"{full} must be one of {', '.join(map(toml_value, opt.choices))}"
                              f"; got {toml_value(raw)}")
        if opt.check is not None:
            problem = opt.check(value)
            if problem:
                raise ConfigError(f"{full} {problem}; got {toml_value(raw)}")
        out[key] = value
    for key in extra:
        if key in given:
            out[key] = given[key]
    return out


# Reusable range checks -------------------------------------------------------------

def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be zero or positive"


def positive_even(v) -> str | None:
    if v <= 0:
        return "must be a positive even integer"
    return None if v % 2 == 0 else ("must be even (eigenvalues come in +/- pairs, "
                                    "docs/theory.md §2.1)")
