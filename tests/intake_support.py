"""What the issue-intake tests (``test_intake_*.py``) share: a fake GitHub with one watched
repository, signed ``issues`` deliveries through the real webhook view, and the outbox
delivered by hand (tests run no Celery here: each pending row is delivered directly).
Registered as a plugin by ``conftest.py``: a module that defines its own ``github`` fixture
keeps its own."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from intake import credentials
from intake.models import GitHubAction, GitHubActionStatus
from intake.outbox import github_action_deliver
from orchestration.clock import db_now
from tests.fakes.github import FakeGitHub

REPO = "acme/widgets"
SECRET = "s3cret-for-the-webhook"
URL = "/webhooks/github"


@contextlib.contextmanager
def fake_github_serving(settings: Any) -> Iterator[FakeGitHub]:
    """A started fake GitHub that the loop's client calls (GITHUB_API_URL, a 2 s timeout),
    the client's token cache empty before and after."""
    fake = FakeGitHub().start()
    settings.GITHUB_API_URL = fake.url
    settings.GITHUB_TIMEOUT = 2.0
    credentials.loop_tokens_clear()
    try:
        yield fake
    finally:
        fake.stop()
        credentials.loop_tokens_clear()


@pytest.fixture
def github(settings: Any) -> Iterator[FakeGitHub]:
    """The fake GitHub, a token for it, ``acme/widgets`` watched, the webhook's secret."""
    with fake_github_serving(settings) as fake:
        settings.GITHUB_TOKEN = "test-token"
        settings.GITHUB_APP_ID = ""
        settings.GITHUB_APP_PRIVATE_KEY = ""
        settings.GITHUB_WEBHOOK_SECRET = SECRET
        settings.INTAKE_REPOS = [REPO]
        settings.INTAKE_ALLOWED_USERS = []
        fake.collaborators[REPO].update({"octocat", "maintainer"})
        yield fake


def issue_json(
    number: int = 12,
    *,
    title: str = "Add a dark mode",
    body: str = "The settings page needs a dark theme.",
    user: str = "octocat",
    labels: tuple[str, ...] = ("whim",),
    state: str = "open",
) -> dict[str, Any]:
    return {
        "number": number,
        "title": title,
        "body": body,
        "state": state,
        "user": {"login": user},
        "html_url": f"https://github.example/{REPO}/issues/{number}",
        "labels": [{"name": name} for name in labels],
    }


def issue_event(
    action: str = "labeled",
    *,
    sender: str = "octocat",
    label: str | None = "whim",
    repo: str = REPO,
    **issue: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": action,
        "issue": issue_json(**issue),
        "repository": {"full_name": repo},
        "sender": {"login": sender},
    }
    if label is not None:
        payload["label"] = {"name": label}
    return payload


def deliver(client: Client, payload: dict[str, Any] | bytes, *, delivery: str | None = None) -> Any:
    """POST a signed ``issues`` delivery to the real webhook view."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return client.post(
        URL,
        data=body,
        content_type="application/json",
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        },
    )


def deliver_outbox(*, rounds: int = 3) -> list[str]:
    """Deliver every pending outbox row, making retries due at once, up to ``rounds`` times
    over; the outcomes, in order."""
    outcomes = []
    for _ in range(rounds):
        pending = list(
            GitHubAction.objects.filter(status=GitHubActionStatus.PENDING).order_by("pk")
        )
        if not pending:
            break
        GitHubAction.objects.filter(pk__in=[a.pk for a in pending]).update(
            next_attempt_at=db_now() - dt.timedelta(seconds=1)
        )
        outcomes += [github_action_deliver(action_id=a.pk) for a in pending]
    return outcomes
