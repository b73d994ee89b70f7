"""``phasekit bench``: every row runs under --quick; bad arguments are one-line errors
(exit status 2) before anything is printed; a row says "skipped" only where its
dataset's files or its device are missing, naming which.  Nothing here asserts a speed."""

from __future__ import annotations

import os

import pytest
import torch

from phasekit.cli.main import main
from phasekit.dataset import DataError
from phasekit_plugins import images
from phasekit_plugins.images import FMNIST_SOURCE, locate

#: every row of --workloads W1,W2,W3,W4,W5,presets (its first column), in print order
ALL_ROWS = ["W1", "W2", "W3", "W2-full", "W3-full", "fig1", "default", "fig12", "W5", "W4"]
#: the rows that train on Fashion-MNIST
IMAGE_ROWS = {"W2", "W3", "W2-full", "W3-full", "fig12", "W5"}
EVERYTHING = ["--workloads", "W1,W2,W3,W4,W5,presets"]


def rows(out: str, dtype: str = "float64") -> dict[str, list[str]]:
    """The table rows of bench's output in ``dtype``, by their first column."""
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] in ALL_ROWS and fields[1] == dtype:
            assert fields[0] not in found, f"row {fields[0]} {dtype} printed twice"
            found[fields[0]] = fields
    return found


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "W9"], "--workloads: unknown workload 'W9'; choose from W1, W2, W3, W4, "
                            "W5, M, DRY, START, P-fig1, P-default, P-fig12, presets, "
                            "comma-separated"),
    (["--workloads", "w5"], "--workloads: unknown workload 'w5' (did you mean 'W5'?); "),
    (["--workloads", "W2-full"], "--workloads: unknown workload 'W2-full'"),
    (["--workloads", ""], "--workloads is empty; choose from W1, "),
    (["--workloads", " , "], "--workloads is empty; choose from W1, "),
    (["--workloads", "W1,,W4"], "--workloads 'W1,,W4' has an empty entry; choose from W1, "),
    (["--threads", "-1"], "--threads must be 0 (each workload's default) or a positive number "
                          "of torch threads, got -1"),
    (["--device", "gpu"], "--device must be cpu, cuda or cuda:N (a CUDA device number), got "
                          "'gpu'"),
    (["--device", "cuda:x"], "--device must be cpu, cuda or cuda:N"),
    (["--device", "cuda0"], "--device must be cpu, cuda or cuda:N"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    assert main(["bench", "--quick", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""                                   # not even the machine line
    assert err.count("\n") == 1 and err.startswith(f"phasekit: error: {message}"), err


def test_a_value_argparse_cannot_read_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--threads", "two"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "argument --threads: invalid int value: 'two'" in err


def test_a_missing_device_skips_every_row_and_says_so(capsys):
    device = f"cuda:{torch.cuda.device_count()}"      # one past the last, or none at all
    assert main(["bench", "--quick", *EVERYTHING, "--device", device]) == 0  # both dtypes
    out = capsys.readouterr().out
    have = (f"({torch.cuda.device_count()} CUDA device" if torch.cuda.is_available()
            else f"no CUDA device on this machine (--device {device})")
    for dtype in ("float64", "float32"):
        found = rows(out, dtype)
        assert list(found) == ALL_ROWS
        for fields in found.values():
            text = " ".join(fields[2:])
            assert text.startswith("skipped: missing device: ") and have in text, text


def test_missing_images_skip_their_rows_and_name_the_dataset(capsys, monkeypatch):
    monkeypatch.setattr(images, "SYSTEM_ROOTS", ())    # as on a machine without the package
    monkeypatch.delenv(images.ENV_DATA, raising=False)
    assert main(["bench", "--quick", "--dtype", "float64", "--workloads",
                 "W2,W3,W5,P-fig12"]) == 0
    found = rows(capsys.readouterr().out)
    assert set(found) == IMAGE_ROWS
    for fields in found.values():
        assert " ".join(fields[2:]).startswith(
            "skipped: missing dataset: Fashion-MNIST files not found; to obtain them: install "
            "the Debian package dataset-fashion-mnist")


def test_malformed_images_are_an_error_not_a_skip(capsys, monkeypatch, tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in FMNIST_SOURCE.files:
        (folder / name).write_bytes(b"not an IDX file")
    monkeypatch.setenv(images.ENV_DATA, str(tmp_path))   # searched before the system folders
    assert main(["bench", "--quick", "--dtype", "float64", "--workloads", "W2"]) == 2
    out, err = capsys.readouterr()
    assert "skipped" not in out
    assert err.count("\n") == 1 and err.startswith("phasekit: error: Fashion-MNIST file ")
    assert "is malformed" in err


def fmnist_here() -> bool:
    try:
        locate(FMNIST_SOURCE, "")
    except DataError:
        return False
    return True


@pytest.mark.slow
def test_the_module_rows_run_under_quick(capsys):
    """Workload M: the nets as torch.nn.Modules against the built-ins and the loop."""
    assert main(["bench", "--quick", "--dtype", "float64", "--threads", "1",
                 "--workloads", "M"]) == 0
    out = capsys.readouterr().out
    found = [f for f in map(str.split, out.splitlines())
             if f and f[0] in ("M", "M-uv", "M-relu", "M-loop")]
    if not fmnist_here():
        assert [f[:4] for f in found] == [["M", "float64", "skipped:", "missing"]], out
        return
    assert [f[0] for f in found] == ["M-uv", "M-relu", "M-loop"], out
    for fields in found:
        threads, module, other, ratio = (float(f.rstrip("x").replace(",", ""))
                                         for f in fields[2:])
        assert threads == 1 and module > 0 and other > 0, fields
        assert ratio == pytest.approx(module / other, rel=0.01, abs=0.01), fields
    assert found[1][3] == found[2][3]                 # M-loop's module is M-relu's


@pytest.mark.slow
def test_every_workload_runs_under_quick(capsys):
    """The cheapest complete run: one dtype, one thread where a workload takes --threads
    (W1-W3, W4, W5; the presets run with their own sweep.threads)."""
    assert main(["bench", "--quick", "--dtype", "float64", "--threads", "1",
                 *EVERYTHING]) == 0
    out = capsys.readouterr().out
    found = rows(out)
    assert list(found) == ALL_ROWS, out
    images_here = fmnist_here()
    if not images_here and os.environ.get("PHASEKIT_REQUIRE_REAL_DATA") == "1":
        pytest.fail("PHASEKIT_REQUIRE_REAL_DATA=1 but Fashion-MNIST is not installed")
    for name, fields in found.items():
        assert fields[1] == "float64"
        if name in IMAGE_ROWS and not images_here:
            assert " ".join(fields[2:]).startswith("skipped: missing dataset: Fashion-MNIST")
            continue
        assert "skipped" not in fields, fields
        numeric = fields[2:fields.index("(max_steps")] if "(max_steps" in fields else fields[2:]
        number = [float(f.rstrip("x%").replace(",", "")) for f in numeric]
        if name in ("fig1", "default", "fig12"):          # wall s, run-steps, run-steps/s
            assert len(number) == 3 and all(v > 0 for v in number), fields
            assert (name == "fig12") == (fields[5:] == ["(max_steps", "200,", "--quick)"])
            continue
        assert number[0] == 1, fields                      # --threads
        if name == "W5":                                   # run-steps/s, wall, recorded
            assert number[1] > 0 and number[2] > 0 and number[3] == 101, fields
        elif name == "W4":                                 # axis sweep s, separate s
            assert number[1] > 0 and number[2] > 0, fields
        else:                                              # phasekit, ratio, peak
            assert number[1] > 0 and number[3] > 0 and number[5] > 0, fields


@pytest.mark.slow
def test_start_row_prints_its_three_times_and_their_gap(capsys):
    """START times fresh interpreters; the row's gap is whole - import torch - in process
    as printed (no speed is asserted)."""
    assert main(["bench", "--quick", "--workloads", "START"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    row = next(fields for fields in lines if fields and fields[0] == "START" and len(fields) == 6)
    torch_s, whole, in_process, gap, _load = map(float, row[1:])
    assert 0 < torch_s < whole and 0 < in_process < whole
    assert gap == pytest.approx(whole - torch_s - in_process, abs=0.015)   # printed to 0.01


@pytest.mark.slow
def test_dry_row_reports_each_ratio_and_flags_those_outside(capsys):
    """DRY under --quick: a row per quick preset with estimate, run and their ratio, the
    dry run's time and the load, ``outside`` exactly where the ratio misses 1 by more
    than 30 %, and a last line counting and naming those (no ratio is asserted: it
    depends on the load)."""
    from phasekit.cli.bench import DRY_PRESETS, DRY_TOLERANCE

    assert main(["bench", "--quick", "--dtype", "float64", "--workloads", "DRY"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split() for line in lines
             if line.split() and line.split()[0] in DRY_PRESETS}
    assert list(table) == list(DRY_PRESETS[:2])
    flagged = []
    for name, fields in table.items():
        estimate, run, ratio, dry, load = map(float, fields[1:6])
        assert estimate > 0 and run > 0 and dry > 0 and load >= 0, fields
        # the printed ratio is estimate / run before either was rounded to 2 decimals:
        # within what the printed precision allows (each value +/- 0.005)
        half = 0.005
        low, high = (estimate - half) / (run + half), (estimate + half) / (run - half)
        assert low - half <= ratio <= high + half, fields
        assert fields[6:] == (["outside"] if abs(ratio - 1) > DRY_TOLERANCE else []), fields
        flagged += [name] if fields[6:] else []
    assert lines[-1] == (f"DRY: {len(flagged)} preset(s) outside 1 +/- 30%"
                         + (f": {', '.join(flagged)}" if flagged else ""))
