"""A hostile agent against the bounds of its container (issue 9), on real parts: dockerd, the
worker image, Celery, the observer. It fills its disk: stopped at WORKER_WORKSPACE_SIZE with
RESOURCE_ERROR, the host's disk untouched. It eats memory past WORKER_MEMORY: the harness
reports the OOM kill as RESOURCE_ERROR, not as the agent's own failure.

Run with the worker image built from this tree (``WORKER_IMAGE=... make worker-image``).
"""

from __future__ import annotations

import shutil
import threading
from typing import Any

import pytest

from orchestration.models import Worker, WorkerStatus, WorkItemStatus
from tests.docker_stack import make_bare_repo
from tests.helpers import wait_for
from tests.test_docker_e2e import finished, no_containers_left, submit

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
WORKSPACE_MIB = 64

# Writes until it cannot (asking for 1 GiB), says how far it got, then holds on to the disk.
FILL_DISK = (
    "dd if=/dev/zero of=fill bs=1M count=1024 2>&1 | tail -n 4; "
    'echo "wrote $(stat -c %s fill) bytes"; sleep 600'
)


class FreeDisk:
    """Samples the free space of the filesystem Docker lives on, keeping the lowest."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.before = shutil.disk_usage(path).free
        self.lowest = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.lowest = min(self.lowest, shutil.disk_usage(self.path).free)

    def stop(self) -> int:
        """How far free space dropped below where it started, in bytes."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.before - self.lowest


def test_an_agent_filling_its_disk_is_stopped_at_the_limit_with_resource_error(
    docker_stack: Any,
) -> None:
    stack = docker_stack(
        WHIM_AGENT="command",
        WHIM_AGENT_COMMAND=FILL_DISK,
        WORKER_WORKSPACE_SIZE=f"{WORKSPACE_MIB}m",
        MAX_RETRIES="0",
    )
    make_bare_repo(stack.repos, "acme/widgets")
    disk = FreeDisk(stack.client.info()["DockerRootDir"])

    item_id = submit(stack, repo="acme/widgets", spec="# Fill the disk")

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.5, what="the item")
    dropped = disk.stop()
    assert item.status == WorkItemStatus.FAILED, item.error
    assert item.error_category == "RESOURCE_ERROR", item.error
    assert "workspace is full" in item.error
    worker = Worker.objects.get(work_item_id=item_id)
    assert worker.status == WorkerStatus.FAILED and worker.error_category == "RESOURCE_ERROR"
    assert "No space left on device" in worker.log_tail
    wrote = int(worker.log_tail.split("wrote ", 1)[1].split()[0])
    assert wrote <= WORKSPACE_MIB * MIB, f"wrote {wrote} bytes past the limit"
    # Nothing reached the host's disk (a tmpfs): the drop is other processes' noise, if any.
    assert dropped < WORKSPACE_MIB * MIB, f"the host's free disk dropped by {dropped} bytes"
    wait_for(lambda: no_containers_left(stack), timeout=30, what="the container killed")


EAT_MEMORY = "python3 -c 'chunks = []\nwhile True: chunks.append(b\"x\" * (16 << 20))'"


def test_an_agent_eating_memory_past_the_limit_is_a_resource_error(docker_stack: Any) -> None:
    stack = docker_stack(
        WHIM_AGENT="command",
        WHIM_AGENT_COMMAND=EAT_MEMORY,
        WORKER_MEMORY="256m",
        WORKER_WORKSPACE_SIZE="32m",
        WORKER_TMPFS_SIZE="32m",
        MAX_RETRIES="0",
    )
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(stack, repo="acme/widgets", spec="# Eat memory")

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.5, what="the item")
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "RESOURCE_ERROR", item.error
    # The harness's own words: it saw its agent OOM-killed (not the observer's exit verdict).
    assert "was killed for running out of memory" in item.error, item.error
    wait_for(lambda: no_containers_left(stack), timeout=30, what="the container removed")
