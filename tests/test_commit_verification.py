"""``complete`` is accepted only with a commit the orchestrator can see on the item's pushed
branch (issue 9, DESIGN.md §9): local bare repos checked with git on this host, GitHub repos
through its API (the fake speaks GitHub's shapes). A forged, missing or foreign sha is refused
with 400 VALIDATION_ERROR naming ``commitSha``, recorded on the item, and the item stays as it
was; with no way to check, the completion is accepted and its event says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from orchestration.errors import Unavailable
from orchestration.models import WorkerStatus, WorkItemEvent, WorkItemStatus
from orchestration.services.commits import commit_verify
from tests.callbacks_support import call, hold, snapshot
from tests.factories import running_attempt
from tests.fakes.github import FakeGitHub
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

FORGED = "f0" * 20


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


class Repo:
    """``<root>/acme/widgets.git``: main (seed), ``feature`` (seed + two commits) and
    ``other`` (seed + one commit of its own), pushed from a scratch clone."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "acme" / "widgets.git"
        work = root / "work"
        git("init", "-q", "-b", "main", str(work))
        git("commit", "-q", "--allow-empty", "-m", "seed", cwd=work)
        self.seed = git("rev-parse", "HEAD", cwd=work)
        git("checkout", "-q", "-b", "feature", cwd=work)
        git("commit", "-q", "--allow-empty", "-m", "one", cwd=work)
        self.first = git("rev-parse", "HEAD", cwd=work)
        git("commit", "-q", "--allow-empty", "-m", "two", cwd=work)
        self.tip = git("rev-parse", "HEAD", cwd=work)
        git("checkout", "-q", "-b", "other", "main", cwd=work)
        git("commit", "-q", "--allow-empty", "-m", "elsewhere", cwd=work)
        self.elsewhere = git("rev-parse", "HEAD", cwd=work)
        self.bare.parent.mkdir(parents=True)
        git("clone", "-q", "--bare", str(work), str(self.bare))
        git("--git-dir", str(self.bare), "fetch", "-q", str(work), "+refs/heads/*:refs/heads/*")


@pytest.fixture
def local_repo(tmp_path: Path, settings: Any) -> Repo:
    settings.WHIM_GIT_BASE_URL = f"file://{tmp_path}/"
    settings.WHIM_LOCAL_REPOS_DIR = str(tmp_path)
    return Repo(tmp_path)


@pytest.fixture
def github(settings: Any) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    settings.WHIM_GIT_BASE_URL = "https://github.com/"
    settings.WHIM_LOCAL_REPOS_DIR = ""
    settings.GITHUB_API_URL = fake.url
    settings.GITHUB_TOKEN = "test-token"
    seed, first, tip, elsewhere = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
    fake.repos["acme/widgets"] = {
        "main": [seed],
        "feature": [seed, first, tip],
        "other": [seed, elsewhere],
    }
    yield fake
    fake.stop()


def complete(client: Client, sha: str | None, *, branch: str = "feature") -> tuple[Any, ...]:
    item, worker = running_attempt(repo="acme/widgets", branch=branch)
    body: dict[str, Any] = {"prUrl": "https://github.com/acme/widgets/pull/1"}
    if sha is not None:
        body["commitSha"] = sha
    return item, worker, call(client, worker, "complete", body)


def assert_refused(client: Client, sha: str | None, *, branch: str = "feature") -> str:
    """Refused with 400 naming commitSha; the item and worker as they were, plus one event."""
    item, worker = running_attempt(repo="acme/widgets", branch=branch)
    hold(worker, "a.py", seconds=30)
    before = snapshot(item, worker)
    body: dict[str, Any] = {"prUrl": "https://github.com/acme/widgets/pull/1"}
    if sha is not None:
        body["commitSha"] = sha

    answer = assert_error(call(client, worker, "complete", body), 400, "VALIDATION_ERROR")

    note: str = answer["details"]["commitSha"]
    after = list(snapshot(item, worker))
    events_at = 14  # snapshot's event count
    assert after[events_at] == before[events_at] + 1
    after[events_at] = before[events_at]
    assert tuple(after) == before  # nothing but the refusal event was written
    event = WorkItemEvent.objects.get(work_item=item, kind="commit_refused")
    assert event.message == note and event.worker_id == worker.pk
    assert event.data["commitSha"] == (sha or "")
    assert item.status == WorkItemStatus.IN_PROGRESS
    assert worker.status == WorkerStatus.RUNNING
    return note


# --- local bare repositories -----------------------------------------------------------------


def test_the_pushed_tip_of_the_branch_is_accepted(client: Client, local_repo: Repo) -> None:
    item, _worker, resp = complete(client, local_repo.tip)

    assert resp.status_code == 200, resp.content
    item.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED and item.commit_sha == local_repo.tip
    event = WorkItemEvent.objects.get(work_item=item, kind="completed")
    assert event.data["commitCheckedBy"] == "local git"


def test_an_earlier_commit_of_the_branch_is_accepted(client: Client, local_repo: Repo) -> None:
    _item, _worker, resp = complete(client, local_repo.first)

    assert resp.status_code == 200, resp.content


def test_a_forged_sha_is_refused(client: Client, local_repo: Repo) -> None:
    note = assert_refused(client, FORGED)

    assert "does not exist" in note


def test_a_sha_on_another_branch_is_refused(client: Client, local_repo: Repo) -> None:
    note = assert_refused(client, local_repo.elsewhere)

    assert "is not on branch feature" in note


def test_a_missing_sha_is_refused(client: Client, local_repo: Repo) -> None:
    note = assert_refused(client, None)

    assert "no commitSha" in note


def test_a_short_sha_is_refused(client: Client, local_repo: Repo) -> None:
    note = assert_refused(client, local_repo.tip[:12])

    assert "full commit id" in note


def test_a_branch_that_was_never_pushed_is_refused(client: Client, local_repo: Repo) -> None:
    note = assert_refused(client, local_repo.seed, branch="never-pushed")

    assert "does not exist" in note


def test_a_repository_outside_the_repos_dir_is_refused(settings: Any, tmp_path: Path) -> None:
    settings.WHIM_GIT_BASE_URL = f"file://{tmp_path}/"
    settings.WHIM_LOCAL_REPOS_DIR = str(tmp_path / "repos")
    (tmp_path / "repos").mkdir()
    Repo(tmp_path / "elsewhere")

    verdict = commit_verify(repo="acme/../../elsewhere/acme/widgets", branch="feature", sha=FORGED)

    assert not verdict.ok and "not in WHIM_LOCAL_REPOS_DIR" in verdict.note


def test_nothing_the_bare_repository_configures_runs_during_the_check(
    local_repo: Repo, tmp_path: Path
) -> None:
    # What an agent could plant in a repo it can write: hooks, and config naming programs.
    marker = tmp_path / "ran"
    script = tmp_path / "planted.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    hooks = local_repo.bare / "hooks"
    for name in ("pre-receive", "post-receive", "reference-transaction", "post-checkout"):
        (hooks / name).write_text(script.read_text())
        (hooks / name).chmod(0o755)
    for key, value in (
        ("core.hooksPath", str(hooks)),
        ("core.fsmonitor", str(script)),
        ("core.pager", str(script)),
        ("core.alternateRefsCommand", str(script)),
    ):
        git("--git-dir", str(local_repo.bare), "config", key, value)

    for sha in (local_repo.tip, local_repo.elsewhere, FORGED):
        commit_verify(repo="acme/widgets", branch="feature", sha=sha)

    assert not marker.exists()


def test_a_replace_ref_cannot_forge_the_branch_history(local_repo: Repo) -> None:
    # refs/replace/<first> -> a copy of it whose parent is <elsewhere>: git honouring replace
    # refs would see <elsewhere> in the branch's history.
    bare = str(local_repo.bare)
    tree = git("--git-dir", bare, "rev-parse", f"{local_repo.first}^{{tree}}")
    fake = git("--git-dir", bare, "commit-tree", tree, "-p", local_repo.elsewhere, "-m", "x")
    git("--git-dir", bare, "update-ref", f"refs/replace/{local_repo.first}", fake)
    assert git("--git-dir", bare, "merge-base", local_repo.elsewhere, "feature") == (
        local_repo.elsewhere
    ), "the forgery works on plain git"

    verdict = commit_verify(repo="acme/widgets", branch="feature", sha=local_repo.elsewhere)

    assert not verdict.ok


def test_refusals_recorded_on_the_timeline_are_bounded(client: Client, local_repo: Repo) -> None:
    item, worker = running_attempt(repo="acme/widgets", branch="feature")

    for _ in range(15):
        resp = call(client, worker, "complete", {"commitSha": FORGED})
        assert_error(resp, 400, "VALIDATION_ERROR")

    assert WorkItemEvent.objects.filter(work_item=item, kind="commit_refused").count() == 10


# --- GitHub ------------------------------------------------------------------------------------


def test_github_accepts_a_commit_on_the_branch(client: Client, github: FakeGitHub) -> None:
    for sha in ("c" * 40, "b" * 40):
        item, _worker, resp = complete(client, sha)
        assert resp.status_code == 200, resp.content
        event = WorkItemEvent.objects.get(work_item=item, kind="completed")
        assert event.data["commitCheckedBy"] == "GitHub"
    asked = [r.path for r in github.requests]
    assert "/repos/acme/widgets/commits/" + "c" * 40 in asked
    assert all(r.authorization == "Bearer test-token" for r in github.requests)


def test_github_refuses_a_forged_sha(client: Client, github: FakeGitHub) -> None:
    assert "does not exist" in assert_refused(client, FORGED)


def test_github_refuses_a_sha_on_another_branch(client: Client, github: FakeGitHub) -> None:
    assert "is not on branch feature" in assert_refused(client, "d" * 40)


def test_github_refuses_a_branch_that_was_never_pushed(client: Client, github: FakeGitHub) -> None:
    assert "does not exist" in assert_refused(client, "a" * 40, branch="never-pushed")


def test_github_down_is_503_and_nothing_is_written(client: Client, github: FakeGitHub) -> None:
    github.fail_with = 502
    item, worker = running_attempt(repo="acme/widgets", branch="feature")
    before = snapshot(item, worker)

    assert_error(
        call(client, worker, "complete", {"commitSha": "c" * 40}), 503, "SERVICE_UNAVAILABLE"
    )

    assert snapshot(item, worker) == before
    with pytest.raises(Unavailable):
        commit_verify(repo="acme/widgets", branch="feature", sha="c" * 40)


# --- neither -----------------------------------------------------------------------------------


def test_with_no_way_to_check_the_completion_is_accepted_and_says_so(
    client: Client, settings: Any
) -> None:
    settings.WHIM_GIT_BASE_URL = "https://github.com/"
    settings.WHIM_LOCAL_REPOS_DIR = ""
    settings.GITHUB_TOKEN = ""

    item, _worker, resp = complete(client, FORGED)

    assert resp.status_code == 200, resp.content
    event = WorkItemEvent.objects.get(work_item=item, kind="completed")
    assert event.data["commitCheckedBy"] == ""
    assert "not verified" in event.message
