"""Spec generation: a description-only item (``generating``) gets its spec, then joins the queue.

``SPEC_GENERATOR`` (``spec_generator()``) picks how:

- ``template``: the description framed as a spec (a heading of its first line; a description
  that already starts with a ``# `` heading is used as it is). Deterministic: a result that
  fails validation fails the item at once.
- ``command``: ``SPEC_COMMAND`` run without a shell, the description on its stdin, the spec
  on its stdout, within ``SPEC_TIMEOUT`` seconds. A run takes a lease on the row first
  (``next_retry_at`` = the lease's end), so a re-sent nudge cannot start a second run and a
  crashed run is picked up again once its lease has passed.
- ``agent``: an attempt of kind ``spec`` in a container (the claim takes ``generating`` items
  too: ``dispatch_claim_one``); it reports the spec in ``complete``
  (``services.workers.completion``), its other endings come back here (``spec_failure``).

Every generated spec is validated (``spec_problem``: not empty, at most SPEC_MAX_BYTES, at
least one heading or task line) before the item is queued. A failure sends the item back to
``generating`` with a backoff (RETRY_DELAYS) — the tries made so far are the row's
``retry_count``, reset to 0 once the spec is accepted — and after SPEC_MAX_ATTEMPTS tries, or at
once for a permanent failure, the item fails (event ``spec_failed``) with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
from typing import IO, Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.forms.branches import derive_branch
from orchestration.models import Worker, WorkItem, WorkItemStatus
from orchestration.nudge import TaskName, send_on_commit
from orchestration.retry import retry_delay
from orchestration.services.events import event_record

logger = logging.getLogger(__name__)

GENERATORS = ("agent", "template", "command")
# WHIM_AGENT values that run a real agent (``mock`` only pretends: template is its default).
AGENT_NAMES = ("claude", "codex", "command")
# The backoff's extra time beyond SPEC_TIMEOUT before a command run's lease is taken over.
LEASE_SLACK_SECONDS = 60
STDERR_CHARS = 2000
HEADING = re.compile(r"^#{1,6}[ \t]+\S", re.MULTILINE)
TASK = re.compile(r"^[ \t]*(?:[-*+]|\d{1,4}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?\S", re.MULTILINE)
# Never handed to SPEC_COMMAND: Whim's own secrets (its credentials stay with Whim).
COMMAND_ENV_WITHHELD = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "API_KEY",
    "GITHUB_WEBHOOK_SECRET",
    "GITHUB_APP_PRIVATE_KEY",
    "GITHUB_APP_PRIVATE_KEY_FILE",
    "GITHUB_TOKEN",
)


def spec_generator() -> str:
    """``SPEC_GENERATOR`` when set, else ``agent`` when WHIM_AGENT runs a real agent, else
    ``template``."""
    explicit = (settings.SPEC_GENERATOR or "").strip().lower()
    if explicit:
        return explicit
    return "agent" if settings.WHIM_AGENT in AGENT_NAMES else "template"


def spec_problem(spec: str) -> str:
    """Why ``spec`` cannot be queued ("" when it can): empty, more than SPEC_MAX_BYTES, a NUL
    character, or neither a Markdown heading nor a task (list) line."""
    if not spec.strip():
        return "the spec is empty"
    size = len(spec.encode("utf-8", errors="replace"))
    if size > settings.SPEC_MAX_BYTES:
        limit = settings.SPEC_MAX_BYTES
        return f"the spec is {size} bytes; at most {limit} are allowed (SPEC_MAX_BYTES)"
    if "\x00" in spec:
        return "the spec holds a NUL character"
    if not HEADING.search(spec) and not TASK.search(spec):
        return "the spec has neither a heading (`# …`) nor a task line (`- …`)"
    return ""


def spec_from_template(description: str) -> str:
    """The description framed as a spec: under a heading made of its first line, unless that
    line is a ``# `` heading already (an issue's ``# title``), when it is used as it is."""
    lines = [ln.strip() for ln in description.splitlines() if ln.strip()]
    if lines and lines[0].startswith("# ") and lines[0][2:].strip():
        return description.strip() + "\n"
    title = next((ln.lstrip("#").strip() for ln in lines if ln.lstrip("#").strip()), "Task")
    return f"# {title[:200]}\n\n{description}"


def spec_nudge(item: WorkItem) -> None:
    """After commit: what moves a ``generating`` item on (the claim, for the agent)."""
    if spec_generator() == "agent":
        send_on_commit(TaskName.DISPATCH)
    else:
        send_on_commit(TaskName.GENERATE_SPEC, str(item.pk))


def spec_accept(
    *, item: WorkItem, spec: str, now: dt.datetime, worker: Worker | None = None, actor: str = ""
) -> bool:
    """Store a validated ``spec`` on the locked ``item``, keep (or derive) its branch and queue
    it — only while it is still where the generation left it (``generating``, or active with
    ``worker`` as its attempt). The spec tries are forgotten (``retry_count`` 0)."""
    moved = _guarded(item, worker).update(
        spec=spec,
        branch=item.branch or derive_branch(spec),
        status=WorkItemStatus.QUEUED,
        retry_count=0,
        next_retry_at=None,
        worker=None,
        error="",
        error_category="",
        updated_at=now,
    )
    if moved:
        event_record(
            work_item=item,
            worker=worker,
            kind=EventKind.SPEC_GENERATED,
            from_status=item.status,
            to_status=WorkItemStatus.QUEUED,
            actor=actor or "system",
            data={"bytes": len(spec.encode("utf-8", errors="replace"))},
        )
        send_on_commit(TaskName.DISPATCH)
    return bool(moved)


def spec_failure(
    *,
    item: WorkItem,
    error: str,
    category: str,
    now: dt.datetime,
    permanent: bool = False,
    worker: Worker | None = None,
    actor: str = "",
) -> bool:
    """A try at the locked ``item``'s spec failed: back to ``generating`` with a backoff, or —
    after SPEC_MAX_ATTEMPTS tries, or at once when ``permanent`` — ``failed`` (``spec_failed``)
    with the reason. Only while the item is still where that try left it."""
    tries = item.retry_count + 1
    actor = actor or (f"worker:{worker.pk}" if worker is not None else "system")
    fields: dict[str, Any] = {"retry_count": tries, "worker": None, "updated_at": now}
    fields |= {"error_category": category[:40]}
    data: dict[str, Any] = {"category": category}
    delay = None
    if permanent or tries >= max(settings.SPEC_MAX_ATTEMPTS, 1):
        kind, to_status = EventKind.SPEC_FAILED, WorkItemStatus.FAILED
        message = f"spec generation failed after {tries} attempt(s): {error}"
        fields |= {"next_retry_at": None, "completed_at": now}
        data["attempts"] = tries
    else:
        kind, to_status, message = EventKind.RETRY_SCHEDULED, WorkItemStatus.GENERATING, error
        delay = retry_delay(item.retry_count)
        next_at = now + dt.timedelta(seconds=delay)
        fields["next_retry_at"] = next_at
        data |= {"specAttempt": tries, "delaySeconds": delay, "nextRetryAt": next_at.isoformat()}
    moved = _guarded(item, worker).update(status=to_status, error=message[:100_000], **fields)
    if moved:
        event_record(
            work_item=item,
            worker=worker,
            kind=kind,
            from_status=item.status,
            to_status=to_status,
            actor=actor,
            message=message[:2000],
            data=data,
        )
        if delay == 0:
            spec_nudge(item)
    return bool(moved)


def _guarded(item: WorkItem, worker: Worker | None) -> Any:
    """The item's row, only while it is where this generation left it."""
    rows = WorkItem.objects.filter(pk=item.pk)
    if worker is not None:
        return rows.filter(status__in=WorkItem.ACTIVE, worker_id=worker.pk)
    return rows.filter(status=WorkItemStatus.GENERATING)


def work_item_generate_spec(*, work_item_id: UUID | str) -> bool:
    """The GENERATE_SPEC task's body: write the spec of a ``generating`` item that is due
    (its backoff or a running command's lease passed). Idempotent; True when it moved.

    The agent generator needs no task: the claim takes the item (dispatch is nudged).
    """
    generator = spec_generator()
    with transaction.atomic():
        item = (
            WorkItem.objects.select_for_update(skip_locked=True)
            .filter(pk=work_item_id, status=WorkItemStatus.GENERATING)
            .first()
        )
        now = db_now()
        if item is None or (item.next_retry_at is not None and item.next_retry_at > now):
            return False
        if generator == "agent":
            send_on_commit(TaskName.DISPATCH)
            return False
        if generator != "command":
            spec = spec_from_template(item.description)
            problem = spec_problem(spec)
            if problem:  # the same description would fail the same way again
                return spec_failure(
                    item=item,
                    error=f"template spec rejected: {problem}",
                    category=ErrorCategory.VALIDATION_ERROR,
                    now=now,
                    permanent=True,
                )
            return spec_accept(item=item, spec=spec, now=now)
        lease = now + dt.timedelta(seconds=settings.SPEC_TIMEOUT + LEASE_SLACK_SECONDS)
        WorkItem.objects.filter(pk=item.pk).update(next_retry_at=lease, updated_at=now)
    spec, error, category = spec_command_run(description=item.description, item=item)
    with transaction.atomic():
        item = WorkItem.objects.select_for_update().filter(pk=work_item_id).first()
        if item is None or item.status != WorkItemStatus.GENERATING or item.next_retry_at != lease:
            return False  # cancelled meanwhile, or the lease passed and another run took it
        now = db_now()
        if not error:
            problem = spec_problem(spec)
            if not problem:
                return spec_accept(item=item, spec=spec, now=now, actor="spec-command")
            error = f"generated spec rejected: {problem}"
        return spec_failure(item=item, error=error, category=category, now=now)


def spec_command_run(*, description: str, item: WorkItem) -> tuple[str, str, str]:
    """Run SPEC_COMMAND (no shell) with ``description`` on stdin: ``(spec, error, category)``,
    error "" on success. Its stdout is read up to SPEC_MAX_BYTES (+1, to tell "too big"); the
    process group is killed at SPEC_TIMEOUT."""
    try:
        argv = shlex.split(settings.SPEC_COMMAND)
    except ValueError as exc:
        return "", f"SPEC_COMMAND cannot be parsed: {exc}", ErrorCategory.CONFIG_ERROR
    if not argv:
        return "", "SPEC_GENERATOR is command but SPEC_COMMAND is empty", ErrorCategory.CONFIG_ERROR
    env = {k: v for k, v in os.environ.items() if k not in COMMAND_ENV_WITHHELD}
    env.update(WHIM_REPO=item.repo, WHIM_WORK_ITEM_ID=str(item.pk))
    try:
        proc = subprocess.Popen(  # the operator's command, no shell
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return "", f"SPEC_COMMAND could not start: {exc.strerror or exc}", ErrorCategory.AGENT_ERROR
    limit = settings.SPEC_MAX_BYTES + 1
    out, err = bytearray(), bytearray()
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out, limit), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err, 64_000), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write(description.encode("utf-8"))
        proc.stdin.close()
    except OSError:
        pass  # it did not read its stdin: its exit code says the rest
    try:
        code = proc.wait(timeout=settings.SPEC_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        timeout = settings.SPEC_TIMEOUT
        return "", f"SPEC_COMMAND ran past SPEC_TIMEOUT ({timeout}s)", ErrorCategory.TIMEOUT
    finally:
        for reader in readers:
            reader.join(timeout=5)
    stderr = bytes(err).decode("utf-8", errors="replace").strip()[-STDERR_CHARS:]
    if code != 0:
        error = f"SPEC_COMMAND exited with code {code}: {stderr or '(no stderr)'}"
        return "", error, ErrorCategory.AGENT_ERROR
    return bytes(out).decode("utf-8", errors="replace"), "", ErrorCategory.AGENT_ERROR


def _drain(stream: IO[bytes] | None, into: bytearray, limit: int) -> None:
    """Read ``stream`` to its end, keeping its first ``limit`` bytes."""
    if stream is None:
        return
    while chunk := stream.read(65536):
        if len(into) < limit:
            into.extend(chunk[: limit - len(into)])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait(timeout=10)


def spec_attempts_due(now: dt.datetime) -> Any:
    """``generating`` items whose generation should run now (for the re-nudge): their backoff
    or lease passed, or no try ran for a minute."""
    cutoff = now - dt.timedelta(seconds=60)
    return WorkItem.objects.filter(status=WorkItemStatus.GENERATING).filter(
        Q(next_retry_at__lte=now) | Q(next_retry_at__isnull=True, updated_at__lt=cutoff)
    )
