"""End to end on real parts: API → PostgreSQL → Celery → dockerd → harness → callbacks."""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from functools import partial
from typing import Any

import pytest

from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.services.dispatch import worker_token
from tests.docker_stack import DockerStack, make_bare_repo
from tests.helpers import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def submit(stack: DockerStack, **body: Any) -> uuid.UUID:
    req = urllib.request.Request(
        f"{stack.base_url}/api/work",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": stack.api_key},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        return uuid.UUID(json.loads(resp.read())["id"])


def finished(item_id: uuid.UUID) -> WorkItem | None:
    item = WorkItem.objects.get(pk=item_id)
    return item if item.status in WorkItem.TERMINAL else None


def no_containers_left(stack: DockerStack) -> bool:
    return not stack.containers()


def test_a_mock_run_pushes_its_commit_and_completes(docker_stack: Any) -> None:
    stack = docker_stack()
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(
        stack, repo="acme/widgets", spec="# Add widgets\n\nPlease.", metadata={"mockSeconds": 1}
    )

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.5, what="the item")
    assert item.status == WorkItemStatus.COMPLETED, item.error
    head = stack.branch_head("acme/widgets", "add-widgets")
    assert item.commit_sha == head
    assert f"whim mock change for {item_id}" in stack.show("acme/widgets", head, "WHIM_MOCK.md")
    worker = Worker.objects.get(work_item_id=item_id)
    assert worker.status == WorkerStatus.COMPLETED and worker.registered_at is not None
    assert not worker.locks.exists()
    wait_for(lambda: no_containers_left(stack), timeout=30, what="the container's removal")
    assert "mock" in worker.__class__.objects.get(pk=worker.pk).log_tail.lower()


def test_a_failing_agent_is_retried_then_failed_with_one_container_per_attempt(
    docker_stack: Any,
) -> None:
    stack = docker_stack(MAX_RETRIES="2")
    make_bare_repo(stack.repos, "acme/widgets")
    seen: set[str] = set()

    item_id = submit(
        stack, repo="acme/widgets", spec="# Fail", metadata={"mock": "fail", "mockSeconds": 0.2}
    )

    def done() -> WorkItem | None:
        seen.update(c.name for c in stack.containers())
        return finished(item_id)

    item = wait_for(done, timeout=180, interval=0.2, what="the item to fail")
    assert item.status == WorkItemStatus.FAILED
    assert item.retry_count == 2
    attempts = Worker.objects.filter(work_item_id=item_id)
    assert attempts.count() == 3
    assert set(attempts.values_list("status", flat=True)) == {WorkerStatus.FAILED}
    assert seen <= {f"whim-{stack.instance}-{w.pk}" for w in attempts}
    wait_for(lambda: no_containers_left(stack), timeout=30, what="every container removed")


def test_a_stuck_agent_never_leaves_the_item_in_progress(docker_stack: Any) -> None:
    stack = docker_stack(MAX_RETRIES="0")
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(
        stack, repo="acme/widgets", spec="# Stuck", metadata={"mock": "stuck", "mockSeconds": 0.2}
    )

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.5, what="the item")
    assert item.status == WorkItemStatus.FAILED
    assert Worker.objects.get(work_item_id=item_id).status == WorkerStatus.STUCK
    assert not Worker.objects.get(work_item_id=item_id).locks.exists()
    wait_for(lambda: no_containers_left(stack), timeout=30, what="the container stopped")


PROBE = r"""
v1=/sys/fs/cgroup
first() { cat "$1" 2>/dev/null || cat "$2"; }
{
  echo "uid=$(id -u)"
  grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\t' | sed 's/:/=/'
  if touch /probe 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi
  echo "memory=$(first $v1/memory/memory.limit_in_bytes $v1/memory.max)"
  echo "memsw=$(first $v1/memory/memory.memsw.limit_in_bytes $v1/memory.swap.max)"
  echo "pids=$(first $v1/pids/pids.max $v1/pids.max)"
  if [ -e /var/run/docker.sock ] || [ -e /run/docker.sock ]; then
    echo docker_sock=yes
  else
    echo docker_sock=no
  fi
  pattern='^(DATABASE_URL|REDIS_URL|SECRET_KEY|CELERY_BROKER_URL|API_KEY)='
  echo "secrets=$(env | grep -ciE "$pattern" || true)"
} > PROBE.txt
"""


def test_a_probe_inside_the_container_proves_the_hardening(docker_stack: Any) -> None:
    stack = docker_stack(WHIM_AGENT="command", WHIM_AGENT_COMMAND=PROBE, WORKER_PIDS="128")
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(stack, repo="acme/widgets", spec="# Probe")

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.5, what="the probe")
    assert item.status == WorkItemStatus.COMPLETED, item.error
    probe = dict(
        line.split("=", 1)
        for line in stack.show("acme/widgets", item.commit_sha, "PROBE.txt").splitlines()
    )
    assert probe["uid"] != "0"
    assert int(probe["CapEff"], 16) == 0
    assert probe["NoNewPrivs"] == "1"
    assert probe["rootfs"] == "ro"
    assert int(probe["memory"]) == 512 * 1024 * 1024
    assert int(probe["memsw"]) == 512 * 1024 * 1024  # memory + swap = memory: no swap
    assert probe["pids"] == "128"
    assert probe["docker_sock"] == "no"
    assert probe["secrets"] == "0"


def test_a_container_with_a_bad_entrypoint_fails_once_with_its_stderr_kept(
    docker_stack: Any,
) -> None:
    # The harness can't start: the item must fail at once, its stderr kept, no retry storm.
    # FAST_EXIT_SECONDS is 10 s here; the exit is judged by how long the daemon says the
    # container ran, so a late observer pass still sees a broken image, not a crash.
    stack = docker_stack(WORKER_IMAGE="whim-worker-broken:test")
    stack.client.images.build(
        fileobj=io.BytesIO(
            b'FROM whim-worker:latest\nENTRYPOINT ["sh", "-c", '
            b"\"echo 'boom: no such agent' >&2; exit 7\"]\n"
        ),
        tag="whim-worker-broken:test",
        rm=True,
    )
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(stack, repo="acme/widgets", spec="# Broken")

    item = wait_for(lambda: finished(item_id), timeout=60, interval=0.2, what="the failure")
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "CONTAINER_ERROR"
    assert "boom: no such agent" in item.error
    assert Worker.objects.filter(work_item_id=item_id).count() == 1
    wait_for(lambda: no_containers_left(stack), timeout=30, what="the container removed")


def test_two_workers_editing_one_file_never_hold_it_at_the_same_time(docker_stack: Any) -> None:
    stack = docker_stack(MAX_WORKERS="2")
    make_bare_repo(stack.repos, "acme/widgets")
    # mockLock: the agent takes the lock (whim-lock) before its 3 s of work, so the two
    # attempts overlap in time and one must wait for the other.
    # Each holds the lock for 10 s: more than the start skew of two containers on a busy host.
    meta = {"mockSeconds": 10, "mockFile": "shared/NOTES.md", "mockLock": True}

    first = submit(stack, repo="acme/widgets", spec="# First", branch="first", metadata=meta)
    second = submit(stack, repo="acme/widgets", spec="# Second", branch="second", metadata=meta)

    for item_id in (first, second):
        item = wait_for(partial(finished, item_id), timeout=180, interval=0.5, what="items")
        assert item.status == WorkItemStatus.COMPLETED, item.error
    # Each holds the lock from "locks_acquired" until its "completed" (push in between):
    # the two windows never overlap, and one of them had to wait for the other.
    windows = []
    for item_id in (first, second):
        events = WorkItemEvent.objects.filter(work_item_id=item_id)
        acquired = events.filter(kind="locks_acquired").earliest("created_at")
        assert acquired.data["files"] == ["shared/NOTES.md"]
        windows.append((acquired.created_at, events.get(kind="completed").created_at))
    earlier, later = sorted(windows)
    assert earlier[1] <= later[0], f"both held shared/NOTES.md at once: {windows}"
    assert WorkItemEvent.objects.filter(kind="lock_blocked").exists(), "the race never happened"
    for branch in ("first", "second"):
        head = stack.branch_head("acme/widgets", branch)
        assert "whim mock change" in stack.show("acme/widgets", head, "shared/NOTES.md")


def test_the_logs_route_tails_a_running_container(docker_stack: Any) -> None:
    stack = docker_stack()
    make_bare_repo(stack.repos, "acme/widgets")
    item_id = submit(stack, repo="acme/widgets", spec="# Logs", metadata={"mockSeconds": 6})
    worker = wait_for(
        lambda: Worker.objects.filter(work_item_id=item_id, status=WorkerStatus.RUNNING).first(),
        timeout=60,
        what="a running worker",
    )

    def tail() -> list[str]:
        req = urllib.request.Request(
            f"{stack.base_url}/api/workers/{worker.pk}/logs?lines=50",
            headers={"X-API-Key": stack.api_key},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            lines: list[str] = json.loads(resp.read())["logs"]
        return lines

    lines = wait_for(
        lambda: [ln for ln in tail() if "harness" in ln.lower()],
        timeout=30,
        what="harness output in the container's logs",
    )
    assert len(tail()) <= 50 and lines
    # Running, and registered with its token, which came on stdin: the configuration the
    # Docker API shows holds neither the token nor the URL that carries it.
    [container] = stack.containers()
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["WORKER_ID"] == str(worker.pk) and env["WHIM_SECRETS_ON_STDIN"] == "1"
    assert "WORKER_TOKEN" not in env and "ORCHESTRATOR_URL" not in env
    assert worker_token(worker.pk) not in json.dumps(container.attrs)
