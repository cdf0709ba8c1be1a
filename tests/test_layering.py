"""Imports point one way: web -> worker -> camcore. camcore stays pure PyTorch.

An AST walk over every module (top-level and function-level imports alike), so a lazy
import inside a function cannot sneak a dependency back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN: dict[str, set[str]] = {
    "camcore": {"web", "worker", "flask", "flask_login", "flask_wtf", "celery", "kombu", "sqlalchemy", "alembic", "redis", "psycopg"},
    "worker": {"web", "flask", "flask_login", "flask_wtf"},
    "web": set(),
}


def imported_top_levels(path: Path) -> set[str]:
    """Top-level package names imported anywhere in ``path`` (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & FORBIDDEN[package])
        for path in _modules(package)
    }
    offenders = {path: names for path, names in offenders.items() if names}
    assert offenders == {}, f"{package} must not import these: {offenders}"


def test_the_check_catches_a_backward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from web import create_app\n    import flask.cli\n")
    assert {"web", "flask"} <= imported_top_levels(module)


def test_every_package_has_modules() -> None:
    for package in FORBIDDEN:
        assert _modules(package), f"no modules found under {package}/"
