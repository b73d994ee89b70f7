"""``.ci/lower_bounds.py``, which pins tox's ``mindeps`` env: every requirement of
pyproject.toml (dependencies and the test extra) at the lower bound declared there,
and a requirement without one refused."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def script():
    spec = importlib.util.spec_from_file_location("lower_bounds", ROOT / ".ci" / "lower_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_declared_requirement_is_pinned_at_its_lower_bound(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {}
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        [low] = [s.version for s in req.specifier if s.operator == ">="]
        expected[canonicalize_name(req.name)] = low
    del expected["torch"]
    out = tmp_path / "constraints.txt"
    assert script().main(["--except", "torch", "-o", str(out)]) == 0
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert dict(line.split("==") for line in lines) == expected


@pytest.mark.parametrize("requirement, why", [
    ("numpy", "needs exactly one lower bound"),
    ("numpy<3", "needs exactly one lower bound"),
    ("numpy==1.26", "needs exactly one lower bound"),
    ("numpy>=1.24,>=1.26", "needs exactly one lower bound"),
    ("numpy>=1.24; python_version < '3.13'", "cannot read requirement"),
])
def test_a_requirement_without_one_lower_bound_is_refused(tmp_path, capsys, requirement, why):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nname = "x"\ndependencies = ["pluggy>=1.3", "{requirement}"]'
                         f'\n[project.optional-dependencies]\ntest = []\n')
    assert script().main(["--pyproject", str(pyproject)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("lower_bounds: error: pyproject.toml: ") and why in err
