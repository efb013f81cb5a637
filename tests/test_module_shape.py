"""Modules a newcomer can hold in their head: each application module opens with a docstring
saying what it owns, and none grows past 400 lines (STYLE.md §10: split it along its
concerns instead)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("orchestration", "workers", "reviews", "intake", "whim")
MAX_LINES = 400


def application_modules() -> list[Path]:
    return sorted(
        path
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts and path.read_text().strip()
    )


def test_the_application_modules_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in application_modules()}
    assert {"orchestration/models.py", "workers/runtime.py", "whim/settings.py"} <= names


@pytest.mark.parametrize("path", application_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_says_what_it_owns_and_stays_small(path: Path) -> None:
    source = path.read_text()
    assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"
    lines = len(source.splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it along its concerns"
