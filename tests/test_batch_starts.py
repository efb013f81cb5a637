"""A claim's batch starts with one message per node: the fake runtime starts and marks the
whole batch in one transaction; a container runtime starts one and sends each of the rest on
as its own message, so the node's processes start them side by side. The fake runtime's runs
yield to the control plane's messages on a shared Redis queue."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar
from unittest import mock

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestration import nudge
from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.nudge import TaskName
from orchestration.services.dispatch import dispatch_claim, worker_token
from orchestration.services.workers import worker_kill, workers_mark_started
from tests.factories import WorkItemFactory
from tests.helpers import task_mocks
from workers import runtime as runtime_module
from workers.runtime import ContainerRuntime
from workers.tasks import start_worker

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


class OneByOne(ContainerRuntime):
    """A container runtime (no batch starts) that records what it started."""

    name = "one-by-one"
    starts: ClassVar[list[str]] = []

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        assert token == worker_token(worker.pk)
        type(self).starts.append(str(worker.pk))
        return f"c-{worker.pk}"


@pytest.fixture
def claimed(settings: Any) -> Any:
    settings.MAX_WORKERS = 100

    def claim(n: int) -> list[str]:
        WorkItemFactory.create_batch(n)
        with task_mocks(TaskName.START_WORKER):
            ids = [str(pk) for pk in dispatch_claim(n)]
            assert len(ids) == n
        return ids

    return claim


@pytest.fixture
def fake_runs() -> Iterator[dict[str, mock.MagicMock]]:
    with task_mocks(TaskName.FAKE_RUN, TaskName.START_WORKER) as sent:
        yield sent


@pytest.fixture
def start(django_capture_on_commit_callbacks: Any) -> Any:
    """``start_worker``, its messages sent at its commits (the test's transaction never ends)."""

    def run(*worker_ids: str) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            start_worker(*worker_ids)

    return run


def test_one_claim_sends_one_start_message_for_its_node(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.MAX_WORKERS = 100
    WorkItemFactory.create_batch(5)
    with (
        task_mocks(TaskName.START_WORKER) as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        ids = dispatch_claim(5)
    (message,) = sent[TaskName.START_WORKER].call_args_list
    assert list(message.args) == [str(pk) for pk in ids]
    assert sent[TaskName.START_WORKER].queues == [f"whim.node.{settings.WHIM_NODE}"]


def test_the_fake_runtime_starts_a_batch_in_one_transaction(
    settings: Any, claimed: Any, fake_runs: Any, start: Any
) -> None:
    settings.WHIM_RUNTIME = "fake"
    ids = claimed(6)
    with CaptureQueriesContext(connection) as six:
        start(*ids)
    assert set(Worker.objects.values_list("status", flat=True)) == {WorkerStatus.RUNNING}
    assert set(WorkItem.objects.values_list("status", flat=True)) == {WorkItemStatus.IN_PROGRESS}
    assert sorted(c.args[0] for c in fake_runs[TaskName.FAKE_RUN].call_args_list) == sorted(ids)
    for worker in Worker.objects.all():
        assert worker.container_id == f"fake-{worker.pk}"
        started = WorkItemEvent.objects.get(worker=worker, kind="started")
        assert started.data["containerId"] == worker.container_id
        assert (started.from_status, started.to_status) == ("assigned", "in_progress")

    more = claimed(2)
    with CaptureQueriesContext(connection) as two:
        start(*more)
    assert len(six.captured_queries) == len(two.captured_queries)  # not one per worker

    start(*ids)  # a redelivery: nothing is started twice
    assert fake_runs[TaskName.FAKE_RUN].call_count == 8
    assert WorkItemEvent.objects.filter(kind="started").count() == 8


def test_a_worker_killed_before_its_batch_starts_is_left_alone(
    settings: Any, claimed: Any, fake_runs: Any, start: Any
) -> None:
    settings.WHIM_RUNTIME = "fake"
    ids = claimed(3)
    with task_mocks(TaskName.STOP_CONTAINER):
        worker_kill(worker_id=ids[1], actor="op", retry=False)
    start(*ids)
    statuses = dict(Worker.objects.values_list("pk", "status"))
    assert [statuses[uuid.UUID(i)] for i in ids] == ["running", "killed", "running"]
    assert sorted(c.args[0] for c in fake_runs[TaskName.FAKE_RUN].call_args_list) == sorted(
        [ids[0], ids[2]]
    )


def test_marking_a_batch_started_leaves_a_worker_no_longer_starting(claimed: Any) -> None:
    ids = claimed(2)
    assert workers_mark_started({ids[0]: "c-0"}) == [uuid.UUID(ids[0])]
    assert workers_mark_started({ids[0]: "c-again", ids[1]: "c-1"}) == [uuid.UUID(ids[1])]
    assert Worker.objects.get(pk=ids[0]).container_id == "c-0"
    assert workers_mark_started({}) == []


def test_a_container_runtime_starts_one_and_sends_the_rest_on(
    settings: Any, monkeypatch: pytest.MonkeyPatch, claimed: Any, start: Any
) -> None:
    monkeypatch.setitem(runtime_module._REGISTRY, OneByOne.name, OneByOne)
    settings.WHIM_RUNTIME = OneByOne.name
    OneByOne.starts = []
    ids = claimed(3)
    with task_mocks(TaskName.START_WORKER) as sent:
        start(*ids)
    assert OneByOne.starts == [ids[0]]
    assert [c.args for c in sent[TaskName.START_WORKER].call_args_list] == [
        (ids[1],),
        (ids[2],),
    ]
    assert sent[TaskName.START_WORKER].queues == [f"whim.node.{settings.WHIM_NODE}"] * 2
    assert Worker.objects.get(pk=ids[0]).status == WorkerStatus.RUNNING
    assert Worker.objects.filter(status=WorkerStatus.STARTING).count() == 2


def test_fake_runs_yield_to_the_control_plane_on_a_real_redis_queue() -> None:
    """Sent to Redis for real: a fake run lands in the queue's low-priority list, which the
    worker's BRPOP reads after the default one, so a start sent later is served first."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queue = f"test-yield-{uuid.uuid4().hex[:8]}"
    low = f"{queue}\x06\x16{nudge.YIELDING_PRIORITY}"
    try:
        nudge.send(TaskName.FAKE_RUN, "w-1", queue=queue)
        nudge.send(TaskName.START_WORKER, "w-2", queue=queue)
        assert (client.llen(queue), client.llen(low)) == (1, 1)
        popped = client.brpop([queue, low], timeout=1)  # the worker's order: priority 0 first
        assert (
            isinstance(popped, tuple | list) and b"w-2" in popped[1]
        )  # the start, sent second, comes out first
    finally:
        client.delete(queue, low)
        client.close()
