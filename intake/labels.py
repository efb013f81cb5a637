"""The label flow on an intake issue: what the issue shows as its item moves.

Taken (created or requeued): the intake label (``whim``) off, INTAKE_PROCESSING_LABEL on.
Completed: INTAKE_DONE_LABEL on, processing off, a comment linking the pull request. Failed: a
comment with why (no secrets) and processing off, so adding the intake label again retries.
Cancelled: processing off.

``item_moved`` is an ``orchestration.registry`` hook: it runs inside the transaction that moved
the item and only writes outbox rows, keyed by the event, so each move asks once. The
handlers (kinds ``labels_add``, ``label_remove``, ``comment``) make the calls; each is
idempotent on GitHub's side — labels are by nature, a comment carries the outbox marker and
is looked for before it is posted again.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from intake.github import GitHubClient
from intake.models import GitHubAction, Repository
from intake.outbox import github_action_enqueue, marker
from orchestration.choices import EventKind
from orchestration.logfilters import redact
from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus

KIND_LABELS_ADD = "labels_add"
KIND_LABEL_REMOVE = "label_remove"
KIND_COMMENT = "comment"
SOURCE = "github"  # intake.issues.SOURCE (a sibling module: not imported)
REASON_MAX = 300
TAKEN = (EventKind.SUBMITTED, EventKind.REQUEUED)
# Credentials an agent could reach and print into its error: never posted on an issue.
_SECRETS = re.compile(
    r"\b(?:gh[opusr]_[A-Za-z0-9_]{10,}|github_pat_[A-Za-z0-9_]{10,}|sk-[A-Za-z0-9_-]{10,}"
    r"|xox[a-z]-[A-Za-z0-9-]{10,}|AKIA[A-Z0-9]{12,})"
)


def item_moved(event: WorkItemEvent) -> None:
    """Write the outbox rows for an issue item's move (nothing for any other item)."""
    if event.kind not in TAKEN and event.to_status not in WorkItem.TERMINAL:
        return  # claimed, started, retried…: the issue shows nothing new (and no query)
    item = (
        WorkItem.objects.filter(pk=event.work_item_id)
        .only("pk", "repo", "source", "source_ref", "pr_url", "branch", "error", "error_category")
        .first()
    )
    number = _issue_number(item)
    if item is None or number is None:
        return
    repository = Repository.objects.filter(name__iexact=item.repo).first()
    trigger = repository.intake_label if repository else str(settings.INTAKE_LABEL)
    processing, done = settings.INTAKE_PROCESSING_LABEL, settings.INTAKE_DONE_LABEL

    def ask(what: str, kind: str, payload: dict[str, Any]) -> None:
        github_action_enqueue(
            key=f"issue:{item.repo}#{number}:{event.pk}:{what}",
            kind=kind,
            repo=item.repo,
            number=number,
            payload=payload,
            work_item=item,
        )

    if event.kind in TAKEN:
        ask("untrigger", KIND_LABEL_REMOVE, {"label": trigger})
        ask("processing", KIND_LABELS_ADD, {"labels": [processing], "whileUnfinished": True})
    elif event.to_status == WorkItemStatus.COMPLETED:
        ask("done", KIND_LABELS_ADD, {"labels": [done]})
        ask("unprocessing", KIND_LABEL_REMOVE, {"label": processing})
        ask("comment", KIND_COMMENT, {"body": _completed_text(item)})
    elif event.to_status == WorkItemStatus.FAILED:
        ask("comment", KIND_COMMENT, {"body": _failed_text(item, trigger)})
        ask("unprocessing", KIND_LABEL_REMOVE, {"label": processing})
    else:  # cancelled
        ask("unprocessing", KIND_LABEL_REMOVE, {"label": processing})


def _issue_number(item: WorkItem | None) -> int | None:
    if item is None or item.source != SOURCE or not item.source_ref.startswith("issue:"):
        return None
    digits = item.source_ref.removeprefix("issue:")
    return int(digits) if digits.isdigit() and 0 < int(digits) < 2**31 else None


def _completed_text(item: WorkItem) -> str:
    if item.pr_url:
        return f"Whim opened a pull request for this issue: {item.pr_url}"
    return (
        f"Whim finished work item `{item.pk}` on branch `{item.branch}` "
        "without opening a pull request."
    )


def _failed_text(item: WorkItem, trigger: str) -> str:
    return (
        f"Whim could not finish this issue ({item.error_category or 'FAILED'}): "
        f"{safe_reason(item.error)}\n\n"
        f"Work item `{item.pk}`. Add the `{trigger}` label again to retry."
    )


def safe_reason(error: str) -> str:
    """An item's error as an issue may show it: the first line, at most REASON_MAX
    characters, without what looks like a credential. The error may be the agent's own
    words (the agent is the adversary), and an issue is public."""
    first = next((ln.strip() for ln in error.splitlines() if ln.strip()), "") or "failed"
    cleaned = _SECRETS.sub("***", redact(first)).replace("`", "'")
    return cleaned if len(cleaned) <= REASON_MAX else cleaned[: REASON_MAX - 1] + "…"


# --- the outbox handlers ---------------------------------------------------------------------


def labels_add(client: GitHubClient, action: GitHubAction) -> dict[str, Any]:
    """Add labels. ``whileUnfinished``: skipped once the item has finished (a late
    delivery must not put ``processing`` back on an issue whose item is done)."""
    if action.payload.get("whileUnfinished") and action.work_item_id is not None:
        status = (
            WorkItem.objects.filter(pk=action.work_item_id).values_list("status", flat=True).first()
        )
        if status in WorkItem.TERMINAL:
            return {"skipped": f"the work item is {status}"}
    labels = [str(name) for name in action.payload.get("labels", [])]
    client.labels_add(_number(action), labels)
    return {"labels": labels}


def label_remove(client: GitHubClient, action: GitHubAction) -> dict[str, Any]:
    """Remove one label (GitHub's 404 for a label not there is fine: the client says so)."""
    label = str(action.payload.get("label", ""))
    client.label_remove(_number(action), label)
    return {"removed": label}


def comment(client: GitHubClient, action: GitHubAction) -> dict[str, Any]:
    """Post a comment once: a comment carrying this row's marker already (a post whose answer
    was lost) is the one, and is not posted again."""
    number, mark = _number(action), marker(action)
    for seen in client.comments(number):
        if isinstance(seen, dict) and mark in str(seen.get("body") or ""):
            return {"id": seen.get("id"), "html_url": seen.get("html_url"), "found": True}
    made = client.comment_create(number, f"{action.payload.get('body', '')}\n\n{mark}")
    return {"id": made.get("id"), "html_url": made.get("html_url")}


def _number(action: GitHubAction) -> int:
    if action.number is None:
        raise ValueError(f"outbox row {action.pk} names no issue")
    return action.number
