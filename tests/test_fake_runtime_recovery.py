"""The fake runtime recovers from a Redis restart like the real runtimes do: its "container" is
a Celery message, and when the broker loses it (a Redis without persistence restarted while
the worker that held it unacknowledged died), the containers sweep sends the run again — the
attempt finishes, without waiting for the stale-heartbeat sweep (STALE_THRESHOLD is an hour here).

The Redis server is this test's own, on its own port: never the shared one."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemStatus
from tests.conftest import free_port, stop_processes
from tests.factories import WorkItemFactory
from tests.helpers import task_mocks, wait_for

pytestmark = [
    pytest.mark.celery,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server"),
]


class OwnRedis:
    """A redis-server without persistence on a free loopback port (restart = empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self.answers, timeout=10, what="the test's redis-server")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    if server.proc is not None:
        stop_processes([server.proc], grace=5)


def test_a_fake_attempt_whose_run_redis_lost_is_played_again_and_finishes(
    own_redis: OwnRedis, celery_workers: Any
) -> None:
    workers = celery_workers(
        REDIS_URL=own_redis.url,
        LOOP_INTERVAL="1",
        SWEEP_CONTAINERS_EVERY="1",
        STALE_THRESHOLD="3600",
    )
    with task_mocks():  # this process's nudges go nowhere: the beat in the worker dispatches
        item: WorkItem = WorkItemFactory.create(metadata={"mockSeconds": 6})
    first = workers.start(beat=True)

    def running() -> Worker | None:
        return Worker.objects.filter(
            work_item=item, status=WorkerStatus.RUNNING, log_tail__contains="iteration 2"
        ).first()

    wait_for(lambda: running() is not None, timeout=60, what="the fake run to be playing")
    # The worker dies holding the run unacknowledged, and Redis restarts empty: the message
    # that plays the attempt is gone.
    workers.kill9(first)
    own_redis.kill()
    own_redis.start()
    workers.start(beat=True)

    wait_for(
        lambda: WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.COMPLETED,
        timeout=90,
        what="the attempt to finish after its run was lost",
    )
    assert Worker.objects.filter(work_item=item).count() == 1  # the same attempt, not a retry
