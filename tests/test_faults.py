"""Fault injection with real processes: kill -9, a Redis that dies, a PostgreSQL that
restarts, containers killed from outside, a dockerd restart, two beats. Each test ends with
the invariants (tests/invariants.py)."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from orchestration.models import (
    FileLock,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.dispatch import dispatch_claim_one
from tests.conftest import ROOT, free_port
from tests.docker_stack import DockerStack, make_bare_repo
from tests.factories import WorkItemFactory
from tests.helpers import wait_for
from tests.invariants import assert_invariants
from tests.test_docker_e2e import finished, submit
from workers.tasks import start_worker

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def all_completed(n: int) -> bool:
    return WorkItem.objects.filter(status=WorkItemStatus.COMPLETED).count() == n


def db_tolerant(predicate: Callable[[], Any]) -> Callable[[], Any]:
    """A wait_for predicate that survives the database going away for a moment."""

    def check() -> Any:
        try:
            return predicate()
        except OperationalError:
            connection.close()
            return False

    return check


def finished_watching(
    stack: DockerStack, seen: dict[str, set[str]], item_id: uuid.UUID
) -> Callable[[], WorkItem | None]:
    """A wait_for predicate: the item once finished; meanwhile it records, per work item,
    every container name ever seen for it."""

    def check() -> WorkItem | None:
        for c in stack.containers():
            seen.setdefault(c.labels.get("whim.work_item", "?"), set()).add(c.name)
        return finished(item_id)

    return check


# --- Celery processes ---------------------------------------------------------------------


@pytest.mark.docker
def test_sigkill_between_claim_and_container_start_completes_once_with_one_container(
    docker_stack: Any,
) -> None:
    stack = docker_stack(START_RENUDGE_SECONDS="2", BROKER_VISIBILITY_TIMEOUT="5")
    make_bare_repo(stack.repos, "acme/widgets")
    first = stack.workers.procs[0]
    item_id = submit(
        stack,
        repo="acme/widgets",
        spec="# Once",
        metadata={"mockSeconds": 0.5, "mockStartSeconds": 8},
    )
    wait_for(
        lambda: Worker.objects.filter(work_item_id=item_id).exists(), timeout=30, what="the claim"
    )

    stack.workers.kill9(first)  # inside the 8 s start: claimed, no container yet
    assert not stack.containers()
    assert WorkItem.objects.get(pk=item_id).status == WorkItemStatus.ASSIGNED

    seen: dict[str, set[str]] = {}
    stack.workers.start(concurrency=2, beat=True)
    item = wait_for(
        finished_watching(stack, seen, item_id),
        timeout=120,
        interval=0.2,
        what="the item after the kill",
    )
    assert item.status == WorkItemStatus.COMPLETED, item.error
    assert len(seen.get(str(item_id), set())) == 1, seen
    assert WorkItemEvent.objects.filter(work_item_id=item_id, kind="started").count() == 1
    wait_for(lambda: not stack.containers(), timeout=30, what="cleanup")
    assert_invariants(containers=stack.containers())


@pytest.mark.docker
def test_the_same_start_message_delivered_twice_at_once_makes_one_container(
    docker_stack: Any,
) -> None:
    stack = docker_stack()
    make_bare_repo(stack.repos, "acme/widgets")
    stack.workers.kill9(stack.workers.procs[0])  # no consumer while we set the trap
    WorkItemFactory.create(repo="acme/widgets", branch="twice", metadata={"mockSeconds": 1})
    worker_id = dispatch_claim_one()
    assert worker_id is not None
    for _ in range(2):
        start_worker.delay(str(worker_id))  # plus the claim's own nudge: three in all

    seen: dict[str, set[str]] = {}
    stack.workers.start(concurrency=4, beat=True)
    item = wait_for(
        finished_watching(stack, seen, Worker.objects.get(pk=worker_id).work_item_id),
        timeout=120,
        interval=0.1,
        what="the item",
    )
    assert item.status == WorkItemStatus.COMPLETED, item.error
    assert sum(len(names) for names in seen.values()) == 1, seen
    assert WorkItemEvent.objects.filter(kind="started").count() == 1
    wait_for(lambda: not stack.containers(), timeout=30, what="cleanup")
    assert_invariants(containers=stack.containers())


def start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for(
        lambda: (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            == b"PONG"
        ),
        timeout=20,
        what="redis",
    )
    return proc


def test_redis_killed_with_thirty_queued_items_and_restarted_empty_loses_nothing(
    celery_workers: Any,
) -> None:
    port = free_port()
    log = ROOT / "test-artifacts" / f"redis-{port}.log"
    log.parent.mkdir(exist_ok=True)
    redis = start_redis(port, log)
    try:
        workers = celery_workers(
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            MAX_WORKERS="4",
            LOOP_INTERVAL="1",
            START_RENUDGE_SECONDS="2",
            STALE_THRESHOLD="3",
            HEARTBEAT_GRACE="1",
            SWEEP_HEARTBEATS_EVERY="1",
            SWEEP_STUCK_EVERY="2",
            RETRY_DELAYS="1",
            MAX_RETRIES="5",
            # Attempts lost with Redis count as infrastructure deaths; the test is about
            # nothing lost, not about quarantining an item that died three times.
            QUARANTINE_AFTER="100",
        )
        WorkItemFactory.create_batch(30, metadata={"mockSeconds": 0.5})
        workers.start(concurrency=6, beat=True)
        wait_for(
            lambda: WorkItem.objects.filter(status=WorkItemStatus.COMPLETED).count() >= 4,
            timeout=60,
            what="some progress before the crash",
        )

        redis.send_signal(signal.SIGKILL)  # every queued and unacknowledged message is gone
        redis.wait(timeout=10)
        time.sleep(2)  # the outage: workers and beat lose their broker
        redis = start_redis(port, log)  # empty: --save '' and no AOF

        # Celery's consumer may itself die on the lost connection (a kombu bug); in
        # production the process manager starts it again, and so does this loop.
        wait_for(
            lambda: workers.supervise() >= 0 and all_completed(30),
            timeout=240,
            interval=0.5,
            what="all 30 items after Redis came back empty",
        )
        assert_invariants()
    finally:
        redis.send_signal(signal.SIGKILL)
        redis.wait(timeout=10)


def test_two_beat_processes_apply_each_sweep_once_per_period(celery_workers: Any) -> None:
    workers = celery_workers(
        STALE_THRESHOLD="1",
        HEARTBEAT_GRACE="0",
        SWEEP_HEARTBEATS_EVERY="1",
        SWEEP_STUCK_EVERY="1",
        MAX_RETRIES="0",
        LOOP_INTERVAL="1",
    )
    # Five attempts that went silent: the heartbeat sweep must end each exactly once.
    items = WorkItemFactory.create_batch(5)
    for _ in items:
        worker_id = dispatch_claim_one()
        assert worker_id is not None
        Worker.objects.filter(pk=worker_id).update(
            status=WorkerStatus.RUNNING, container_id=f"gone-{worker_id}"
        )
    # One item whose bookkeeping broke (in progress, no live attempt): the stuck sweep must
    # put it back in the queue exactly once, however many beats send the sweep.
    orphan = WorkItemFactory.create()
    lost_id = dispatch_claim_one()
    assert lost_id is not None
    Worker.objects.filter(pk=lost_id).update(status=WorkerStatus.FAILED)
    WorkItem.objects.filter(pk=orphan.pk).update(
        status=WorkItemStatus.IN_PROGRESS, updated_at=timezone.now() - dt.timedelta(minutes=5)
    )
    workers.start(concurrency=2, beat=True)
    workers.start(concurrency=2, beat=True)  # a second beat: every tick is sent twice
    began = time.monotonic()

    wait_for(lambda: all(finished(i.pk) for i in [*items, orphan]), timeout=60, what="the sweeps")
    # Let both beats run ten periods in all, to see that nothing happens twice.
    time.sleep(max(0.0, began + 10 - time.monotonic()))
    for item in items:
        kinds = list(WorkItemEvent.objects.filter(work_item=item).values_list("kind", flat=True))
        assert kinds.count("failed") == 1, kinds
    assert Worker.objects.filter(status=WorkerStatus.LOST).count() == 5
    assert WorkItemEvent.objects.filter(work_item=orphan, kind="recovered").count() == 1
    assert_invariants()


# --- PostgreSQL --------------------------------------------------------------------------


def pg_ctl(action: str) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "pg_ctl.sh"), action],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def api_get(stack: DockerStack, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"{stack.base_url}{path}", headers={"X-API-Key": stack.api_key})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.docker
def test_postgresql_down_while_workers_run_gives_503_then_lands_every_callback_once(
    docker_stack: Any,
) -> None:
    stack = docker_stack(MAX_WORKERS="3")
    make_bare_repo(stack.repos, "acme/widgets")
    ids = [
        submit(stack, repo="acme/widgets", spec=f"# PG {n}", metadata={"mockSeconds": 6})
        for n in range(3)
    ]
    # Past their setup (clone, learnings) and into the agent, which reports an iteration a
    # second: the outage then meets the lock and complete calls, not a setup call.
    wait_for(
        lambda: Worker.objects.filter(status=WorkerStatus.RUNNING, iteration__gte=1).count() == 3,
        timeout=90,
        what="three workers running their agents",
    )

    pg_ctl("stop")
    try:
        status, body = api_get(stack, "/api/status")
        assert status == 503 and body["code"] == "SERVICE_UNAVAILABLE", body
        # The outage (fault injection, not synchronisation) outlasts the 6 s mock runs, so
        # their complete calls meet it and must be retried by the harness.
        time.sleep(10)
    finally:
        pg_ctl("start")
    status, body = api_get(stack, "/api/status")  # the same web process, reconnected
    assert status == 200, body
    connection.close()

    wait_for(
        db_tolerant(lambda: all(finished(i) for i in ids)),
        timeout=180,
        interval=1,
        what="every item after the restart",
    )
    for item_id in ids:
        item = WorkItem.objects.get(pk=item_id)
        assert item.status == WorkItemStatus.COMPLETED, item.error
    wait_for(lambda: not stack.containers(), timeout=30, what="cleanup")
    tails = Worker.objects.filter(work_item_id__in=ids).values_list("log_tail", flat=True)
    # A callback that must land (lock before the commit, complete) met the 503 and was retried.
    landing = r"/api/worker/[0-9a-f-]+/(lock|complete): HTTP 503; retrying"
    retried = [t for t in tails if re.search(landing, t)]
    assert retried, f"no callback met the outage: {[t[-600:] for t in tails]}"
    assert_invariants(containers=stack.containers())  # ... and each landed exactly once


# --- Containers and dockerd --------------------------------------------------------------


@pytest.mark.docker
def test_a_container_killed_from_outside_is_retried_and_its_locks_freed(
    docker_stack: Any,
) -> None:
    stack = docker_stack(MAX_RETRIES="2")
    make_bare_repo(stack.repos, "acme/widgets")
    item_id = submit(
        stack, repo="acme/widgets", spec="# Victim", metadata={"mockSeconds": 20, "mockLock": True}
    )
    victim = wait_for(
        lambda: Worker.objects.filter(work_item_id=item_id, locks__isnull=False).first(),
        timeout=90,
        what="a running worker holding its lock",
    )

    docker.from_env().containers.get(victim.container_id).kill()

    wait_for(
        lambda: not FileLock.objects.filter(worker=victim).exists(),
        timeout=30,
        what="its locks freed",
    )
    victim.refresh_from_db()
    assert victim.status == WorkerStatus.FAILED and victim.error_category == "CRASHED"

    # The retry (RETRY_DELAYS=1) runs to completion: the item settles with exactly one retry.
    item = wait_for(partial(finished, item_id), timeout=150, interval=1, what="the retry")
    assert item.status == WorkItemStatus.COMPLETED, item.error
    assert item.retry_count == 1
    attempts = list(Worker.objects.filter(work_item_id=item_id).order_by("created_at"))
    assert [(w.pk, w.status) for w in attempts] == [
        (victim.pk, WorkerStatus.FAILED),
        (attempts[-1].pk, WorkerStatus.COMPLETED),
    ]
    wait_for(lambda: not stack.containers(), timeout=30, what="cleanup")
    assert_invariants(containers=stack.containers())


@pytest.mark.docker
@pytest.mark.parametrize("state", ["running", "created"])
def test_a_labelled_container_with_no_worker_row_is_removed_within_a_period(
    docker_stack: Any, state: str
) -> None:
    stack = docker_stack()
    make = stack.client.containers.run if state == "running" else stack.client.containers.create
    stray = make(
        "whim-worker:latest",
        entrypoint=["sleep", "600"],
        detach=True,
        labels={
            "whim.instance": stack.instance,
            "whim.worker": "00000000-0000-0000-0000-000000000001",
            "whim.work_item": "none",
        },
    )
    stray.reload()
    assert stray.status == state
    # sleep as PID 1 ignores SIGTERM: the stop waits out its 10 s grace before the kill.
    wait_for(lambda: not stack.containers(), timeout=40, what="the stray container removed")
    with pytest.raises(docker.errors.NotFound):
        stray.reload()
    assert_invariants(containers=stack.containers())


@pytest.mark.docker
def test_dockerd_restarted_mid_run_every_item_recovers_and_no_orphan_remains(
    docker_stack: Any,
) -> None:
    stack = docker_stack(MAX_WORKERS="2", MAX_RETRIES="3")
    make_bare_repo(stack.repos, "acme/widgets")
    ids = [
        submit(stack, repo="acme/widgets", spec=f"# D {n}", metadata={"mockSeconds": 8})
        for n in range(2)
    ]
    wait_for(
        lambda: Worker.objects.filter(status=WorkerStatus.RUNNING).count() == 2,
        timeout=90,
        what="two running workers",
    )

    restart = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker.sh"), "--restart"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert restart.returncode == 0, restart.stderr

    for item_id in ids:
        item = wait_for(
            partial(finished, item_id),
            timeout=240,
            interval=1,
            what="each item after the dockerd restart",
        )
        assert item.status == WorkItemStatus.COMPLETED, item.error
    wait_for(lambda: not stack.containers(), timeout=60, what="no orphan")
    assert_invariants(containers=stack.containers())


def test_work_submitted_while_redis_is_down_is_kept_and_runs_when_it_returns(
    celery_workers: Any,
) -> None:
    port = free_port()  # nothing listens here yet: the broker is down
    workers = celery_workers(REDIS_URL=f"redis://127.0.0.1:{port}/0", LOOP_INTERVAL="1")
    started = time.monotonic()
    submitted = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "whim",
            "submit",
            "acme/widgets",
            "--spec",
            "# Offline",
            "--metadata",
            '{"mockSeconds": 0.2}',
        ],
        cwd=ROOT,
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert time.monotonic() - started < 30, "submit hung on the dead broker"
    item_id = json.loads(submitted.stdout)["id"]
    assert WorkItem.objects.get(pk=item_id).status == WorkItemStatus.QUEUED

    log = ROOT / "test-artifacts" / f"redis-{port}.log"
    redis = start_redis(port, log)
    try:
        workers.start(concurrency=2, beat=True)
        wait_for(lambda: finished(uuid.UUID(item_id)), timeout=60, what="the item to run")
        assert WorkItem.objects.get(pk=item_id).status == WorkItemStatus.COMPLETED
        assert_invariants()
    finally:
        redis.send_signal(signal.SIGKILL)
        redis.wait(timeout=10)
