"""The packages of watchrun import one way (README, "Layout of the code").

Read from the source with `ast`, every `import` counts, at module level or inside a function,
under `TYPE_CHECKING` or not: a lazy import is still a dependency a newcomer has to know about.
A module may import from its own package (or module) and from lower layers only, so no two
packages can import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "watchrun"

# Lowest first. Data flows files -> project -> plan/engine -> executors -> events -> UIs; in
# imports, the engine (the driver) calls the executors' interface, so it sits above them.
LAYERS: list[tuple[str, ...]] = [
    # import nothing of watchrun's
    ("watchrun", "watchrun.errors", "watchrun.toml", "watchrun.paths", "watchrun.stats"),
    ("watchrun.config",),  # the settings: only the layer below
    ("watchrun.state",),  # the state folder: imports nothing above it
    ("watchrun.project", "watchrun.watch"),  # files -> the project as data
    ("watchrun.executors",),  # whatever runs units
    ("watchrun.engine", "watchrun.task"),  # plan, driver, events
    ("watchrun.nullproof",),  # the plan's cache, checked before the engine is imported
    ("watchrun.ui",),  # events -> people and programs
    ("watchrun.session",),  # wiring: settings, store, project, engine, a UI
    ("watchrun.commands",),
    ("watchrun.cli",),
    ("watchrun.entry",),
    ("watchrun.__main__",),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer's unit a module belongs to: its package below watchrun, or itself."""
    parts = module.split(".")
    if len(parts) == 1:
        return module
    candidate = ".".join(parts[:2])
    return candidate if candidate in RANK else module


def imports(path: Path) -> list[tuple[str, int, str]]:
    """(imported watchrun module, line, source line) of every import in a file."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            if name == "watchrun" or name.startswith("watchrun."):
                found.append((name, node.lineno, lines[node.lineno - 1].strip()))
    return found


def all_imports() -> list[tuple[str, str, str, int, str]]:
    """(importing unit, imported unit, file, line, source line) across the package."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = unit_of(module_name(path))
        for name, line, source in imports(path):
            edges.append((here, unit_of(name), str(path.relative_to(REPO)), line, source))
    return edges


def test_every_module_has_a_layer() -> None:
    missing = sorted({unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - set(RANK))
    assert missing == [], f"place these in LAYERS: {missing}"


def test_imports_go_down_the_layers_only() -> None:
    upward = [f"{file}:{line}: {here} imports {there} ({source})"
              for here, there, file, line, source in all_imports()
              if here != there and RANK[there] >= RANK[here]]
    assert upward == [], "\n".join(upward)


def test_the_bottom_layer_imports_nothing_of_watchrun() -> None:
    base = set(LAYERS[0])
    found = [f"{file}:{line}: {source}" for here, there, file, line, source in all_imports()
             if here in base and here != there]
    assert found == [], "\n".join(found)


def test_state_and_config_import_only_what_is_below_them() -> None:
    allowed = {"watchrun.config": set(LAYERS[0]),
               "watchrun.state": set(LAYERS[0])}  # not even config: a path in, a path out
    found = [f"{file}:{line}: {source}" for here, there, file, line, source in all_imports()
             if here in allowed and here != there and there not in allowed[here]]
    assert found == [], "\n".join(found)


def test_the_scan_sees_an_upward_import(tmp_path: Path) -> None:
    """The scanner itself: an import inside a function, under TYPE_CHECKING, is found."""
    source = tmp_path / "m.py"
    source.write_text("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    import watchrun.ui.summary\n"
                      "def f():\n    from watchrun.engine import plan\n")
    found = [(name, line) for name, line, _ in imports(source)]
    assert found == [("watchrun.ui.summary", 3), ("watchrun.engine", 5)]
    assert RANK[unit_of("watchrun.ui.summary")] > RANK[unit_of("watchrun.state.store")]
