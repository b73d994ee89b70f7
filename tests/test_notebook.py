"""The example notebook in docs/ runs from top to bottom."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[1] / "docs" / "example_notebook.py"


@pytest.mark.slow
def test_example_notebook_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(NOTEBOOK), run_name="__main__")
    for name in ("sweep.nc", "sweep.png", "boundary.nc"):
        assert (tmp_path / name).stat().st_size > 0, name
    ds = namespace["ds"]
    assert "phase" in ds
    assert set(ds["phase"].values.ravel()) >= {"lazy", "catapult", "divergent"}
    assert namespace["crit"].sizes["seed"] == 3
    assert (namespace["b"]["c_max"].values > 3.5).all()
    assert "c_max" in capsys.readouterr().out


def test_notebook_cells_use_no_private_imports():
    text = NOTEBOOK.read_text()
    assert text.count("# %%") >= 8
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert all("._" not in line and " _" not in line for line in imports)
