"""The outbox of GitHub calls: every call that changes something on GitHub (a label, a comment,
a review, a check run) is a ``GitHubAction`` row written in the transaction of the change it
reports, delivered by a Celery task and re-sent by a sweep until GitHub has it.

Once, however often it is asked for: ``key`` is unique (a second enqueue writes nothing), a
row is delivered under its row lock (a second deliverer skips it), and each kind's handler is
idempotent on GitHub's side (labels are by nature; comments and reviews carry ``marker`` and
look for it first; check runs match ``external_id``), so a retry after a timeout that GitHub
had in fact acted on finds the first result instead of posting twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from intake.github import GitHubClient, GitHubError, RateLimited
from intake.models import GitHubAction, GitHubActionStatus
from orchestration import nudge
from orchestration.choices import EventKind
from orchestration.clock import db_now
from orchestration.models import WorkItem
from orchestration.services.events import event_record

logger = logging.getLogger(__name__)

# kind → handler(client, action) → result dict stored on the row. Raises intake.github errors.
Handler = Callable[[GitHubClient, GitHubAction], dict[str, Any]]
_handlers: dict[str, Handler] = {}

BACKOFF_BASE = 30  # seconds before the first retry; doubled per attempt
BACKOFF_CAP = 3600
# A fresh row's own nudge gets this long before the sweep sends another.
SWEEP_GRACE = dt.timedelta(seconds=30)
SWEEP_BATCH = 500


class Outcome:
    """What one delivery did (``github_action_deliver``'s answer; tasks log it)."""

    DONE = "done"
    RETRY = "retry"  # a transient failure: attempts + 1, due again after the backoff
    RATE_LIMITED = "rate_limited"  # due again when GitHub said
    FAILED = "failed"
    SKIPPED = "skipped"  # locked by another deliverer, not pending, not due, or gone


def action_handler_register(kind: str, handler: Handler) -> None:
    """Deliver rows of ``kind`` with ``handler`` (registered from an app's ``ready``)."""
    _handlers[kind] = handler


def marker(action: GitHubAction) -> str:
    """The invisible line a comment or review body carries to be found again on a retry."""
    return f"<!-- whim:{action.key} -->"


def marked(texts: Iterable[str | None], action: GitHubAction) -> bool:
    """Whether any of ``texts`` (bodies already on GitHub) carries the action's marker."""
    sign = marker(action)
    return any(sign in (text or "") for text in texts)


def github_action_enqueue(
    *,
    key: str,
    kind: str,
    repo: str,
    number: int | None,
    payload: dict[str, Any],
    work_item: WorkItem | None = None,
) -> GitHubAction | None:
    """Write one outbox row (None when ``key`` exists already) and nudge its delivery after
    commit. Call inside the transaction of the change it reports. Two enqueues of one key at
    once: the unique key makes the second wait for the first and then find its row."""
    action, created = GitHubAction.objects.get_or_create(
        key=key[:300],
        defaults={
            "kind": kind,
            "repo": repo,
            "number": number,
            "payload": payload,
            "work_item": work_item,
        },
    )
    if not created:
        return None
    nudge.send_on_commit(nudge.TaskName.GITHUB_DELIVER, str(action.pk))
    return action


def github_action_deliver(*, action_id: int | str) -> str:
    """Deliver one due row: its handler, then ``done`` / retry later / ``failed``.

    1. Lock the row (``SKIP LOCKED``: another deliverer holds it → skipped); the lock is held
       over the call, so one row is never in flight twice.
    2. Not pending, or not due yet → skipped (a late or repeated nudge).
    3. Run the kind's handler with a client for the row's repository.
    4. Record: done with GitHub's result; rate limited → due at GitHub's reset (attempts
       unchanged: nothing failed); transient → attempts + 1, backoff 30 s x 2^n (≤ 1 h);
       permanent, or GITHUB_ACTION_MAX_ATTEMPTS reached → failed, and an event on the item.
    """
    with transaction.atomic():
        action = (
            GitHubAction.objects.select_for_update(skip_locked=True)
            .filter(pk=action_id, status=GitHubActionStatus.PENDING)
            .first()
        )
        now = db_now()
        if action is None or (action.next_attempt_at and action.next_attempt_at > now):
            return Outcome.SKIPPED
        handler = _handlers.get(action.kind)
        try:
            if handler is None:
                # A kind registered by an app this process did not load (a deploy in
                # between): retried, and failed once the attempts run out.
                raise GitHubError(f"no handler for the action kind {action.kind!r}")
            result = handler(GitHubClient(action.repo), action)
        except RateLimited as exc:
            action.next_attempt_at = exc.retry_at or now + dt.timedelta(minutes=1)
            action.last_error = exc.message[:500]
            action.save(update_fields=["next_attempt_at", "last_error"])
            return Outcome.RATE_LIMITED
        except GitHubError as exc:
            return _failed_attempt(action, now=now, reason=exc.message, permanent=exc.permanent)
        except Exception as exc:  # a handler's bug: retried like a transient failure
            logger.exception("GitHub action %s (%s) raised", action.pk, action.kind)
            return _failed_attempt(
                action, now=now, reason=f"{action.kind}: {type(exc).__name__}", permanent=False
            )
        action.status = GitHubActionStatus.DONE
        action.done_at = now
        action.attempts += 1
        action.result = result if isinstance(result, dict) else {}
        action.last_error = ""
        action.save(update_fields=["status", "done_at", "attempts", "result", "last_error"])
        return Outcome.DONE


def _failed_attempt(action: GitHubAction, *, now: dt.datetime, reason: str, permanent: bool) -> str:
    action.attempts += 1
    action.last_error = reason[:500]
    if not permanent and action.attempts < settings.GITHUB_ACTION_MAX_ATTEMPTS:
        delay = min(BACKOFF_BASE * 2 ** (action.attempts - 1), BACKOFF_CAP)
        action.next_attempt_at = now + dt.timedelta(seconds=delay)
        action.save(update_fields=["attempts", "last_error", "next_attempt_at"])
        return Outcome.RETRY
    action.status = GitHubActionStatus.FAILED
    action.done_at = now
    action.save(update_fields=["attempts", "last_error", "status", "done_at"])
    if action.work_item_id is not None:
        why = "GitHub refused it" if permanent else f"{action.attempts} attempts failed"
        event_record(
            work_item=action.work_item_id,
            kind=EventKind.GITHUB_ACTION_FAILED,
            message=f"GitHub {action.kind} on {action.repo}#{action.number} failed ({why}): "
            f"{action.last_error}",
            data={"action": action.pk, "key": action.key, "kind": action.kind},
        )
    logger.warning("GitHub action %s (%s) failed: %s", action.pk, action.kind, action.last_error)
    return Outcome.FAILED


def github_actions_due() -> list[int]:
    """Pending rows whose time has come and whose own nudge has had its chance."""
    now = db_now()
    due = Q(next_attempt_at__isnull=True, created_at__lte=now - SWEEP_GRACE) | Q(
        next_attempt_at__lte=now
    )
    rows = GitHubAction.objects.filter(due, status=GitHubActionStatus.PENDING)
    return list(rows.order_by("created_at").values_list("pk", flat=True)[:SWEEP_BATCH])


def github_actions_sweep() -> dict[str, int]:
    """Re-send the outbox rows that are due (level-triggered: a lost nudge, a row whose
    backoff or rate limit has passed). Delivery itself is idempotent."""
    due = github_actions_due()
    sent = 0
    for pk in due:
        try:
            nudge.send(nudge.TaskName.GITHUB_DELIVER, str(pk))
        except Exception as exc:  # broker down: the next sweep tries again
            logger.warning("could not nudge GitHub action %s (%s)", pk, type(exc).__name__)
            break
        sent += 1
    return {"due": len(due), "nudged": sent}


def github_actions_retry(*, action_ids: Iterable[int]) -> int:
    """An operator's "retry now": the rows go back to pending, due at once, with their
    attempts reset (a failed row had used them up); each is nudged after commit."""
    with transaction.atomic():
        ids = list(
            GitHubAction.objects.filter(pk__in=list(action_ids))
            .exclude(status=GitHubActionStatus.DONE)
            .values_list("pk", flat=True)
        )
        GitHubAction.objects.filter(pk__in=ids).update(
            status=GitHubActionStatus.PENDING, next_attempt_at=None, attempts=0, done_at=None
        )
        for pk in ids:
            nudge.send_on_commit(nudge.TaskName.GITHUB_DELIVER, str(pk))
    return len(ids)
