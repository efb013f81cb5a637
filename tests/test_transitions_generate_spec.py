"""The state machine, services called directly on PostgreSQL: a description-only item gets its
spec and branch, then joins the queue; generating twice or for a missing item changes nothing.
"""

from __future__ import annotations

from uuid import UUID

import pytest

from orchestration.models import WorkItemStatus
from orchestration.services.work_items import work_item_generate_spec, work_item_submit
from tests.transitions_support import events_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


# --- spec generation -----------------------------------------------------------------------


def test_generate_spec_queues_a_description_only_item_with_a_spec_and_a_derived_branch() -> None:
    item, created = work_item_submit(
        repo="acme/widgets", description="Add dark mode\n\nThe settings page needs a toggle."
    )
    assert created
    assert item.status == WorkItemStatus.GENERATING
    assert item.branch == ""  # derived once the spec exists

    assert work_item_generate_spec(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert item.spec.startswith("# Add dark mode\n")
    assert "The settings page needs a toggle." in item.spec
    assert item.branch == "add-dark-mode"
    assert events_of(item) == [
        ("submitted", "", "generating"),
        ("spec_generated", "generating", "queued"),
    ]


def test_generate_spec_keeps_a_branch_given_at_submit() -> None:
    item, _ = work_item_submit(repo="acme/widgets", description="Fix it", branch="fix/login")

    work_item_generate_spec(work_item_id=item.pk)

    item.refresh_from_db()
    assert item.branch == "fix/login"


def test_generate_spec_is_idempotent() -> None:
    item, _ = work_item_submit(repo="acme/widgets", description="Add dark mode")
    work_item_generate_spec(work_item_id=item.pk)
    item.refresh_from_db()
    spec, branch = item.spec, item.branch

    assert work_item_generate_spec(work_item_id=item.pk) is False

    item.refresh_from_db()
    assert (item.status, item.spec, item.branch) == (WorkItemStatus.QUEUED, spec, branch)
    assert [kind for kind, _, _ in events_of(item)].count("spec_generated") == 1


def test_generate_spec_of_a_missing_item_is_a_quiet_no_op() -> None:
    assert work_item_generate_spec(work_item_id=UUID(int=1)) is False
