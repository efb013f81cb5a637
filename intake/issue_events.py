"""The ``issues`` webhook, in two steps so that GitHub is never asked inside the delivery's
database transaction (GitHub gives a webhook 10 s; a collaborator check and an App token
mint can each take GITHUB_TIMEOUT):

1. ``issue_event_prepare`` runs before the transaction: it validates the fields Whim reads,
   decides what the delivery asks for, and asks GitHub who may ask (reads only).
2. The receiver it returns runs inside the transaction that records the delivery, and only
   writes: ``issue_take`` or ``issue_closed`` (``intake.issues``) with GitHub's answer.

Which deliveries take an issue: ``labeled`` with the intake label (a fresh labelling: a failed
or cancelled item runs again), and ``opened`` / ``reopened`` carrying it. Those two do not
undo an end on their own: a reopened issue's item runs again only when the issue's closing
cancelled it ("issue closed"); an item an operator cancelled, or one that failed, needs the
label put on again.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from intake.forms import IssueEventForm
from intake.github import GitHubClient, GitHubError, RateLimited
from intake.issues import (
    Outcome,
    issue_closed,
    issue_item,
    issue_refusal,
    issue_take,
    repository_rate_limited,
    retake_allowed,
)
from intake.models import Repository

TAKE_ACTIONS = ("labeled", "opened", "reopened")
Receiver = partial[tuple[str, str]]  # called with no arguments


def issue_event_prepare(
    *, action: str, payload: dict[str, Any], ask_github: bool = True
) -> Receiver:
    """An ``issues`` delivery, prepared outside the delivery's transaction: the receiver to
    call inside it, which returns (outcome, note) and calls no one.

    1. The fields Whim reads are validated (IssueEventForm): ValidationFailed (400) otherwise,
       raised before anything is written.
    2. A repository Whim does not watch for issues, a pull request, an action other than
       labeled / opened / reopened / closed: ignored, with why.
    3. ``closed``: the issue's unfinished item is cancelled ("issue closed").
    4. ``labeled`` with the intake label, or ``opened`` / ``reopened`` carrying it, on an open
       issue: ``issue_take`` with the sender as the one who asked. Whether the author and the
       sender may ask is asked of GitHub here, unless an item exists that may not be taken
       again (nothing to ask) or ``ask_github`` is false (a delivery id already recorded: the
       receiver will not run). A GitHub error: ignored for now (the poll asks again); a rate
       limit is stored on the repository, by the receiver.
    """
    fields = IssueEventForm.from_json(IssueEventForm.event_fields(payload)).validated()
    repository = Repository.named(fields["repo"])
    if repository is None or not repository.intake_on:
        return _answer(Outcome.IGNORED, f"{fields['repo']} is not watched for issues")
    if fields["isPull"]:
        return _answer(Outcome.IGNORED, "a pull request, not an issue")
    if action == "closed":
        return partial(
            issue_closed,
            repository=repository,
            number=fields["number"],
            actor=f"github:{fields['sender']}",
        )
    if action not in TAKE_ACTIONS:
        return _answer(
            Outcome.IGNORED, f"Whim does not act on issues {action or 'without an action'}"
        )
    label = repository.intake_label
    if action == "labeled" and (fields["label"] or "").casefold() != label.casefold():
        return _answer(Outcome.IGNORED, f"the label added is not {label}")
    if action != "labeled" and label.casefold() not in {n.casefold() for n in fields["labels"]}:
        return _answer(Outcome.IGNORED, f"the issue does not carry the label {label}")
    if fields["state"] != "open":
        return _answer(Outcome.IGNORED, "the issue is not open")
    fresh = action == "labeled"
    item = issue_item(repository.name, fields["number"])
    refusal: str | None = None
    if ask_github and (item is None or retake_allowed(item, fresh=fresh, reopened=not fresh)):
        try:
            refusal = issue_refusal(
                repository,
                GitHubClient(repository.name),
                author=fields["author"],
                labeller=fields["sender"],
            )
        except GitHubError as exc:
            return partial(_not_now, repository, exc)
    return partial(
        issue_take,
        repository=repository,
        issue=fields,
        labeller=fields["sender"],
        refusal=refusal,
        fresh=fresh,
        reopened=not fresh,
    )


def _answer(outcome: str, note: str) -> Receiver:
    return partial(_answered, outcome, note)


def _answered(outcome: str, note: str) -> tuple[str, str]:
    return outcome, note


def _not_now(repository: Repository, exc: GitHubError) -> tuple[str, str]:
    """GitHub could not say (inside the transaction: the rate limit is written here)."""
    if isinstance(exc, RateLimited):
        repository_rate_limited(repository, exc)
    return Outcome.IGNORED, f"not now (GitHub: {exc.message}); the poll will try again"
