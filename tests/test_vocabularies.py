"""The named vocabularies (orchestration/choices.py): event kinds and failure categories are
spelled once, the retry sets are decided, and the harness's copy of the categories it reports
stays a part of the orchestrator's."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.choices import (
    HELD_CATEGORIES,
    INFRASTRUCTURE_CATEGORIES,
    PERMANENT_CATEGORIES,
    RETRYABLE_CATEGORIES,
    ErrorCategory,
    EventKind,
)
from orchestration.models import Worker, WorkerStatus
from orchestration.services.workers.endings import ATTEMPT_ENDED
from workers.harness.harness.errors import CATEGORIES, Category

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "workers" / "harness" / "harness"
APPS = ("orchestration", "workers", "reviews")


def sources(*folders: Path) -> Iterator[tuple[Path, ast.Module]]:
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            if "migrations" not in path.parts:
                yield path, ast.parse(path.read_text(), filename=str(path))


# --- the harness's copy ------------------------------------------------------------------


def test_every_category_the_harness_knows_is_one_the_orchestrator_knows() -> None:
    assert set(CATEGORIES) - set(ErrorCategory.values) == set()


def harness_reports() -> tuple[set[str], set[str]]:
    """The ``Category.X`` names the harness source uses, and the string literals it passes
    as a category (``category="..."``, ``"category": "..."``, ``category = "..."``)."""
    names: set[str] = set()
    literals: set[str] = set()
    for _path, tree in sources(HARNESS):
        for node in ast.walk(tree):
            value: ast.expr | None = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "Category":
                    names.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg == "category":
                value = node.value
            elif isinstance(node, ast.Dict):
                for key, item in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "category":
                        value = item
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "category" for t in targets):
                    value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                literals.add(value.value)
    return names, literals


def test_every_category_the_harness_reports_is_in_its_copy() -> None:
    names, literals = harness_reports()
    assert names, "the scan found no Category.X at all: it no longer reads the harness"
    assert names - set(vars(Category)) == set()
    assert literals - set(CATEGORIES) == set()


def test_the_harness_copy_holds_no_category_it_never_reports() -> None:
    names, literals = harness_reports()
    reported = {getattr(Category, name) for name in names} | literals
    assert set(CATEGORIES) - reported == set()


def test_the_harness_readme_lists_the_categories_it_reports() -> None:
    readme = (HARNESS.parent / "README.md").read_text()
    section = readme.split("## Fail categories", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section)) == set(CATEGORIES)


# --- the retry sets ----------------------------------------------------------------------


def test_the_sets_are_made_of_named_categories_and_do_not_overlap() -> None:
    named = set(ErrorCategory)
    assert INFRASTRUCTURE_CATEGORIES.issubset(named)
    assert PERMANENT_CATEGORIES.issubset(named)
    assert INFRASTRUCTURE_CATEGORIES.isdisjoint(PERMANENT_CATEGORIES)
    assert HELD_CATEGORIES.issubset(named)
    assert HELD_CATEGORIES.isdisjoint(PERMANENT_CATEGORIES | INFRASTRUCTURE_CATEGORIES)
    assert named - PERMANENT_CATEGORIES - HELD_CATEGORIES == RETRYABLE_CATEGORIES
    assert INFRASTRUCTURE_CATEGORIES.issubset(RETRYABLE_CATEGORIES)


def test_a_cost_cap_is_held_for_an_operator_neither_retried_nor_counted() -> None:
    assert ErrorCategory.COST_CAP in HELD_CATEGORIES
    assert ErrorCategory.COST_CAP not in RETRYABLE_CATEGORIES
    assert ErrorCategory.COST_CAP not in INFRASTRUCTURE_CATEGORIES


@pytest.mark.parametrize(
    "category",
    [
        ErrorCategory.NO_RESULT,
        ErrorCategory.TIMEOUT,
        ErrorCategory.NO_PROGRESS,
        ErrorCategory.NO_CHANGES,
        ErrorCategory.PR_ERROR,
    ],
)
def test_the_attempts_own_failures_are_retried_and_not_counted_for_quarantine(
    category: ErrorCategory,
) -> None:
    assert category in RETRYABLE_CATEGORIES
    assert category not in INFRASTRUCTURE_CATEGORIES


def test_members_equal_the_strings_stored_on_rows_and_are_labelled_with_them() -> None:
    assert ErrorCategory.CRASHED == "CRASHED"
    assert EventKind.ATTEMPT_LOST == "attempt_lost"
    assert f"{ErrorCategory.CRASHED}" == "CRASHED"
    assert all(value == label for value, label in EventKind.choices)
    assert all(value == label for value, label in ErrorCategory.choices)
    assert ErrorCategory.names == ErrorCategory.values  # CRASHED = "CRASHED"


def test_every_way_an_attempt_ends_other_than_completing_has_an_event_kind() -> None:
    endings = set(Worker.TERMINAL) - {WorkerStatus.COMPLETED}
    assert set(ATTEMPT_ENDED) == endings
    assert all(kind == f"attempt_{status}" for status, kind in ATTEMPT_ENDED.items())


# --- no bare strings ---------------------------------------------------------------------

SPELLED_BY_NAME = {"kind", "kind__in", "category", "error_category", "error_category__in"}


def test_the_application_never_spells_an_event_kind_or_category_as_a_string() -> None:
    found = []
    for path, tree in sources(*(ROOT / app for app in APPS)):
        if HARNESS in path.parents:
            continue  # the harness keeps its own copy (checked above)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.keyword) and node.arg in SPELLED_BY_NAME):
                continue
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for value in values:
                spelled = isinstance(value, ast.Constant) and value.value not in ("", None)
                if spelled or isinstance(value, ast.JoinedStr):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.arg}=")
    assert found == []
