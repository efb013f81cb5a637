"""The review bot end to end, on real parts: gunicorn and its signed webhook, Celery worker and
beat, dockerd, the worker image (its harness in review mode) and the fake ``claude`` as the
reviewer, a local bare repository holding the pull request's commits, and the fake GitHub on
this machine's loopback, where the orchestrator (never the container) posts the review and the
check run.

A pull request opened and then pushed to at once: the first head's job is superseded before it
runs, the second head's job runs in a container and ends with one GitHub review (its summary,
and a line comment where the diff has the line) and one check run, on that head."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intake.models import GitHubAction, GitHubActionStatus
from orchestration.models import WorkItem, WorkItemStatus, WorkItemType
from tests.docker_stack import git, make_bare_repo
from tests.fakes.github import FakeGitHub
from tests.helpers import wait_for
from tests.test_docker_github_loop import SECRET, deliver
from tests.test_docker_pipeline_b import agent_bin, nothing_left

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

__all__ = ["agent_bin"]  # the fixture, used below

REPO = "acme/widgets"
NUMBER = 3


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    yield fake
    fake.stop()


def push_commit(bare: Path, scratch: Path, branch: str, files: dict[str, str]) -> str:
    """One commit on ``branch`` (from main the first time), pushed to the bare repo: its sha.
    (The bare repo belongs to the container's user: git's own processes are told it is safe.)"""
    config = scratch / "gitconfig"  # safe.directory is read from protected config only
    config.write_text("[safe]\n\tdirectory = *\n")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(config)}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t")
    env.update(GIT_COMMITTER_EMAIL="t@t")

    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], env=env, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    work = scratch / "work"
    if not work.exists():
        run("clone", "-q", str(bare), str(work))
        run("-C", str(work), "checkout", "-q", "-b", branch)
    for path, content in files.items():
        (work / path).write_text(content)
    run("-C", str(work), "add", "-A")
    run("-C", str(work), "commit", "-q", "-m", "change")
    run("-C", str(work), "push", "-q", "origin", branch)
    subprocess.run(["chown", "-R", "1000:1000", str(bare)], check=True)
    return run("-C", str(work), "rev-parse", "HEAD")


def pull_event(action: str, head_sha: str, base_sha: str, before: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": action,
        "number": NUMBER,
        "repository": {"full_name": REPO},
        "pull_request": {
            "number": NUMBER,
            "title": "Count the widgets",
            "body": "Adds a counter.",
            "draft": False,
            "user": {"login": "octocat"},
            "head": {"ref": "counter", "sha": head_sha, "repo": {"full_name": REPO}},
            "base": {"ref": "main", "sha": base_sha},
        },
    }
    if before:
        payload["before"] = before
    return payload


def test_a_pushed_pull_request_is_reviewed_once_on_its_newest_head(
    docker_stack: Any,
    agent_bin: Any,
    github: FakeGitHub,
    tmp_path: Path,
    app_keys: tuple[str, str],
) -> None:
    github.app_public_key = app_keys[1]  # a GitHub App: only its tokens create check runs
    stack = docker_stack(
        WHIM_AGENT="claude",
        WHIM_AGENT_PATH_DIR=agent_bin({"review": "needs-work"}),
        GITHUB_APP_ID=github.app_id,
        GITHUB_APP_PRIVATE_KEY=app_keys[0],
        GITHUB_API_URL=github.url,
        GITHUB_WEBHOOK_SECRET=SECRET,
        INTAKE_REPOS=REPO,
        INTAKE_POLL_INTERVAL="0",  # the webhook alone: the order of the two heads is the test's
        SWEEP_GITHUB_EVERY="2",
    )
    bare = make_bare_repo(stack.repos, REPO)
    base = git("--git-dir", str(bare), "rev-parse", "main")
    first = push_commit(bare, tmp_path, "counter", {"counter.py": "count = 0\n"})
    second = push_commit(bare, tmp_path, "counter", {"counter.py": "count = 0\ntotal = 1\n"})
    github.add_pull(REPO, NUMBER, "counter", second, base_sha=base)

    opened = deliver(stack.base_url, "pull_request", pull_event("opened", first, base), "d1")
    pushed = deliver(
        stack.base_url,
        "pull_request",
        pull_event("synchronize", second, base, before=first),
        str(uuid.uuid4()),
    )
    assert (opened["outcome"], pushed["outcome"]) == ("review_queued", "superseded")

    jobs = {j.commit_sha: j for j in WorkItem.objects.filter(type=WorkItemType.REVIEW)}
    assert set(jobs) == {first, second}
    newest = wait_for(
        lambda: WorkItem.objects.filter(pk=jobs[second].pk, status__in=WorkItem.TERMINAL).first(),
        timeout=240,
        interval=0.5,
        what="the newest head's review",
    )
    assert newest.status == WorkItemStatus.COMPLETED, newest.error
    wait_for(
        lambda: not GitHubAction.objects.filter(status=GitHubActionStatus.PENDING).exists(),
        timeout=60,
        what="the review and check run posted",
    )

    superseded = WorkItem.objects.get(pk=jobs[first].pk)
    assert superseded.status == WorkItemStatus.CANCELLED
    assert superseded.error == f"superseded by {second}"
    # One review and one check run, both on the newest head.
    [review] = github.reviews[REPO][NUMBER]
    assert review["commit_id"] == second
    assert "needs-work" in review["body"] or "misaligned" in review["body"]
    runs = [r for r in github.check_runs[REPO] if r["head_sha"] in (first, second)]
    assert [(r["head_sha"], r["conclusion"]) for r in runs] == [(second, "action_required")]
    assert not GitHubAction.objects.filter(status=GitHubActionStatus.FAILED).exists()
    nothing_left(stack)
