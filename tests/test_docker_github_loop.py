"""Issue 11's GitHub loop end to end, on real parts: gunicorn and its signed webhook, Celery
worker and beat (the intake poll, the outbox sweep), dockerd, the worker image and the fake
``claude``, and the fake GitHub in a container that the worker network reaches only through the
egress allowlist (the orchestrator reaches it over the test's own network).

A labelled issue, announced by the webhook and seen again by the poll, becomes one work item;
a spec attempt writes its spec, a work attempt implements it and opens the pull request with
"Closes #N", and the issue's labels and comment follow the item: ``whim`` → ``whim:processing``
→ ``whim:pr-ready`` with one comment linking the pull request."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from intake.models import GitHubAction, GitHubActionStatus, Repository
from orchestration.models import AttemptKind, Worker, WorkerStatus, WorkItem, WorkItemStatus
from tests.docker_stack import make_bare_repo
from tests.helpers import wait_for
from tests.test_docker_pipeline import GITHUB_TOKEN, fake_github_in_a_container
from tests.test_docker_pipeline_b import agent_bin, nothing_left

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

__all__ = ["agent_bin"]  # the fixture, used below

REPO = "acme/widgets"
SECRET = "loop-webhook-secret"
SPEC = "# Add a widget\n\n## Tasks\n\n- [ ] write widget.txt\n"
ISSUE = {"number": 42, "title": "Add a widget", "body": "We need a widget.", "user": "octocat"}


def fake_state(address: str) -> Any:
    """The fake GitHub's labels and comments (its /_fake/state)."""
    with urllib.request.urlopen(f"http://{address}:8080/_fake/state", timeout=5) as answer:
        return json.loads(answer.read())


def deliver(base_url: str, event: str, payload: dict[str, Any], delivery: str) -> Any:
    """POST one signed webhook delivery to the running web server; its JSON answer."""
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"{base_url}/webhooks/github",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature,
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def labelled_event() -> dict[str, Any]:
    return {
        "action": "labeled",
        "label": {"name": "whim"},
        "issue": {
            "number": ISSUE["number"],
            "title": ISSUE["title"],
            "body": ISSUE["body"],
            "state": "open",
            "user": {"login": ISSUE["user"]},
            "html_url": f"https://github.example/{REPO}/issues/{ISSUE['number']}",
            "labels": [{"name": "whim"}],
        },
        "repository": {"full_name": REPO},
        "sender": {"login": ISSUE["user"]},
    }


def loop_stack(docker_stack: Any, agent_bin: Any, scenario: dict[str, Any], address: str) -> Any:
    """The stack with intake on (webhook and a poll every 2 s) and agent spec generation."""
    stack = docker_stack(
        WHIM_AGENT="claude",
        WHIM_AGENT_PATH_DIR=agent_bin(scenario),
        SPEC_GENERATOR="agent",
        SPEC_MAX_ATTEMPTS="3",
        WHIM_REVIEWER="none",
        WORKER_EGRESS="allowlist",
        WORKER_EGRESS_ALLOW=address,
        GITHUB_TOKEN=GITHUB_TOKEN,
        GITHUB_API_URL=f"http://{address}:8080",
        GITHUB_WEBHOOK_SECRET=SECRET,
        INTAKE_REPOS=REPO,
        INTAKE_ALLOWED_USERS="octocat",
        INTAKE_POLL_INTERVAL="2",
        SWEEP_GITHUB_EVERY="2",
    )
    make_bare_repo(stack.repos, REPO)
    return stack


def settled(item_id: Any) -> WorkItem:
    """The item once finished and every GitHub call it asked for delivered."""
    item = wait_for(
        lambda: WorkItem.objects.filter(pk=item_id, status__in=WorkItem.TERMINAL).first(),
        timeout=300,
        interval=0.5,
        what="the item to finish",
    )
    wait_for(
        lambda: not GitHubAction.objects.filter(status=GitHubActionStatus.PENDING).exists(),
        timeout=60,
        what="the issue's label flow delivered",
    )
    return item


def test_a_labelled_issue_becomes_one_item_a_generated_spec_and_a_pr_that_closes_it(
    docker_stack: Any, agent_bin: Any, tmp_path: Path
) -> None:
    scenario = {"spec": {"text": SPEC}, "steps": [{"write": {"widget.txt": "a widget\n"}}]}
    seed = {"issues": [{"repo": REPO, **ISSUE, "labels": ["whim"]}]}
    with fake_github_in_a_container(seed) as (address, served):
        stack = loop_stack(docker_stack, agent_bin, scenario, address)

        # The webhook first; the poll (every 2 s) sees the same labelled issue afterwards.
        answer = deliver(stack.base_url, "issues", labelled_event(), str(uuid.uuid4()))
        assert answer["outcome"] in ("item_created", "item_exists"), answer
        item = wait_for(
            lambda: WorkItem.objects.filter(repo=REPO, source_ref="issue:42").first(),
            timeout=30,
            what="the issue's item",
        )
        wait_for(
            lambda: Repository.objects.filter(name=REPO, polled_at__gt=item.created_at).exists(),
            timeout=60,
            what="a poll after the item was made",
        )
        item = settled(item.pk)
        assert item.status == WorkItemStatus.COMPLETED, item.error
        requests, seen = served(), fake_state(address)

    # One item, by webhook and poll, made as the issue describes it.
    assert WorkItem.objects.filter(repo=REPO).count() == 1
    assert (item.source, item.source_ref) == ("github", "issue:42")
    assert item.description.startswith("# Add a widget") and "We need a widget." in item.description
    assert item.branch.startswith("whim/issue-42-")
    # A spec attempt wrote the spec; a work attempt implemented it.
    attempts = list(Worker.objects.filter(work_item=item).order_by("attempt"))
    assert [(w.kind, w.status) for w in attempts] == [
        (AttemptKind.SPEC, WorkerStatus.COMPLETED),
        (AttemptKind.WORK, WorkerStatus.COMPLETED),
    ]
    assert item.spec == SPEC
    assert stack.show(REPO, item.branch, "widget.txt") == "a widget"
    # The pull request closes the issue.
    [pull] = [r for r in requests if r["method"] == "POST" and r["path"] == f"/repos/{REPO}/pulls"]
    assert "Closes #42" in pull["body"]["body"]
    assert item.pr_url and item.pr_number
    # The issue: whim → whim:processing → whim:pr-ready, one comment linking the PR.
    assert seen["labels"][REPO]["42"] == ["whim:pr-ready"]
    comments = seen["comments"][REPO]["42"]
    assert len(comments) == 1 and item.pr_url in comments[0]
    added = [
        r["body"]["labels"]
        for r in requests
        if r["method"] == "POST" and r["path"] == f"/repos/{REPO}/issues/42/labels"
    ]
    assert ["whim:processing"] in added and ["whim:pr-ready"] in added
    assert not GitHubAction.objects.filter(status=GitHubActionStatus.FAILED).exists()
    nothing_left(stack)


def test_a_spec_that_fails_every_try_fails_the_item_and_tells_the_issue_once(
    docker_stack: Any, agent_bin: Any, tmp_path: Path
) -> None:
    scenario = {"spec": {"text": SPEC, "failTimes": 3}}
    seed = {"issues": [{"repo": REPO, **ISSUE, "labels": ["whim"]}]}
    with fake_github_in_a_container(seed) as (address, _):
        loop_stack(docker_stack, agent_bin, scenario, address)  # the poll takes the issue

        item = wait_for(
            lambda: WorkItem.objects.filter(repo=REPO, source_ref="issue:42").first(),
            timeout=60,
            what="the poll to take the issue",
        )
        item = settled(item.pk)
        seen = fake_state(address)

    assert item.status == WorkItemStatus.FAILED
    assert item.spec == ""
    attempts = list(Worker.objects.filter(work_item=item).values_list("kind", "status"))
    assert attempts == [(AttemptKind.SPEC, WorkerStatus.FAILED)] * 3
    # The processing label is off (and the intake label was taken off when the issue was
    # taken), so labelling the issue again retries it; the failure is said once.
    assert seen["labels"][REPO]["42"] == []
    [comment] = seen["comments"][REPO]["42"]
    assert "spec" in comment.lower() and GITHUB_TOKEN not in comment
    assert WorkItem.objects.filter(repo=REPO).count() == 1
