"""The package rules of docs/architecture.md, checked on every import (lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("ingest", "detector", "analytics", "migrations", "workers", "logowatch", "bench", "tests")
# What each package may import of ours: a package name allows all of it, a dotted one that module.
MAY_IMPORT: dict[str, set[str]] = {
    "ingest": set(),
    "detector": set(),
    "analytics": set(),
    "migrations": {"analytics.schema"},
    "workers": {"ingest.records", "detector", "analytics.schema"},
    "logowatch": {"ingest", "detector", "analytics", "migrations", "workers"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Every module of ours that ``path`` imports, and whether at module level."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            folder = ROOT / node.module.replace(".", "/")
            names = [f"{node.module}.{alias.name}" if (folder / f"{alias.name}.py").is_file()
                     else node.module for alias in node.names]
        else:
            continue
        found += [(name, id(node) in top) for name in names if name.split(".")[0] in OURS]
    return found


def _sources() -> dict[str, Path]:
    return {_module(p): p for package in OURS for p in (ROOT / package).rglob("*.py")
            if ".venv" not in p.parts}


def test_each_package_imports_only_what_the_table_allows() -> None:
    wrong = []
    for module, path in sorted(_sources().items()):
        package = module.split(".")[0]
        if package not in MAY_IMPORT:
            continue  # bench and tests may import everything
        allowed = MAY_IMPORT[package] | {package}
        for name, _ in _imports(path):
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                wrong.append(f"{module} imports {name}")
    assert wrong == []


def test_no_module_level_import_cycle() -> None:
    sources = _sources()
    graph = {m: {n for n, top in _imports(p) if top and n in sources and n != m}
             for m, p in sources.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_worker_is_the_streaming_worker_alone() -> None:
    lines = sum(len(p.read_text().splitlines()) for p in (ROOT / "workers").glob("*.py"))
    assert lines < 2500, f"workers/ holds {lines} lines"
    commands = {p.stem for p in (ROOT / "logowatch").glob("*.py")}
    assert {"cli", "demo", "serve", "onboard", "classify"} <= commands
    assert not commands & {p.stem for p in (ROOT / "workers").glob("*.py")} - {"__init__"}
