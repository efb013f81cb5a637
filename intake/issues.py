"""Issue intake: a labelled issue on a watched repository becomes a work item.

Two ways in, one outcome: the ``issues`` webhook (``intake.issue_events``) and the poll
(``issues_poll``, every INTAKE_POLL_INTERVAL) both end in ``issue_take``, idempotent on
(repository, issue number) through the item's idempotency key. Who may ask: the issue's author
and whoever added the label, each in the repository's allowed users (else
INTAKE_ALLOWED_USERS, else a collaborator as GitHub says: ``issue_refusal``). When GitHub
cannot answer that question, the answer is "not now", never "yes": the poll asks again later.
GitHub is asked before ``issue_take``, which only writes (the webhook's transaction holds no
GitHub call).

A failed or cancelled item is taken again only when the issue was labelled after it ended
(``retake_allowed``): a label left on the issue does not undo an operator's cancel, nor run a
failing item again at every poll.

What the issue then shows (labels, comments) is written to the outbox by ``intake.labels``
when the item moves; nothing here calls GitHub to change anything.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from django.utils.text import slugify

from intake.forms import IssueForm, closer, labelling
from intake.github import GitHubClient, GitHubError, RateLimited
from intake.models import GitHubAction, GitHubActionStatus, Repository
from orchestration.clock import db_now
from orchestration.errors import InvalidState, QueueFull
from orchestration.forms.branches import BRANCH_SLUG_MAX, branch_error
from orchestration.forms.clients import DESCRIPTION_MAX
from orchestration.forms.fields import dig
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.work_items import (
    work_item_cancel,
    work_item_requeue,
    work_item_submit,
)

logger = logging.getLogger(__name__)

SOURCE = "github"
# Labelling the issue of an item that ended this way (again, after it ended) runs it again.
RETAKEABLE = (WorkItemStatus.FAILED, WorkItemStatus.CANCELLED)
CLOSED = "issue closed"  # the reason an item is cancelled with when its issue is closed
# Poll counts that mean the list will look different soon (a label is coming off an issue, or
# an issue was put off): the ETag is not kept, or an unchanged-looking list could hide a change.
UNSETTLED = ("created", "requeued", "taken", "deferred")
RATE_LIMIT_FALLBACK = dt.timedelta(minutes=1)  # GitHub said "limited" without saying until when
# Unfinished items whose issue the poll asks GitHub about (closed?), at most, per poll.
CLOSED_CHECK_MAX = 20


class Outcome:
    """What an ``issues`` delivery did (``WebhookDelivery.outcome``, at most 20 characters)."""

    ITEM_CREATED = "item_created"
    ITEM_EXISTS = "item_exists"
    ITEM_REQUEUED = "item_requeued"
    ITEM_CANCELLED = "item_cancelled"
    QUEUE_FULL = "queue_full"  # not now: the poll takes it when there is room
    IGNORED = "ignored"  # with why in the note


def issue_ref(number: int) -> str:
    """The item's ``source_ref`` for issue ``number``."""
    return f"issue:{number}"


def issue_key(repo: str, number: int) -> str:
    """The item's idempotency key: one item per (repository, issue), however it arrives."""
    return f"github-issue:{repo}#{number}"


def issue_branch(number: int, title: str) -> str:
    """``whim/issue-N-<slug of the title>`` (the slug at most BRANCH_SLUG_MAX characters)."""
    slug = slugify(title)[:BRANCH_SLUG_MAX].strip("-") or "task"
    branch = f"whim/issue-{number}-{slug}"
    return branch if branch_error(branch) is None else f"whim/issue-{number}"


def issue_description(title: str, body: str) -> str:
    """``# title`` and the body, cut to DESCRIPTION_MAX with a note when GitHub's is longer."""
    text = f"# {title.strip()}\n\n{body}".rstrip() + "\n"
    if len(text) <= DESCRIPTION_MAX:
        return text
    note = "\n\n(The issue is longer; the rest was cut.)\n"
    return text[: DESCRIPTION_MAX - len(note)] + note


# --- taking an issue, dropping it ------------------------------------------------------------


def issue_item(repo: str, number: int) -> WorkItem | None:
    """The item of issue ``number`` of ``repo``, if any (only what deciding needs)."""
    return (
        WorkItem.objects.filter(idempotency_key=issue_key(repo, number))
        .only("pk", "status", "error", "completed_at", "updated_at")
        .first()
    )


def retake_allowed(
    item: WorkItem,
    *,
    fresh: bool = False,
    labelled_at: dt.datetime | None = None,
    reopened: bool = False,
) -> bool:
    """May a finished item be taken again? Never an unfinished or completed one. A failed or
    cancelled one when the label was put on after it ended: ``fresh`` (a ``labeled``
    delivery is that very act) or ``labelled_at`` (the newest ``labeled`` event, to the
    second as GitHub gives it: the same second as the end counts as after). And when the
    issue was closed and is open again (``reopened``, or the poll listing it open): the item
    its closing cancelled runs after all — not one an operator cancelled, nor a failed one."""
    if item.status not in RETAKEABLE:
        return False
    if fresh or (reopened and item.status == WorkItemStatus.CANCELLED and item.error == CLOSED):
        return True
    ended = item.completed_at or item.updated_at
    return labelled_at is not None and labelled_at >= ended.replace(microsecond=0)


def issue_take(
    *,
    repository: Repository,
    issue: dict[str, Any],
    labeller: str | None,
    refusal: str | None,
    fresh: bool = False,
    labelled_at: dt.datetime | None = None,
    reopened: bool = False,
) -> tuple[str, str]:
    """Make the item for an allowed, labelled issue (IssueForm's cleaned fields): (outcome,
    note). Calls no one: ``refusal`` is ``issue_refusal``'s answer, asked of GitHub before
    (None: not asked, so "not now" when it is needed).

    1. An item exists and may not be taken again (``retake_allowed`` with ``fresh``,
       ``labelled_at``, ``reopened``) → ``item_exists``.
    2. The author and the labeller must both be allowed (``refusal`` "" says they are).
    3. A failed or cancelled item is requeued (retries reset: the person asked again);
       otherwise the item is submitted: ``generating``, description ``# title`` + body,
       branch ``whim/issue-N-<slug>``. The queue bounds apply (``queue_full``: not now).
    """
    number = issue["number"]
    item = issue_item(repository.name, number)
    if item is not None and not retake_allowed(
        item, fresh=fresh, labelled_at=labelled_at, reopened=reopened
    ):
        return Outcome.ITEM_EXISTS, f"work item {item.pk} is {item.status}"
    if refusal is None:
        return Outcome.IGNORED, "not now (GitHub was not asked who may ask); the poll will try"
    if refusal:
        return Outcome.IGNORED, refusal
    actor = f"github:{labeller}"
    try:
        if item is not None:
            relabelled = retake_allowed(item, fresh=fresh, labelled_at=labelled_at)
            again = f"labelled {repository.intake_label} again" if relabelled else "reopened"
            moved = work_item_requeue(
                work_item_id=item.pk,
                reset_retries=True,
                actor=actor,
                reason=f"issue #{number} {again}",
            )
            return (Outcome.ITEM_REQUEUED if moved else Outcome.ITEM_EXISTS), f"work item {item.pk}"
        item, created = work_item_submit(
            repo=repository.name,
            description=issue_description(issue["title"], issue["body"] or ""),
            branch=issue_branch(number, issue["title"]),
            priority=repository.intake_priority,
            source=SOURCE,
            source_ref=issue_ref(number),
            metadata={"issue": number, "issueUrl": issue["url"] or "", "author": issue["author"]},
            idempotency_key=issue_key(repository.name, number),
            actor=actor,
        )
    except QueueFull as exc:
        return Outcome.QUEUE_FULL, exc.message[:200]
    except InvalidState as exc:  # it moved meanwhile (an operator requeued it first)
        return Outcome.ITEM_EXISTS, exc.message[:200]
    logger.info("issue %s#%s → work item %s", repository.name, number, item.pk)
    return (Outcome.ITEM_CREATED if created else Outcome.ITEM_EXISTS), f"work item {item.pk}"


def issue_refusal(
    repository: Repository, client: GitHubClient, *, author: str, labeller: str | None
) -> str:
    """Why the issue may not become work ("" when it may). Raises GitHubError."""
    if not labeller:
        return "nobody can say who added the label"
    allowed = repository.allowed_logins
    seen: dict[str, bool] = {}
    for role, login in (("author", author), ("labeller", labeller)):
        if login.lower() not in seen:
            seen[login.lower()] = (
                login.lower() in allowed if allowed else client.is_collaborator(login)
            )
        if not seen[login.lower()]:
            whom = "an allowed user" if allowed else "a collaborator"
            return f"the issue's {role} {login} is not {whom} of {repository.name}"
    return ""


def issue_closed(*, repository: Repository, number: int, actor: str) -> tuple[str, str]:
    """A closed issue cancels its unfinished item (reason CLOSED, "issue closed")."""
    item = (
        WorkItem.objects.filter(
            idempotency_key=issue_key(repository.name, number), status__in=WorkItem.UNFINISHED
        )
        .only("pk")
        .first()
    )
    if item is None:
        return Outcome.IGNORED, "no unfinished work item for this issue"
    try:
        cancelled = work_item_cancel(work_item_id=item.pk, actor=actor, reason=CLOSED)
    except InvalidState:  # it finished meanwhile
        return Outcome.IGNORED, f"work item {item.pk} finished already"
    if not cancelled:
        return Outcome.IGNORED, f"work item {item.pk} was cancelled already"
    return Outcome.ITEM_CANCELLED, f"work item {item.pk}"


# --- the poll --------------------------------------------------------------------------------


def issues_poll(*, repo: str) -> dict[str, int]:
    """Poll one watched repository's open issues carrying its intake label.

    1. Skipped: not watched, intake off, or rate limited until a time still ahead.
    2. A conditional request (``If-None-Match`` = the last ETag): 304 → nothing changed.
    3. Each issue (pull requests skipped) goes to ``issue_take``, the labeller read from the
       issue's events; an item whose outbox rows are still pending is left for the next
       poll (its label changes have not reached GitHub yet, so the label may be stale).
    4. After either answer, what a missed ``closed`` delivery left behind: the unfinished
       items of issues not in the list (after a 304, all of them), at most CLOSED_CHECK_MAX
       (picked at random, so each is asked in time), are looked up one by one; a closed issue
       cancels its item ("issue closed"), as the webhook does. GitHub's errors there: not now.
    5. Rate limited (anywhere above): ``rate_limited_until`` = GitHub's reset time, the poll
       stops, and its ETag is not kept, so the next poll after the reset lists everything.
    6. The ETag is kept only when the list is settled (UNSETTLED counts all 0): a list that
       shows an issue Whim has taken changes once its label comes off, and a label put back
       later could make it look the same again.
    """
    counts = dict.fromkeys(
        ("created", "requeued", "taken", "exists", "ignored", "deferred", "closed"), 0
    )
    repository = Repository.named(repo)
    if repository is None or not repository.intake_on:
        return {"skipped": 1}
    now = db_now()
    if repository.rate_limited(now):
        return {"rate_limited": 1}
    client = GitHubClient(repository.name)
    try:
        answer = client.issues_labelled(repository.intake_label, etag=repository.issues_etag)
        if answer.status == 304:
            # An item's issue stops being listed once its label is swapped, so "unchanged"
            # says nothing about it: a close the webhook missed is looked for here too.
            closed = _closed_check(repository, client, listed=set())
            _poll_state(repository, polled_at=now, poll_note="not modified")
            return {"not_modified": 1, "closed": closed}
        listed = answer.data if isinstance(answer.data, list) else []
        for raw in listed:
            counts[_poll_one(repository, client, raw)] += 1
        open_numbers = {dig(raw, "number") for raw in listed if dig(raw, "state") == "open"}
        counts["closed"] = _closed_check(repository, client, listed=open_numbers)
    except RateLimited as exc:
        repository_rate_limited(repository, exc, polled_at=now)
        return {**counts, "rate_limited": 1}
    except GitHubError as exc:
        _poll_state(repository, polled_at=now, poll_note=f"GitHub: {exc.message}")
        return {**counts, "error": 1}
    note = ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "no labelled issues"
    _poll_state(
        repository,
        polled_at=now,
        rate_limited_until=None,
        issues_etag="" if any(counts[k] for k in UNSETTLED) else answer.etag,
        poll_note=note,
    )
    return counts


def _poll_one(repository: Repository, client: GitHubClient, raw: Any) -> str:
    """One listed issue → the count it adds to. RateLimited propagates (the poll stops)."""
    form = IssueForm.from_json(IssueForm.issue_fields(raw, repo=repository.name))
    if not form.is_valid():
        logger.warning("%s: an issue GitHub listed is unreadable: %s", repository, form.errors)
        return "ignored"
    issue = form.cleaned_data
    if issue["isPull"] or issue["state"] != "open":
        return "ignored"
    item = issue_item(repository.name, issue["number"])
    if item is not None and item.status not in RETAKEABLE:
        return "exists" if item.status == WorkItemStatus.COMPLETED else "taken"
    if (
        item is not None
        and GitHubAction.objects.filter(work_item=item, status=GitHubActionStatus.PENDING).exists()
    ):
        return "deferred"
    try:
        events = client.pages(f"/repos/{client.repo}/issues/{issue['number']}/events")
        labeller, labelled_at = labelling(events, repository.intake_label)
        # Listed open: an item its closing cancelled is one whose issue was reopened.
        if item is not None and not retake_allowed(item, labelled_at=labelled_at, reopened=True):
            return "exists"  # the label was left on, not put on again since the item ended
        refusal = issue_refusal(repository, client, author=issue["author"], labeller=labeller)
    except RateLimited:
        raise
    except GitHubError as exc:
        logger.info("%s#%s: not now (%s)", repository, issue["number"], exc.message)
        return "deferred"
    outcome, note = issue_take(
        repository=repository,
        issue=issue,
        labeller=labeller,
        refusal=refusal,
        labelled_at=labelled_at,
        reopened=True,
    )
    if outcome == Outcome.IGNORED:
        logger.info("%s#%s ignored: %s", repository, issue["number"], note)
    return {
        Outcome.ITEM_CREATED: "created",
        Outcome.ITEM_REQUEUED: "requeued",
        Outcome.ITEM_EXISTS: "exists",
        Outcome.QUEUE_FULL: "deferred",
    }.get(outcome, "ignored")


def _closed_check(repository: Repository, client: GitHubClient, *, listed: set[Any]) -> int:
    """Cancel the unfinished items of issues GitHub says are closed (poll step 4); how many
    were cancelled. RateLimited propagates; any other GitHub error skips that issue."""
    refs = WorkItem.objects.filter(
        repo__iexact=repository.name,
        source=SOURCE,
        source_ref__startswith="issue:",
        status__in=WorkItem.UNFINISHED,
    ).values_list("source_ref", flat=True)
    numbers = {int(d) for d in (r.removeprefix("issue:") for r in refs) if d.isdigit()} - listed
    cancelled = 0
    for number in random.sample(sorted(numbers), min(len(numbers), CLOSED_CHECK_MAX)):
        try:
            issue = client.issue(number)
        except RateLimited:
            raise
        except GitHubError as exc:
            logger.info("%s#%s: is it closed? not now (%s)", repository, number, exc.message)
            continue
        if issue.get("state") != "closed":
            continue
        who = closer(issue)
        actor = f"github:{who}" if who else "github"
        outcome, _ = issue_closed(repository=repository, number=number, actor=actor)
        cancelled += outcome == Outcome.ITEM_CANCELLED
    return cancelled


def repository_rate_limited(repository: Repository, exc: GitHubError, **fields: Any) -> None:
    """Store and show GitHub's rate limit on the repository: nothing is asked until then."""
    until = exc.retry_at or db_now() + RATE_LIMIT_FALLBACK
    _poll_state(
        repository,
        rate_limited_until=until,
        issues_etag="",
        poll_note=f"rate limited by GitHub until {until:%Y-%m-%d %H:%M:%S %Z}".strip(),
        **fields,
    )


def _poll_state(repository: Repository, **fields: Any) -> None:
    """The poll's own columns, written without touching what the admin edits."""
    if "poll_note" in fields:
        fields["poll_note"] = str(fields["poll_note"])[:300]
    Repository.objects.filter(pk=repository.pk).update(**fields)
