"""One place formats messages: TOML values, suggestions, one-line errors and warnings."""

from __future__ import annotations

import datetime
import subprocess
import sys
import tomllib
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phasekit import errors
from phasekit.errors import (
    ConfigError,
    PhasekitWarning,
    error_line,
    one_line,
    suggest,
    toml_value,
    warning_line,
)


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (3, "3"), (-0.5, "-0.5"), (1e300, "1e+300"),
    (float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan"),
    ("abc", '"abc"'), ("it's", '"it\'s"'), ('say "hi"', r'"say \"hi\""'),
    ("a\\b", r'"a\\b"'), ("line\nbreak\ttab", r'"line\nbreak\ttab"'),
    ("\x00\x7f", r'"\u0000\u007F"'),
    ("é", '"é"'), ([1, "a", [True]], '[1, "a", [true]]'), ((1, 2), "[1, 2]"), ([], "[]"),
    ({"a": 1, "b c": [False], "": "x"}, '{a = 1, "b c" = [false], "" = "x"}'),
    (datetime.date(2024, 5, 1), "2024-05-01"),
    (datetime.datetime(2024, 5, 1, 7, 30), "2024-05-01T07:30:00"),
    (np.float32(1.5), "1.5"), (np.int64(7), "7"), (np.bool_(False), "false"),
    (np.array([[1, 2], [3, 4]]), "[[1, 2], [3, 4]]"),
    (None, "None"),
])
def test_values_are_written_as_toml(value, text):
    assert toml_value(value) == text


def test_a_container_holding_itself_is_written_once():
    loop: list = [1]
    loop.append(loop)
    table: dict = {"a": 1}
    table["self"] = table
    assert toml_value(loop) == "[1, [...]]"
    assert toml_value(table) == "{a = 1, self = {...}}"


def test_objects_toml_cannot_hold_are_shown_on_one_line():
    class Odd:
        def __repr__(self):
            return "Odd(\n  1)"

    assert toml_value(Odd()) == "Odd(; 1)"


_keys = st.text(max_size=6)
_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=12)
            | st.floats(allow_nan=False))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_keys, inner, max_size=4), max_leaves=12)


@given(_values)
def test_toml_value_reads_back_as_the_same_value_on_one_line(value):
    text = toml_value(value)
    assert "\n" not in text and "\r" not in text
    assert tomllib.loads(f"v = {text}")["v"] == value


@pytest.mark.parametrize("word, candidates, meant", [
    ("seed", ["seeds", "tol"], "seeds"),
    ("eta", ["eta_lambda0", "max_steps"], "eta_lambda0"),
    ("tolerance", ["tol", "threads"], "tol"),
    ("WIDTH", ["width", "depth"], "width"),
    ("max-steps", ["max_steps"], "max_steps"),
    ("widht", ["width", "depth"], "width"),
    ("dpu", ["dup", "quadratic"], "dup"), ("wdith", ["width", "depth"], "width"),
    ("ab", ["ba"], None),                             # too short for a typo
    ("record", ["record_dense", "record_per_decade"], "record_dense"),
    ("lr", ["eta_lambda0", "seeds"], None),
    ("et", ["eta_lambda0"], None),                    # too short to be a prefix
    ("x", [], None), ("", ["a"], None),
])
def test_suggest(word, candidates, meant):
    assert suggest(word, candidates) == meant


def test_error_and_warning_lines_are_single_lines():
    assert error_line(ConfigError("a.b must be positive; got -1")) == (
        "phasekit: error: a.b must be positive; got -1")
    assert error_line(ValueError("no files in /x.\nThe fallback failed too: none\n  here")) == (
        "phasekit: error: no files in /x. The fallback failed too: none; here")
    assert error_line(KeyError()) == "phasekit: error: KeyError"
    assert error_line("plain text") == "phasekit: error: plain text"
    assert warning_line(PhasekitWarning("two\nlines")) == "phasekit: warning: two; lines"
    assert one_line("  \n a \n\n b. \n") == "a; b."


@pytest.fixture
def passed_on(monkeypatch):
    """errors.install() for one test, over a showwarning that records what reaches it.

    Yields that record; the previous functions come back afterwards.
    """
    record = []
    monkeypatch.setattr(warnings, "showwarning", lambda *args: record.append(args))
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        errors.install()
        yield record


class ElsewhereWarning(UserWarning):
    """A category of some other library."""


BuiltinPluginWarning = type("BuiltinPluginWarning", (UserWarning,),
                            {"__module__": "phasekit_plugins.somewhere"})


SubclassWarning = type("SubclassWarning", (PhasekitWarning,), {})


@pytest.mark.parametrize("category", [PhasekitWarning, SubclassWarning, BuiltinPluginWarning])
def test_own_warnings_print_as_one_line(passed_on, capsys, category):
    warnings.warn("plugin 'x' is broken:\nImportError: no", category, stacklevel=1)
    assert capsys.readouterr().err == "phasekit: warning: plugin 'x' is broken: ImportError: no\n"
    assert passed_on == []
    assert warnings.formatwarning("m", category, "/a/b.py", 3, "src") == "phasekit: warning: m\n"


def test_other_warnings_are_passed_on_with_their_file_and_line(passed_on, capsys):
    warnings.warn("library says", ElsewhereWarning, stacklevel=1)
    assert capsys.readouterr().err == ""
    [(message, category, filename, lineno, *_)] = passed_on
    assert (str(message), category, filename) == ("library says", ElsewhereWarning, __file__)
    assert lineno > 0
    formatted = warnings.formatwarning("m", RuntimeWarning, "/a/b.py", 3, "src")
    assert formatted.startswith("/a/b.py:3: RuntimeWarning: m")


def test_install_twice_changes_nothing(passed_on):
    show, fmt = warnings.showwarning, warnings.formatwarning
    errors.install()
    assert (warnings.showwarning, warnings.formatwarning) == (show, fmt)


def test_install_again_after_showwarning_was_restored_does_not_wrap_twice(passed_on,
                                                                          monkeypatch):
    fmt = warnings.formatwarning
    # warnings.catch_warnings restores showwarning on exit but leaves formatwarning
    monkeypatch.setattr(warnings, "showwarning", lambda *args: passed_on.append(args))
    errors.install()
    assert getattr(warnings.showwarning, "_phasekit", False)
    assert warnings.formatwarning is fmt


def test_outside_pytest_the_warning_is_exactly_one_line():
    code = ("import warnings; from phasekit import errors as d; d.install(); "
            "warnings.warn('first\\nsecond', d.PhasekitWarning); "
            "warnings.warn('other', RuntimeWarning)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["phasekit: warning: first; second",
                                        "<string>:1: RuntimeWarning: other"]  # as Python has it


def test_the_command_line_prints_one_error_line_in_toml_words(monkeypatch, capsys):
    from phasekit.cli.main import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)   # main() installs
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    assert main(["run", "--dry-run", "--set", "sweep.max_steps=true"]) == 2
    assert capsys.readouterr().err == (
        "phasekit: error: sweep.max_steps must be an integer, got true\n")
