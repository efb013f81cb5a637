"""Issue 10's pipeline end to end, part B, on real parts (gunicorn, Celery, dockerd, the worker
image) with the fake ``claude`` (tests/fakes/agents/claude) on WHIM_AGENT_PATH_DIR: verification
children that pass and fail, the per-item cost cap and its "continue", the daily cost budget,
and agents that print garbage, nothing, or never end."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from orchestration.choices import ErrorCategory, EventKind
from orchestration.models import (
    FileLock,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkItemType,
)
from tests.conftest import ROOT
from tests.docker_stack import DockerStack, git, make_bare_repo
from tests.helpers import wait_for
from tests.test_docker_e2e import finished, no_containers_left, submit

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

FAKE_CLAUDE = ROOT / "tests" / "fakes" / "agents" / "claude"
AGENT_BINS = ROOT / ".run" / "test-agent-bin"
SAFE = "-c safe.directory=*"
READABLE = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH  # 0755


@pytest.fixture
def agent_bin() -> Iterator[Callable[[dict[str, Any]], str]]:
    """Factory: a WHIM_AGENT_PATH_DIR holding a copy of the fake ``claude`` and ``scenario``
    as its scenario.json, readable by the container's users (bound read-only, so a symlink
    to a host path would not resolve in there)."""
    made: list[Path] = []

    def make(scenario: dict[str, Any]) -> str:
        AGENT_BINS.mkdir(parents=True, exist_ok=True)
        AGENT_BINS.chmod(READABLE)
        directory = AGENT_BINS / uuid.uuid4().hex[:12]
        directory.mkdir()
        directory.chmod(READABLE)
        shutil.copyfile(FAKE_CLAUDE, directory / "claude")
        (directory / "claude").chmod(READABLE)
        (directory / "scenario.json").write_text(json.dumps(scenario))
        (directory / "scenario.json").chmod(0o644)
        made.append(directory)
        return str(directory)

    yield make
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


def add_files(stack: DockerStack, repo: str, files: dict[str, str], scratch: Path) -> None:
    """Commit ``files`` on the bare repo's main (as a repo's own config would be)."""
    bare = stack.repos / f"{repo}.git"
    work = scratch / f"seed-{uuid.uuid4().hex[:8]}"
    # The bare repo belongs to the container's user: its git programs must be told it is safe.
    git("clone", "-q", "-u", f"git {SAFE} upload-pack", str(bare), str(work))
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "config", cwd=work)
    git("push", "-q", "--receive-pack", f"git {SAFE} receive-pack", "origin", "HEAD:main", cwd=work)
    subprocess.run(["chown", "-R", "1000:1000", str(bare)], check=True)


def api(stack: DockerStack, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        f"{stack.base_url}/api/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json", "X-API-Key": stack.api_key},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def page(client: Client, item_id: uuid.UUID) -> str:
    resp = client.get(reverse("work-detail", args=[item_id]))
    assert resp.status_code == 200
    return resp.content.decode()


def commits(stack: DockerStack, repo: str, branch: str) -> list[tuple[str, list[str]]]:
    """The branch's commits on top of main, oldest first: (subject, files changed)."""
    out = git(
        "--git-dir",
        str(stack.repos / f"{repo}.git"),
        "log",
        "--reverse",
        "--format=@%s",
        "--name-only",
        f"refs/heads/main..refs/heads/{branch}",
    )
    found: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        if line.startswith("@"):
            found.append((line[1:], []))
        elif line.strip():
            found[-1][1].append(line.strip())
    return found


def nothing_left(stack: DockerStack) -> None:
    """No attempt active, no item in flight, no lock held, no container running."""
    assert not Worker.objects.filter(status__in=Worker.ACTIVE).exists()
    assert not WorkItem.objects.filter(status__in=WorkItem.ACTIVE).exists()
    assert not FileLock.objects.exists()
    wait_for(lambda: no_containers_left(stack), timeout=30, what="every container removed")


def log_of(worker: Worker) -> str:
    """The attempt's log tail, kept once its container has exited (the harness's last line
    is ``exit <code>``)."""
    tail: str = wait_for(
        lambda: (t := Worker.objects.get(pk=worker.pk).log_tail) and "] exit " in t and t,
        timeout=30,
        interval=0.5,
        what="the attempt's log",
    )
    return tail


def wait_status(item_id: uuid.UUID, status: str, *, timeout: float = 120) -> WorkItem:
    def reached() -> WorkItem | None:
        item = WorkItem.objects.get(pk=item_id)
        if item.status == status:
            return item
        if item.status in WorkItem.TERMINAL:
            pytest.fail(f"{item_id} ended {item.status} ({item.error_category}): {item.error}")
        return None

    result: WorkItem = wait_for(reached, timeout=timeout, interval=0.5, what=f"{status}")
    return result


# 1. Verification ------------------------------------------------------------------------------


def test_verification_children_check_the_pushed_branch_and_their_verdict_shows(
    docker_stack: Any, agent_bin: Any, viewer_client: Client, tmp_path: Path
) -> None:
    scenario = {
        "steps": [{"write": {"widget.txt": "spins\n"}}],
        "verify": "PASS",
        "by_repo": {"acme/failing": {"verify": "FAIL"}},
    }
    stack = docker_stack(
        WHIM_AGENT="claude", WHIM_AGENT_PATH_DIR=agent_bin(scenario), MAX_RETRIES="0"
    )
    make_bare_repo(stack.repos, "acme/passing")
    make_bare_repo(stack.repos, "acme/failing")
    # One asks in its metadata, the other in its repo's own config.
    add_files(stack, "acme/failing", {".whim/config.toml": "verification = true\n"}, tmp_path)
    spec = "# Spin the widget\n\nThe widget spins."
    passing = submit(stack, repo="acme/passing", spec=spec, metadata={"verification": True})
    failing = submit(stack, repo="acme/failing", spec=spec)

    verdicts = {}
    for parent_id, repo, passed in (
        (passing, "acme/passing", True),
        (failing, "acme/failing", False),
    ):
        parent = wait_status(parent_id, WorkItemStatus.COMPLETED)
        head = stack.branch_head(repo, parent.branch)
        assert parent.commit_sha == head
        child = wait_for(
            partial(WorkItem.objects.filter(parent_work_item_id=parent_id).first),
            timeout=30,
            what="the verification child",
        )
        assert child.type == WorkItemType.VERIFICATION
        assert (child.repo, child.branch, child.pr_number) == (repo, parent.branch, None)
        assert child.spec == "" and "The widget spins." in child.description
        child = wait_status(child.pk, WorkItemStatus.COMPLETED)
        assert child.verification_passed is passed
        # It verified the pushed branch and committed nothing.
        assert stack.branch_head(repo, parent.branch) == head
        [attempt] = Worker.objects.filter(work_item=child)
        log = log_of(attempt)
        assert f"verification {'passed' if passed else 'failed'}" in log
        assert "whim: iteration" not in log  # no loop ran: verification mode
        verdicts[parent_id] = (child, passed)

    for parent_id, (child, passed) in verdicts.items():
        shown = api(stack, f"work/{parent_id}")
        assert shown["status"] == "completed"  # a FAIL verdict does not undo the change
        assert shown["verificationPassed"] is passed
        status = shown["metadata"]["verificationStatus"]
        assert status["passed"] is passed
        assert status["verificationWorkItemId"] == str(child.pk)
        assert status["completedAt"]
        as_child = api(stack, f"work/{parent_id}/verification")
        assert as_child["id"] == str(child.pk) and as_child["spec"] is None
        assert as_child["parentWorkItemId"] == str(parent_id)
        verdict = "PASS" if passed else "FAIL"
        html = page(viewer_client, parent_id)
        assert f'{"completed" if passed else "failed"}">{verdict}</span>' in html
        assert WorkItemEvent.objects.filter(work_item_id=parent_id, kind=EventKind.VERIFIED)
        child_html = page(viewer_client, child.pk)
        assert f"Verdict: <strong>{verdict}</strong>" in child_html
        assert f"(branch <code>{child.branch}</code>)" in child_html
    nothing_left(stack)


# 2. Money -------------------------------------------------------------------------------------


def test_the_cost_cap_pauses_at_an_iteration_boundary_and_continue_finishes_the_item(
    docker_stack: Any, agent_bin: Any, viewer_client: Client
) -> None:
    steps = [{"write": {f"step{n}.txt": f"step {n}\n"}} for n in (1, 2, 3)]
    scenario = {"steps": steps, "cost": 0.01}  # USD per invocation
    stack = docker_stack(
        WHIM_AGENT="claude",
        WHIM_AGENT_PATH_DIR=agent_bin(scenario),
        MAX_RETRIES="0",
        DAILY_COST_BUDGET="0.025",
    )
    repo = "acme/costly"
    make_bare_repo(stack.repos, repo)

    item_id = submit(
        stack,
        repo=repo,
        spec="# Three steps\n\nDo them.",
        metadata={"maxCostUsd": 0.015, "review": False},
    )

    # Iteration 1 spends 0.01 (under the cap), iteration 2 reaches 0.02: the check before
    # iteration 3 stops the attempt, iteration 2's work already pushed.
    item = wait_status(item_id, WorkItemStatus.PAUSED)
    assert item.error_category == ErrorCategory.COST_CAP
    assert item.retry_count == 0
    head = stack.branch_head(repo, item.branch)
    pushed = commits(stack, repo, item.branch)
    assert [files for _, files in pushed] == [["step1.txt"], ["step2.txt"]]
    assert pushed[-1][0].startswith("whim: iteration 2")
    assert stack.show(repo, head, "step2.txt") == "step 2"  # whole: nothing cut mid-edit
    [attempt] = Worker.objects.filter(work_item_id=item_id)
    assert attempt.error_category == ErrorCategory.COST_CAP
    log = log_of(attempt)
    assert log.count("starting claude (work)") == 2  # no third one begun
    assert log.count("agent claude: finished") == 2  # and none cut short
    assert item.cost_usd == Decimal("0.02")
    shown = api(stack, f"work/{item_id}")
    assert (shown["status"], shown["costUsd"]) == ("paused", 0.02)
    assert "Paused: it has spent $0.02" in page(viewer_client, item_id)
    nothing_left(stack)

    answer = api(stack, f"work/{item_id}/continue", {"maxCostUsd": 1})
    assert answer["status"] == "queued"

    item = wait_status(item_id, WorkItemStatus.COMPLETED)
    done = commits(stack, repo, item.branch)
    assert [files for _, files in done] == [["step1.txt"], ["step2.txt"], ["step3.txt"]]
    assert done[:2] == pushed  # carried on from the pushed head: nothing done twice
    assert item.commit_sha == stack.branch_head(repo, item.branch)
    second = Worker.objects.filter(work_item_id=item_id).exclude(pk=attempt.pk).get()
    assert second.status == WorkerStatus.COMPLETED
    resumed = WorkItemEvent.objects.get(work_item_id=item_id, kind=EventKind.RESUMED)
    assert resumed.worker_id == second.pk and head[:7] in resumed.message
    assert item.cost_usd == Decimal("0.03")

    # DAILY_COST_BUDGET ($0.025) is spent now ($0.03 today): the next item waits, and says why.
    waiting = submit(stack, repo=repo, spec="# Another\n\nLater.", metadata={"review": False})
    wait_for(
        lambda: "Daily cost budget spent ($0.03 of $0.025 today)" in page(viewer_client, waiting),
        timeout=10,
        what="the budget in the explain text",
    )
    time.sleep(4)  # the beat's dispatch ticks every second (LOOP_INTERVAL): chances enough
    assert api(stack, f"work/{waiting}")["status"] == "queued"
    assert not Worker.objects.filter(work_item_id=waiting).exists()
    nothing_left(stack)


# 3. Agents that misbehave ---------------------------------------------------------------------


def test_agents_that_print_garbage_nothing_or_never_end_fail_clearly_and_leave_nothing(
    docker_stack: Any, agent_bin: Any
) -> None:
    scenario = {
        "by_repo": {
            "acme/garbage": {"misbehave": "garbage"},
            "acme/silent": {"misbehave": "silent"},
            "acme/hang": {"misbehave": "hang", "hang_seconds": 60},
        }
    }
    stack = docker_stack(
        WHIM_AGENT="claude",
        WHIM_AGENT_PATH_DIR=agent_bin(scenario),
        AGENT_IDLE_TIMEOUT="5",
        MAX_RETRIES="1",
    )
    items = {}
    for name in ("garbage", "silent", "hang"):
        make_bare_repo(stack.repos, f"acme/{name}")
        items[name] = submit(stack, repo=f"acme/{name}", spec=f"# Misbehave {name}\n\nPlease.")

    ended = {
        name: wait_for(partial(finished, item_id), timeout=150, interval=0.5, what=name)
        for name, item_id in items.items()
    }

    for name in ("garbage", "silent"):
        item = ended[name]
        assert item.status == WorkItemStatus.FAILED
        assert item.error_category == ErrorCategory.AGENT_ERROR
        assert "printed no claude events" in item.error
        attempts = Worker.objects.filter(work_item=item)
        assert item.retry_count == 1 and attempts.count() == 2
        assert set(attempts.values_list("status", flat=True)) == {WorkerStatus.FAILED}
    hang = ended["hang"]
    assert hang.status == WorkItemStatus.FAILED  # retried once, then out of retries
    assert hang.error_category == ErrorCategory.STUCK
    assert "AGENT_IDLE_TIMEOUT" in hang.error
    attempts = Worker.objects.filter(work_item=hang)
    assert hang.retry_count == 1 and attempts.count() == 2
    for attempt in attempts:
        assert attempt.status == WorkerStatus.STUCK
        assert attempt.started_at is not None and attempt.completed_at is not None
        # Stopped by the idle timeout, long before the fake would have ended by itself.
        assert (attempt.completed_at - attempt.started_at).total_seconds() < 40
    nothing_left(stack)
