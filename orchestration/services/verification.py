"""Verification items: a completed change that asked for it gets a child item that checks the
pushed branch (or its pull request) against the spec; the child's verdict is reported back to
its parent. Both run inside the completion's transaction, so a repeated complete (a no-op)
neither creates a second child nor reports twice.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.sql.compiler import SQLCompiler

from orchestration.choices import EventKind
from orchestration.models import WorkItem, WorkItemType
from orchestration.nudge import TaskName, send_on_commit
from orchestration.services.events import event_record

# The parent's metadata key the verdict is written under (as the original Whim does).
VERIFICATION_STATUS_KEY = "verificationStatus"


def verification_item_create(
    *, parent: WorkItem, pr_number: int | None, pr_url: str = "", commit_sha: str = ""
) -> WorkItem:
    """The verification child of ``parent``, as the original Whim makes it: same repo, branch,
    priority and iterations, ``spec`` empty (the API shows null), the pull request when one
    was opened (without GitHub the pushed branch is what it verifies), and the parent's spec
    as its ``description``: what the verifier checks the branch against."""
    metadata = {k: v for k, v in (parent.metadata or {}).items() if k != VERIFICATION_STATUS_KEY}
    child = WorkItem.objects.create(
        repo=parent.repo,
        branch=parent.branch,
        type=WorkItemType.VERIFICATION,
        priority=parent.priority,
        priority_rank=parent.priority_rank,
        parent_work_item=parent,
        max_iterations=parent.max_iterations,
        metadata=metadata,
        spec="",
        description=parent.spec or parent.description,
        pr_number=pr_number,
        pr_url=pr_url,
        commit_sha=commit_sha,
    )
    event_record(
        work_item=child,
        kind=EventKind.SUBMITTED,
        to_status=child.status,
        actor=f"verification-of:{parent.pk}",
        message=f"verifies {parent.pk}" + (f" (pull request #{pr_number})" if pr_number else ""),
    )
    send_on_commit(TaskName.DISPATCH)
    return child


def verification_report(*, item: WorkItem, passed: bool | None, now: dt.datetime) -> None:
    """The verification ``item`` completed with ``passed``: its parent gets
    ``verification_passed`` and ``metadata.verificationStatus {passed,
    verificationWorkItemId, completedAt}`` — one key set in the database, so a concurrent
    write of another metadata key is not lost — and a ``verified`` event."""
    status = {
        "passed": passed,
        "verificationWorkItemId": str(item.pk),
        "completedAt": now.isoformat(),
    }
    parent_id = item.parent_work_item_id
    if parent_id is None:
        return
    WorkItem.objects.filter(pk=parent_id).update(
        verification_passed=passed,
        metadata=JSONSetKey("metadata", VERIFICATION_STATUS_KEY, status),
    )
    parent = WorkItem.objects.filter(pk=parent_id).first()
    if parent is None:
        return
    verdict = {True: "passed", False: "failed", None: "gave no verdict"}[passed]
    event_record(
        work_item=parent,
        kind=EventKind.VERIFIED,
        from_status=parent.status,
        to_status=parent.status,
        actor=f"verification:{item.pk}",
        message=f"verification {verdict}",
        data=status,
    )


class JSONSetKey(models.Func):
    """``column`` with its top-level ``key`` set to ``value``, computed by the database
    (``jsonb_set`` on PostgreSQL, ``json_set`` on SQLite): no read-modify-write."""

    output_field = models.JSONField()

    def __init__(self, column: str, key: str, value: Any) -> None:
        super().__init__(models.F(column))
        self.key, self.value = key, json.dumps(value)

    def as_sql(  # type: ignore[override]
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        **extra_context: Any,
    ) -> tuple[str, tuple[Any, ...]]:
        column, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            sql = f"jsonb_set(COALESCE({column}, '{{}}'::jsonb), %s::text[], %s::jsonb)"
            return sql, (*params, [self.key], self.value)
        sql = f"json_set(COALESCE({column}, '{{}}'), %s, json(%s))"
        return sql, (*params, f"$.{self.key}", self.value)
