"""Issue intake: a labelled issue on a watched repository becomes a work item.

Two ways in, one outcome: the ``issues`` webhook (``issue_event_receive``) and the poll
(``issues_poll``, every INTAKE_POLL_INTERVAL) both end in ``issue_take``, idempotent on
(repository, issue number) through the item's idempotency key. Who may ask: the issue's author
and whoever added the label, each in the repository's allowed users (else
INTAKE_ALLOWED_USERS, else a collaborator as GitHub says). When GitHub cannot answer that
question, the answer is "not now", never "yes": the poll asks again later.

What the issue then shows (labels, comments) is written to the outbox by ``intake.labels``
when the item moves; nothing here calls GitHub to change anything.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.text import slugify

from intake.forms import LOGIN_VALIDATOR, IssueEventForm, IssueForm
from intake.github import GitHubClient, GitHubError, RateLimited
from intake.models import GitHubAction, GitHubActionStatus, Repository
from orchestration.clock import db_now
from orchestration.errors import InvalidState, QueueFull
from orchestration.forms.branches import BRANCH_SLUG_MAX, branch_error
from orchestration.forms.clients import DESCRIPTION_MAX
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.work_items import (
    work_item_cancel,
    work_item_requeue,
    work_item_submit,
)

logger = logging.getLogger(__name__)

SOURCE = "github"
# Re-labelling the issue of an item that ended this way runs it again.
RETAKEABLE = (WorkItemStatus.FAILED, WorkItemStatus.CANCELLED)
TAKE_ACTIONS = ("labeled", "opened", "reopened")
# Poll counts that mean the list will look different soon (a label is coming off an issue, or
# an issue was put off): the ETag is not kept, or an unchanged-looking list could hide a change.
UNSETTLED = ("created", "requeued", "taken", "deferred")
RATE_LIMIT_FALLBACK = dt.timedelta(minutes=1)  # GitHub said "limited" without saying until when


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


# --- the webhook -----------------------------------------------------------------------------


def issue_event_receive(*, action: str, payload: dict[str, Any]) -> tuple[str, str]:
    """An ``issues`` webhook delivery: (outcome, note).

    1. The fields Whim reads are validated (IssueEventForm): ValidationFailed (400) otherwise,
       raised before anything is written.
    2. A repository Whim does not watch for issues, a pull request, an action other than
       labeled / opened / reopened / closed: ignored, with why.
    3. ``closed``: the issue's unfinished item is cancelled ("issue closed").
    4. ``labeled`` with the intake label, or ``opened`` / ``reopened`` carrying it, on an open
       issue: ``issue_take`` with the sender as the one who asked. A GitHub error while
       checking who may ask: ignored for now (the poll asks again).
    """
    fields = IssueEventForm.from_json(IssueEventForm.event_fields(payload)).validated()
    repository = Repository.named(fields["repo"])
    if repository is None or not repository.intake_on:
        return Outcome.IGNORED, f"{fields['repo']} is not watched for issues"
    if fields["isPull"]:
        return Outcome.IGNORED, "a pull request, not an issue"
    actor = f"github:{fields['sender']}"
    if action == "closed":
        return issue_closed(repository=repository, number=fields["number"], actor=actor)
    if action not in TAKE_ACTIONS:
        return Outcome.IGNORED, f"Whim does not act on issues {action or 'without an action'}"
    label = repository.intake_label
    if action == "labeled" and (fields["label"] or "").casefold() != label.casefold():
        return Outcome.IGNORED, f"the label added is not {label}"
    if action != "labeled" and not _carries(fields["labels"], label):
        return Outcome.IGNORED, f"the issue does not carry the label {label}"
    if fields["state"] != "open":
        return Outcome.IGNORED, "the issue is not open"
    try:
        return issue_take(
            repository=repository,
            issue=fields,
            labeller=fields["sender"],
            client=GitHubClient(repository.name),
        )
    except GitHubError as exc:
        if isinstance(exc, RateLimited):
            _rate_limited(repository, exc)
        return Outcome.IGNORED, f"not now (GitHub: {exc.message}); the poll will try again"


def _carries(labels: list[str], label: str) -> bool:
    return label.casefold() in {name.casefold() for name in labels}


# --- taking an issue, dropping it ------------------------------------------------------------


def issue_take(
    *,
    repository: Repository,
    issue: dict[str, Any],
    labeller: str | None,
    client: GitHubClient,
) -> tuple[str, str]:
    """Make the item for an allowed, labelled issue (IssueForm's cleaned fields): (outcome,
    note). Raises GitHubError when GitHub cannot say who may ask.

    1. An item exists: unfinished or completed → ``item_exists``, nothing asked of GitHub.
    2. The author and the labeller must both be allowed (``labeller`` None: nobody can say
       who added the label → refused).
    3. A failed or cancelled item is requeued (retries reset: the person asked again);
       otherwise the item is submitted: ``generating``, description ``# title`` + body,
       branch ``whim/issue-N-<slug>``. The queue bounds apply (``queue_full``: not now).
    """
    number = issue["number"]
    key = issue_key(repository.name, number)
    item = WorkItem.objects.filter(idempotency_key=key).only("pk", "status").first()
    if item is not None and item.status not in RETAKEABLE:
        return Outcome.ITEM_EXISTS, f"work item {item.pk} is {item.status}"
    refusal = _refusal(repository, client, author=issue["author"], labeller=labeller)
    if refusal:
        return Outcome.IGNORED, refusal
    actor = f"github:{labeller}"
    try:
        if item is not None:
            moved = work_item_requeue(
                work_item_id=item.pk,
                reset_retries=True,
                actor=actor,
                reason=f"issue #{number} labelled {repository.intake_label} again",
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
            idempotency_key=key,
            actor=actor,
        )
    except QueueFull as exc:
        return Outcome.QUEUE_FULL, exc.message[:200]
    except InvalidState as exc:  # it moved meanwhile (an operator requeued it first)
        return Outcome.ITEM_EXISTS, exc.message[:200]
    logger.info("issue %s#%s → work item %s", repository.name, number, item.pk)
    return (Outcome.ITEM_CREATED if created else Outcome.ITEM_EXISTS), f"work item {item.pk}"


def _refusal(
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
    """A closed issue cancels its unfinished item (reason "issue closed")."""
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
        cancelled = work_item_cancel(work_item_id=item.pk, actor=actor, reason="issue closed")
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
    4. Rate limited (anywhere above): ``rate_limited_until`` = GitHub's reset time, the poll
       stops, and its ETag is not kept, so the next poll after the reset lists everything.
    5. The ETag is kept only when the list is settled (UNSETTLED counts all 0): a list that
       shows an issue Whim has taken changes once its label comes off, and a label put back
       later could make it look the same again.
    """
    counts = dict.fromkeys(("created", "requeued", "taken", "exists", "ignored", "deferred"), 0)
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
            _poll_state(repository, polled_at=now, poll_note="not modified")
            return {"not_modified": 1}
        for raw in answer.data if isinstance(answer.data, list) else []:
            counts[_poll_one(repository, client, raw)] += 1
    except RateLimited as exc:
        _rate_limited(repository, exc, polled_at=now)
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
    item = (
        WorkItem.objects.filter(idempotency_key=issue_key(repository.name, issue["number"]))
        .only("pk", "status")
        .first()
    )
    if item is not None and item.status not in RETAKEABLE:
        return "exists" if item.status == WorkItemStatus.COMPLETED else "taken"
    if (
        item is not None
        and GitHubAction.objects.filter(work_item=item, status=GitHubActionStatus.PENDING).exists()
    ):
        return "deferred"
    try:
        labeller = _labeller(client, issue["number"], repository.intake_label)
        outcome, note = issue_take(
            repository=repository, issue=issue, labeller=labeller, client=client
        )
    except RateLimited:
        raise
    except GitHubError as exc:
        logger.info("%s#%s: not now (%s)", repository, issue["number"], exc.message)
        return "deferred"
    if outcome == Outcome.IGNORED:
        logger.info("%s#%s ignored: %s", repository, issue["number"], note)
    return {
        Outcome.ITEM_CREATED: "created",
        Outcome.ITEM_REQUEUED: "requeued",
        Outcome.ITEM_EXISTS: "exists",
        Outcome.QUEUE_FULL: "deferred",
    }.get(outcome, "ignored")


def _labeller(client: GitHubClient, number: int, label: str) -> str | None:
    """Who last added ``label`` to the issue, from its events (GitHub records a label set
    when the issue is opened as a ``labeled`` event too); None when no event says."""
    events = client.pages(f"/repos/{client.repo}/issues/{number}/events")
    for event in reversed(events):
        if not isinstance(event, dict) or event.get("event") != "labeled":
            continue
        name = _dig(event, "label", "name")
        if isinstance(name, str) and name.casefold() == label.casefold():
            login = _dig(event, "actor", "login")
            return login if isinstance(login, str) and _login_ok(login) else None
    return None


def _login_ok(login: str) -> bool:
    try:
        LOGIN_VALIDATOR(login)
    except ValidationError:
        return False
    return len(login) <= 100


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _rate_limited(repository: Repository, exc: GitHubError, **fields: Any) -> None:
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
