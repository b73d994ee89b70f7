"""phasekit's exceptions and warnings, and the one place that formats their messages.

Every exception class the core raises at a user is defined here (a plugin raises
:class:`ConfigError` for a bad option and :class:`DataError` for data it cannot
build); the command line turns each into one ``phasekit: error: ...`` line.

- :func:`toml_value` writes a config value the way TOML does (``true``, not
  ``True``; ``"abc"``, not ``'abc'``), so a message shows the user what to type.
  Every error message about a config value quotes the value through it.
- :func:`suggest` finds the candidate a misspelt key or name was meant to be.
- :func:`error_line` and :func:`warning_line` are the single lines the command
  line prints: ``phasekit: error: ...`` and ``phasekit: warning: ...``.
- :func:`install` makes Python's warning machinery print phasekit's own
  warnings as such a line, without file name, line number or source line.

Third-party libraries' warnings (torch, numpy, xarray, dask) are left in
Python's usual format: they describe a condition inside that library, the file
and line are what one needs to report or silence them (``-W ignore::...``), and
printing them as ``phasekit: warning:`` would attribute them to phasekit.
"""

from __future__ import annotations

import datetime
import difflib
import math
import numbers
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

PROG = "phasekit"

#: Packages whose warning categories count as phasekit's own (the core and the
#: built-in plugins), besides any subclass of :class:`PhasekitWarning`.
OWN_PACKAGES = ("phasekit", "phasekit_plugins")


class PhasekitWarning(UserWarning):
    """Base class of phasekit's warnings.

    A plugin whose warning categories derive from it gets its warnings printed
    by the command line as one ``phasekit: warning: ...`` line, like phasekit's.
    """


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and how to fix it."""


class DataError(RuntimeError):
    """A dataset could not be built or loaded; the message says what and how to fix it."""


class SweepFileError(ValueError):
    """A file that is not a phasekit sweep, or lacks what is asked of it."""


class HessianError(ConfigError):
    """The Lanczos iteration on a loss Hessian did not converge; the message names the
    model and how to avoid it (phasekit.engine.hessian)."""


class OutputError(ConfigError):
    """An output that cannot be written, is in use, or is not phasekit's to replace."""


class OutputWarning(PhasekitWarning):
    """Something about an output worth knowing that stops nothing."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept (the message completes ``phasekit: interrupted; ...``)."""


class ResumeError(ConfigError):
    """Stored partial results that cannot be combined with this run."""


class PluginError(ConfigError):
    """A plugin handed phasekit something it cannot use, or raised inside a hook; the
    message names the plugin, the hook and what was expected."""


class PluginWarning(PhasekitWarning):
    """A plugin could not be loaded, failed inside a hook, or clashed with another."""


# -- values ---------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.match(key) else _toml_string(key)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value, for messages.

    Booleans are ``true``/``false``, strings double-quoted with TOML's escapes,
    floats ``inf``/``-inf``/``nan`` where not finite, lists ``[a, b]`` and
    tables ``{key = value}``; dates and times in ISO 8601.  Zero-dimensional
    numpy or torch values are written as the number they hold, arrays as lists.
    What TOML cannot hold (``None``, arbitrary objects) is shown with ``repr``.
    The result is always a single line.
    """
    return _value(value, set())


def _value(value: Any, seen: set[int]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        if id(value) in seen:                      # a container holding itself
            return "{...}" if isinstance(value, Mapping) else "[...]"
        seen = seen | {id(value)}
        if isinstance(value, Mapping):
            return "{" + ", ".join(f"{_toml_key(k)} = {_value(v, seen)}"
                                   for k, v in value.items()) + "}"
        return "[" + ", ".join(_value(v, seen) for v in value) + "]"
    if hasattr(value, "tolist") and hasattr(value, "ndim") and hasattr(value, "dtype"):
        try:                                        # numpy / torch scalars and arrays
            plain = value.tolist()
        except Exception:  # noqa: BLE001 - fall back to repr below
            plain = None
        if plain is not None and not hasattr(plain, "tolist"):
            return _value(plain, seen)
    return one_line(repr(value))


# -- suggestions ----------------------------------------------------------------------

#: How similar (difflib ratio) a candidate must be to be suggested.
SUGGEST_CUTOFF = 0.7
#: Shortest word that is matched as a prefix of a candidate (``eta`` -> ``eta_lambda0``).
PREFIX_MIN = 3


def _norm(word: str) -> str:
    return word.lower().replace("-", "_")


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether one insertion, deletion, substitution or swap of neighbours turns a into b."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = next((k for k in range(len(a)) if a[k] != b[k]), len(a))
    if len(a) < len(b):
        return a[i:] == b[i + 1:]
    return a[i + 1:] == b[i + 1:] or (a[i + 2:] == b[i + 2:] and a[i:i + 2] == b[i:i + 2][::-1])


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be, or ``None``.

    In order: the same word up to case and ``-``/``_``; a candidate that
    ``word`` begins (``eta`` -> ``eta_lambda0``) or that begins ``word``
    (``tolerance`` -> ``tol``), both at least ``PREFIX_MIN`` characters long;
    a candidate one typo away (a letter added, dropped, changed, or two
    neighbours swapped: ``dpu`` -> ``dup``), for words of at least
    ``PREFIX_MIN`` characters; else the most similar candidate by
    :mod:`difflib` with a ratio of at least ``SUGGEST_CUTOFF``.  Where several
    candidates qualify at one step, the most similar one wins.
    """
    by_norm: dict[str, str] = {}
    for cand in sorted(set(map(str, candidates))):
        by_norm.setdefault(_norm(cand), cand)
    w = _norm(str(word))
    if not w or not by_norm:
        return None
    if w in by_norm:
        return by_norm[w]

    def ratio(n: str) -> float:
        return difflib.SequenceMatcher(None, w, n).ratio()

    prefixed = [n for n in by_norm
                if min(len(n), len(w)) >= PREFIX_MIN and (n.startswith(w) or w.startswith(n))]
    if prefixed:
        return by_norm[max(prefixed, key=lambda n: (ratio(n), -len(n)))]
    typos = [n for n in by_norm if len(w) >= PREFIX_MIN and _one_edit_apart(w, n)]
    if typos:
        return by_norm[max(typos, key=ratio)]
    close = difflib.get_close_matches(w, list(by_norm), n=1, cutoff=SUGGEST_CUTOFF)
    return by_norm[close[0]] if close else None


# -- lines ----------------------------------------------------------------------------

def one_line(text: str) -> str:
    """``text`` on one line: lines joined by a space after punctuation, else ``"; "``."""
    parts = [line.strip() for line in str(text).splitlines() if line.strip()]
    out = ""
    for part in parts:
        if out:
            out += " " if out[-1] in ".:;,!?" else "; "
        out += part
    return out


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` of an exception, on one line (the type alone if no message)."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_line(exc: BaseException | str) -> str:
    """The line ``phasekit: error: <message>`` for an exception (or a message)."""
    text = exc if isinstance(exc, str) else str(exc)
    text = one_line(text) or (type(exc).__name__ if not isinstance(exc, str) else "")
    return f"{PROG}: error: {text}"


def warning_line(message: Warning | str) -> str:
    """The line ``phasekit: warning: <message>``."""
    return f"{PROG}: warning: {one_line(str(message))}"


# -- the warnings hook ----------------------------------------------------------------

def is_own(category: type[Warning]) -> bool:
    """Whether warnings of ``category`` are phasekit's (printed as one line)."""
    if isinstance(category, type) and issubclass(category, PhasekitWarning):
        return True
    module = getattr(category, "__module__", None) or ""
    return module.split(".", 1)[0] in OWN_PACKAGES


def install() -> None:
    """Print phasekit's warnings as ``phasekit: warning: <message>`` on stderr.

    Replaces :func:`warnings.showwarning` and :func:`warnings.formatwarning`
    with versions that write phasekit's own categories (see :func:`is_own`)
    as one line and hand every other warning to the functions they replace.
    Calling it again changes nothing.  Which warnings are shown at all is
    still decided by the warning filters (``-W``, ``PYTHONWARNINGS``).
    """
    previous_show = warnings.showwarning
    previous_format = warnings.formatwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not is_own(category):
            previous_show(message, category, filename, lineno, file, line)
            return
        stream = sys.stderr if file is None else file
        if stream is None:                         # no console (pythonw)
            return
        try:
            stream.write(warning_line(message) + "\n")
        except OSError:                            # a closed stream loses the warning
            pass

    def formatwarning(message, category, filename, lineno, line=None):
        if not is_own(category):
            return previous_format(message, category, filename, lineno, line)
        return warning_line(message) + "\n"

    # Each is replaced only if it is not ours already: warnings.catch_warnings
    # restores showwarning but not formatwarning, so they can come apart.
    if not getattr(previous_show, "_phasekit", False):
        showwarning._phasekit = True
        warnings.showwarning = showwarning
    if not getattr(previous_format, "_phasekit", False):
        formatwarning._phasekit = True
        warnings.formatwarning = formatwarning


def fmt_bytes(n: float) -> str:
    """A size for a message: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
