"""The packages' import rule: each one imports only what lies below it (see each
package's __init__ and docs/architecture.md); nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

BOTTOM = {
    "errors",
    "signals",
    "result",
    "files",
    "minischema",
    "resources",
    "settings",
    "log",
    "struct",
}
ALLOWED = {
    "machine": BOTTOM | {"machine"},
    "store": BOTTOM | {"store"},
    "run": BOTTOM | {"run", "machine", "store", "plugin"},
    "api": BOTTOM | {"api", "run", "machine", "store", "plugin"},
    "cli": BOTTOM | {"cli", "api", "run", "machine", "store", "plugin", "web"},
    "web": BOTTOM | {"web", "api", "run", "machine", "store", "plugin"},
}


def _imported(path: Path) -> set[str]:
    """The runner modules ``path`` imports (first part after ``runner.``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "runner":
                names = [f"runner.{a.name}" for a in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "runner" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_lies_below_it(package: str) -> None:
    wrong = {}
    for path in sorted((ROOT / "runner" / package).glob("*.py")):
        extra = _imported(path) - ALLOWED[package] - {"__version__"}
        if extra:
            wrong[path.name] = sorted(extra)
    assert not wrong, f"runner/{package} imports upward: {wrong}"


def test_the_bottom_modules_import_no_package() -> None:
    for name in sorted(BOTTOM):
        assert _imported(ROOT / "runner" / f"{name}.py") <= BOTTOM, name


def test_nothing_but_the_entry_points_imports_the_cli() -> None:
    users = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "runner").rglob("*.py")
        if "cli" in _imported(p) and p.parent.name != "cli"
    ]
    assert users == ["runner/__main__.py"], users


def test_nothing_but_the_serve_command_imports_the_dashboard() -> None:
    users = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "runner").rglob("*.py")
        if "web" in _imported(p) and p.parent.name != "web"
    ]
    assert users == ["runner/cli/app.py"], users
