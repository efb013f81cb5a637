"""The container sweep ends a running attempt whose /workspace is full with RESOURCE_ERROR
(issue 9: bounded disk), against the observer tests' in-memory runtime."""

from __future__ import annotations

from typing import Any

import pytest

from orchestration.models import WorkerStatus, WorkItemStatus
from tests.test_container_observer import LOG_LINES, DictRuntime, attempt, refreshed
from workers.runtime import DiskUsage
from workers.services import containers_observe

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

MIB = 1024 * 1024


class DiskRuntime(DictRuntime):
    """Also serves each container's workspace usage, and records who asked."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: dict[str, DiskUsage] = {}
        self.asked: list[str] = []

    def workspace_usage(self, *, container_id: str) -> DiskUsage | None:
        self.asked.append(container_id)
        return self.usage.get(container_id)


@pytest.fixture
def runtime(settings: Any) -> DiskRuntime:
    settings.WORKER_TIMEOUT = 3600
    settings.WORKER_WORKSPACE_SIZE = "64m"
    settings.WHIM_INSTANCE = "obs-test"
    return DiskRuntime()


def test_a_full_workspace_ends_the_attempt_with_resource_error(runtime: DiskRuntime) -> None:
    item, worker = attempt()
    runtime.add(worker.container_id, "running", worker=worker.pk)
    runtime.usage[worker.container_id] = DiskUsage(size_bytes=64 * MIB, free_bytes=4096)

    counts = containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert counts["disk_full"] == 1
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "RESOURCE_ERROR"
    assert "workspace is full" in worker.error and "WORKER_WORKSPACE_SIZE 64m" in worker.error
    assert worker.log_tail == "\n".join(LOG_LINES)
    assert item.status == WorkItemStatus.QUEUED and item.error_category == "RESOURCE_ERROR"
    assert runtime.touched(worker.container_id)[0] == "kill"


def test_a_workspace_with_room_left_is_left_alone(runtime: DiskRuntime) -> None:
    item, worker = attempt()
    runtime.add(worker.container_id, "running", worker=worker.pk)
    runtime.usage[worker.container_id] = DiskUsage(size_bytes=64 * MIB, free_bytes=2 * MIB)

    counts = containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert counts["disk_full"] == 0
    assert worker.status == WorkerStatus.RUNNING and item.status == WorkItemStatus.IN_PROGRESS
    assert runtime.touched(worker.container_id) == []


def test_a_runtime_that_cannot_tell_leaves_the_attempt_running(runtime: DiskRuntime) -> None:
    _item, worker = attempt()
    runtime.add(worker.container_id, "running", worker=worker.pk)

    containers_observe(runtime=runtime)

    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING
    assert runtime.asked == [worker.container_id]


def test_only_running_containers_are_asked(runtime: DiskRuntime) -> None:
    _item, exited = attempt()
    runtime.add(exited.container_id, "exited", exit_code=0, worker=exited.pk)
    _item, created = attempt()
    runtime.add(created.container_id, "created", worker=created.pk)

    containers_observe(runtime=runtime)

    assert runtime.asked == []
