"""The documented commands work as documented.

Every ``phasekit`` command in the ```console blocks of README.md and the guides below
is parsed by the real argument parser; the cheap ones are run in document order in
a scratch folder (``run`` with a tiny grid appended, so later commands find the
files earlier ones wrote), and an output a guide quotes after a ``$`` command must
be what the command prints (durations aside; ``...`` stands for any lines).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from phasekit.cli.main import _build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/quickstart.md", "docs/boundary.md", "docs/scale.md"]
#: appended to a documented command that quotes no output: one seed, few steps
TINY = {"run": ["--set", "sweep.seeds=[0]", "--set", "sweep.max_steps=50", "--overwrite",
                "-q"],
        "boundary": ["--set", "sweep.seeds=[0]", "--set", "sweep.max_steps=200", "--overwrite",
                     "-q"]}
#: commands parsed but not run here, and why
NOT_RUN = {
    "--workers": "starts a Dask cluster (tests/test_runner.py runs one)",
    "--scheduler": "needs a running Dask scheduler",
    "bench": "takes minutes (tests/test_runner.py runs bench --quick on W1)",
}
DURATION = re.compile(r"\d+(?:\.\d+)? s\)")


def console_blocks(path: Path) -> list[str]:
    return re.findall(r"```console\n(.*?)```", path.read_text(), flags=re.S)


def commands(block: str) -> list[tuple[list[str], list[str]]]:
    """(argv of each phasekit command, the output quoted after it).  A block whose
    lines start with ``$`` quotes outputs; in other blocks every line is a command."""
    prompted = any(line.startswith("$ ") for line in block.splitlines())
    out: list[tuple[list[str], list[str]]] = []
    for line in block.splitlines():
        if prompted and not line.startswith("$ "):
            if out and line.strip():
                out[-1][1].append(line)
            continue
        tokens = shlex.split(line[2:] if prompted else line, comments=True)
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token != "&&":
                segment.append(token)
                continue
            if segment and Path(segment[0]).name == "phasekit":
                out.append((segment[1:], []))
            elif segment and prompted:
                out.append(([], []))       # another program: its output is not ours
            segment = []
    return [(argv, expected) for argv, expected in out if argv]


def documented() -> list[tuple[str, list[str], list[str]]]:
    found = []
    for name in DOCUMENTS:
        for block in console_blocks(ROOT / name):
            found += [(name, argv, expected) for argv, expected in commands(block)]
    return found


def quickstart_toml() -> str:
    text = (ROOT / "docs/quickstart.md").read_text()
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)[0]


def matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` (``...`` lines skip any lines) appears in ``actual`` in order, each
    stretch between ``...`` as consecutive lines."""
    def norm(line: str) -> str:
        return DURATION.sub("N s)", line.rstrip())

    actual = [norm(line) for line in actual]
    stretches, current = [], []
    for line in expected:
        if line.strip() == "...":
            stretches.append(current)
            current = []
        else:
            current.append(norm(line))
    stretches.append(current)
    pos = 0
    for stretch in filter(None, stretches):
        for start in range(pos, len(actual) - len(stretch) + 1):
            if actual[start:start + len(stretch)] == stretch:
                pos = start + len(stretch)
                break
        else:
            return False
    return True


def test_the_guides_document_phasekit_commands():
    found = documented()
    assert len(found) >= 10
    assert {argv[0] for _, argv, _ in found} >= {"run", "plot", "analyze", "boundary",
                                                 "bench", "plugins", "presets"}
    assert any(expected for _, _, expected in found)          # some quote their output


@pytest.mark.parametrize("where, argv", [(w, a) for w, a, _ in documented()],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_documented_command_parses(where, argv):
    try:
        _build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: phasekit {' '.join(argv)} does not parse (exit {exc.code})")


@pytest.mark.slow
def test_documented_commands_run_and_print_what_is_quoted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.toml").write_text(quickstart_toml())
    ran = []
    for where, argv, expected in documented():
        skip = [why for flag, why in NOT_RUN.items() if flag in argv]
        if skip:
            continue
        full = argv if expected else [*argv, *TINY.get(argv[0], [])]
        code = main(full)
        captured = capsys.readouterr()
        assert code == 0, f"{where}: phasekit {' '.join(full)}\n{captured.err}"
        if expected:
            actual = (captured.err + captured.out).splitlines()
            assert matches(expected, actual), (
                f"{where}: the output quoted after `phasekit {' '.join(argv)}` is not what "
                f"it prints:\n" + "\n".join(actual))
        ran.append(argv[0])
    assert {"run", "plot", "analyze", "boundary", "presets", "plugins"} <= set(ran)


def test_quickstart_float32_override_needs_no_extra_quotes(tmp_path, monkeypatch):
    """``--set sweep.dtype=float32`` as the quick start writes it: a bare word is a
    string, and the sweep really is float32."""
    import xarray as xr

    line = next(argv for where, argv, _ in documented()
                if where == "docs/quickstart.md" and "my.toml" in argv)
    assert "sweep.dtype=float32" in line
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.toml").write_text(quickstart_toml())
    assert main([*line, *TINY["run"]]) == 0
    with xr.open_dataset(tmp_path / "my.nc") as ds:
        assert 'dtype = "float32"' in ds.attrs["config"]


def synopses() -> list[tuple[str, str, str]]:
    """(document, subcommand, text) of every synopsis: a ```text block or an inline
    code span that starts ``phasekit <subcommand> [``."""
    found = []
    for name in DOCUMENTS:
        text = (ROOT / name).read_text()
        spans = re.findall(r"```text\n(phasekit \w+ \[.*?)```", text, flags=re.S)
        spans += re.findall(r"`(phasekit \w+ \[[^`]*)`", text)
        found += [(name, span.split()[1], span) for span in spans]
    return found


def test_synopses_list_exactly_the_options_of_the_parser():
    parser = _build_parser()
    subcommands = next(a for a in parser._actions if a.choices).choices
    found = synopses()
    assert {sub for _, sub, _ in found} >= {"boundary", "bench"}
    for where, sub, text in found:
        written = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text))
        actions = [a for a in subcommands[sub]._actions
                   if a.option_strings and "--help" not in a.option_strings]
        known = {s for a in actions for s in a.option_strings}
        assert written <= known, f"{where}: phasekit {sub} has no {written - known}"
        missing = [a.option_strings for a in actions if not set(a.option_strings) & written]
        assert not missing, f"{where}: the synopsis of phasekit {sub} lacks {missing}"


def test_matches_reports_drift():
    actual = ["round 0: 3 run(s) (1.5 s)", "round 1: 1 run(s) (2.0 s)", "c_max = 3.8"]
    assert matches(["round 0: 3 run(s) (9.9 s)", "...", "c_max = 3.8"], actual)
    assert not matches(["round 0: 3 run(s) (9.9 s)", "c_max = 3.8"], actual)
    assert not matches(["c_max = 3.9"], actual)
