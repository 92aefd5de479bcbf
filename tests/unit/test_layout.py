"""The house's layout: the library never reaches into the research code, and its modules import without cycles."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("rlpc_core", "langchain_rlpc", "llama_index_rlpc", "training")


def _modules(packages) -> dict[str, Path]:
    out = {}
    for pk in packages:
        for f in (ROOT / pk).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def _imports(path: Path) -> set[str]:
    """Every absolute import in the file, lazy ones inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_wheel_ships_the_library_and_not_the_benchmarks():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert sorted(p.rstrip("*") for p in find["include"]) == sorted(LIBRARY)
    for name, path in _modules(LIBRARY).items():
        bad = sorted(m for m in _imports(path) if m == "benchmarks" or m.startswith("benchmarks."))
        assert not bad, f"{name} imports {bad}: the library must not depend on the research code"
    # and the research code is where the harness says it is
    assert (ROOT / "benchmarks" / "peers.py").is_file() and not (ROOT / "training" / "peers.py").exists()


def test_library_modules_import_without_cycles():
    mods = _modules(LIBRARY)
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        for target in _imports(path):
            if target in mods and target != name:
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles (lazy imports count too): {cycles[:5]}"
