"""Imports only point down the layers drawn in docs/architecture.md ("Layers").

Every import counts: at the top of a module, inside a function, under TYPE_CHECKING. Each
line of the drawing is a layer, top first; a module imports its own package or module and
whatever is on the lines below its own, never beside it or above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "fleet", ROOT / "agents" / "fleet_agent")


def module_name(path: Path) -> str:
    """fleet/cli/run.py -> fleet.cli.run; fleet/cli/__init__.py -> fleet.cli."""
    agents = ROOT / "agents"
    relative = path.relative_to(agents if path.is_relative_to(agents) else ROOT)
    names = relative.with_suffix("").parts
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


MODULES = {module_name(path): path for source in SOURCES for path in sorted(source.rglob("*.py"))}


def layers() -> list[list[str]]:
    """The drawing, bottom layer first; each unit a module or a package ("fleet.cli")."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"^## Layers\n.*?^```\w*\n(.*?)^```", text, re.M | re.S)
    assert block, "docs/architecture.md has no ## Layers section with a drawing"
    drawn = [re.findall(r"[\w/]+(?:\.py|/)", line) for line in block[1].splitlines()]
    return [[_unit(path) for path in line] for line in reversed(drawn) if line]


def _unit(path: str) -> str:
    name = path.removeprefix("agents/").removesuffix("/").removesuffix(".py")
    return name.removesuffix("/__init__").replace("/", ".")


def unit_of(module: str, units: list[str]) -> str | None:
    """The unit a module belongs to: the longest that is it or a package holding it."""
    holders = [u for u in units if module == u or (module.startswith(u + ".") and u != "fleet")]
    return max(holders, key=len, default=None)


def imports(module: str) -> list[tuple[int, str]]:
    """(line, module imported) for every import of a fleet or fleet_agent module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from fleet import paths` imports the module fleet.paths, not the package.
            found += [
                (node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
                for alias in node.names
            ]
    return [(line, name) for line, name in found if name.split(".")[0] in ("fleet", "fleet_agent")]


def test_the_drawing_names_every_module_once() -> None:
    units = [unit for layer in layers() for unit in layer]
    assert len(units) == len(set(units)), f"drawn twice: {units}"
    missing = [u for u in units if u not in MODULES]
    assert not missing, f"drawn but not in the source: {missing}"
    unplaced = [m for m in MODULES if unit_of(m, units) is None]
    assert not unplaced, f"add these to the drawing in docs/architecture.md: {unplaced}"


def test_imports_only_point_down() -> None:
    drawing = layers()
    level = {unit: i for i, layer in enumerate(drawing) for unit in layer}
    units = list(level)
    upward = []
    for module in MODULES:
        own = unit_of(module, units)
        assert own is not None
        for line, name in imports(module):
            target = unit_of(name, units)
            assert target is not None, f"{MODULES[module]}:{line}: {name} is not drawn"
            if target != own and level[target] >= level[own]:
                where = "beside" if level[target] == level[own] else "above"
                rel = MODULES[module].relative_to(ROOT)
                upward.append(f"{rel}:{line}: {own} imports {name}, {where} it")
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_back() -> None:
    """Inside a package too, where the drawing allows any import: no cycle of modules."""
    graph = {m: {n for _, n in imports(m) if n in MODULES and n != m} for m in MODULES}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = " -> ".join([*path[path.index(module) :], module])
            raise AssertionError(f"import cycle: {cycle}")
        if module not in done:
            for name in sorted(graph[module]):
                visit(name, [*path, module])
            done.add(module)

    for module in MODULES:
        visit(module, [])


def test_every_package_is_in_the_wheel() -> None:
    """pyproject.toml lists the packages a wheel holds: a package missing there installs
    from a checkout (editable) and breaks everywhere else."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert found == listed
