"""The package's layers: no import cycle, and no import from a lower layer to a higher one.

Every ``import`` and ``from ... import`` in ``phasekit/`` counts, at module level or
inside a function (a deferred import still ties the modules together).  A module
belongs to the layer of its first name below ``phasekit`` (``phasekit.engine.spectrum``
to ``engine``); the layers, lowest first, are :data:`LAYERS`.  A module may import
its own layer and the layers below.  :data:`ON_TOP` may import anything and nothing
layered may import them.  The package itself (``phasekit/__init__.py``) runs before
any of its modules whatever they import, so taking a name from it (``__version__``)
orders nothing and is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "phasekit"

#: lowest first: the public base, then the internals upwards
LAYERS = (
    ("_startup", "errors", "options", "hookspecs", "dataset", "model", "module", "observables"),
    ("config",),
    ("engine",),
    ("io",),
    ("runner",),
    ("analysis",),
    ("plot",),
    ("cli",),
)

#: the public entry points over everything: they may import any layer
ON_TOP = ("api", "accessor", "testing", "linalg")


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package by its name)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("phasekit",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that the module ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from a import b``: b is a module of a, or a name defined in a
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:       # a name inside a module
                target = target.rpartition(".")[0]
            if target and target not in (name, "phasekit"):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items()}


def layer(name: str) -> int | None:
    """Index of the module's layer in :data:`LAYERS`; None for :data:`ON_TOP` and the
    package itself."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] in ON_TOP:
        return None
    for index, members in enumerate(LAYERS):
        if parts[1] in members:
            return index
    raise AssertionError(f"{name} is in no layer: add {parts[1]!r} to LAYERS or ON_TOP in "
                         f"tests/test_layers.py")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports_at_module_level_and_inside_functions():
    edges = graph()
    assert "phasekit.hookspecs" in edges["phasekit.config.registry"]      # module level
    assert "phasekit.accessor" in edges["phasekit"]                       # in a function
    assert "phasekit.engine.memory" in edges["phasekit.testing"]


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = []
    for name, targets in sorted(graph().items()):
        mine = layer(name)
        if mine is None:
            continue
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is None:
                wrong.append(f"{name} imports {target}, which sits on top of every layer")
            elif theirs > mine:
                wrong.append(f"{name} ({'/'.join(LAYERS[mine])}) imports {target} "
                             f"({'/'.join(LAYERS[theirs])}), a higher layer")
    assert wrong == []


def test_the_built_in_plugins_use_only_the_public_surface():
    """The built-in plugins are written as a third-party one would be: they import
    phasekit's public modules, never its internals (whose layout may change)."""
    public = {"phasekit", *(f"phasekit.{m}" for m in (
        "hookspecs", "model", "module", "dataset", "observables", "options", "errors", "linalg",
        "testing", "api", "accessor"))}
    plugins = Path(__file__).parents[1] / "plugins"
    for path in plugins.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            for name in names:
                if name == "phasekit" or name.startswith("phasekit."):
                    assert name in public, f"{path.name} imports {name}"
