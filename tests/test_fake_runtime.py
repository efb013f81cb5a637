"""Task bodies called directly: ``start_worker`` with the fake runtime, then ``fake_run``.

No broker is involved: on-commit nudges are captured and the messages recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, ClassVar
from unittest import mock

import pytest

from orchestration.clock import db_now
from orchestration.models import (
    Worker,
    WorkerMetrics,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.nudge import TaskName
from orchestration.services.dispatch import (
    dispatch_claim_one,
    dispatch_renudge_starts,
    worker_token,
)
from orchestration.services.workers import worker_kill, worker_mark_started
from tests.factories import WorkItemFactory
from tests.helpers import task_mocks
from workers import runtime as runtime_module
from workers.runtime import ContainerRuntime
from workers.tasks import fake_run, start_worker

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]


@pytest.fixture
def nudges() -> Iterator[dict[str, mock.MagicMock]]:
    """Every task a transition may enqueue, recorded instead of sent."""
    with task_mocks(TaskName.FAKE_RUN, TaskName.STOP_CONTAINER) as sent:
        yield {"fake_run": sent[TaskName.FAKE_RUN], "stop": sent[TaskName.STOP_CONTAINER]}


class RecordingRuntime(ContainerRuntime):
    """A runtime that records its calls; ``on_start`` lets a test act mid-start."""

    name = "recording"
    starts: ClassVar[list[str]] = []
    stops: ClassVar[list[str]] = []
    on_start: ClassVar[Any] = None

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        assert token == worker_token(worker.pk)
        type(self).starts.append(str(worker.pk))
        if type(self).on_start is not None:
            type(self).on_start(worker)
        return f"rec-{worker.pk}"

    def stop(self, *, container_id: str, grace_seconds: int = 10) -> None:
        type(self).stops.append(container_id)


class ExplodingRuntime(ContainerRuntime):
    name = "exploding"

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        raise RuntimeError("image whim-worker:latest not found")


@pytest.fixture
def use_runtime(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(cls: type[ContainerRuntime]) -> type[ContainerRuntime]:
        monkeypatch.setitem(runtime_module._REGISTRY, cls.name, cls)
        settings.WHIM_RUNTIME = cls.name
        return cls

    RecordingRuntime.starts, RecordingRuntime.stops, RecordingRuntime.on_start = [], [], None
    return use


def claimed(**item_fields: Any) -> tuple[WorkItem, Worker]:
    item = WorkItemFactory.create(**item_fields)
    worker_id = dispatch_claim_one()
    assert worker_id is not None
    worker = Worker.objects.get(pk=worker_id)
    assert worker.work_item_id == item.pk
    return item, worker


def kinds(item: WorkItem) -> list[str]:
    return list(WorkItemEvent.objects.filter(work_item=item).values_list("kind", flat=True))


# --- start_worker --------------------------------------------------------------------------


def test_start_worker_starts_a_fake_container_and_nudges_the_mock_run(
    nudges: dict[str, mock.MagicMock], django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = claimed()

    with django_capture_on_commit_callbacks(execute=True):
        start_worker(str(worker.pk))

    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING
    assert worker.container_id == f"fake-{worker.pk}"
    assert item.status == WorkItemStatus.IN_PROGRESS
    nudges["fake_run"].assert_called_once_with(str(worker.pk))


def test_starting_a_worker_twice_starts_it_once(
    nudges: dict[str, mock.MagicMock], django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = claimed()

    with django_capture_on_commit_callbacks(execute=True):
        start_worker(str(worker.pk))
        start_worker(str(worker.pk))

    assert kinds(item).count("started") == 1
    nudges["fake_run"].assert_called_once_with(str(worker.pk))
    worker.refresh_from_db()
    assert worker.container_id == f"fake-{worker.pk}"


def test_a_redelivered_start_never_calls_the_runtime_again(use_runtime: Any) -> None:
    use_runtime(RecordingRuntime)
    _, worker = claimed()

    start_worker(str(worker.pk))
    start_worker(str(worker.pk))

    assert RecordingRuntime.starts == [str(worker.pk)]
    assert RecordingRuntime.stops == []


def test_a_start_still_pending_is_sent_again_at_most_once_a_period(settings: Any) -> None:
    settings.START_RENUDGE_SECONDS = 30
    _, worker = claimed()
    started_long_ago = db_now() - dt.timedelta(seconds=31)
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat=started_long_ago)

    with task_mocks(TaskName.START_WORKER) as sent:
        send = sent[TaskName.START_WORKER]
        assert dispatch_renudge_starts() == 1
        assert dispatch_renudge_starts() == 0  # the next tick: nudged moments ago
        Worker.objects.filter(pk=worker.pk).update(start_nudged_at=started_long_ago)
        assert dispatch_renudge_starts() == 1  # a period later, still starting

    assert send.call_args_list == [mock.call(str(worker.pk))] * 2


def test_a_start_that_is_not_yet_late_is_not_sent_again(settings: Any) -> None:
    settings.START_RENUDGE_SECONDS = 30
    claimed()

    with task_mocks(TaskName.START_WORKER) as sent:
        send = sent[TaskName.START_WORKER]
        assert dispatch_renudge_starts() == 0

    send.assert_not_called()


def test_start_of_an_unknown_worker_is_a_quiet_no_op(use_runtime: Any) -> None:
    use_runtime(RecordingRuntime)

    start_worker("00000000-0000-0000-0000-000000000001")

    assert RecordingRuntime.starts == []


def test_a_start_that_raises_fails_the_attempt_and_requeues_the_item_with_backoff(
    use_runtime: Any,
) -> None:
    use_runtime(ExplodingRuntime)
    item, worker = claimed()

    before = db_now()
    start_worker(str(worker.pk))
    after = db_now()

    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "START_ERROR"
    assert worker.error == "container start failed: image whim-worker:latest not found"
    assert worker.container_id == ""
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1
    assert item.error_category == "START_ERROR"
    assert item.next_retry_at is not None
    assert (
        before + dt.timedelta(seconds=60) <= item.next_retry_at <= after + dt.timedelta(seconds=60)
    )
    assert kinds(item) == ["claimed", "retry_scheduled"]


def test_a_start_that_raises_on_the_last_retry_fails_the_item(
    use_runtime: Any, settings: Any
) -> None:
    use_runtime(ExplodingRuntime)
    item, worker = claimed(retry_count=settings.MAX_RETRIES)

    start_worker(str(worker.pk))

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "START_ERROR"


def test_start_of_a_worker_killed_meanwhile_does_nothing(
    use_runtime: Any, nudges: dict[str, mock.MagicMock]
) -> None:
    use_runtime(RecordingRuntime)
    item, worker = claimed()
    worker_kill(worker_id=worker.pk, reason="changed plans", retry=False)
    item.refresh_from_db()
    before = kinds(item)

    start_worker(str(worker.pk))

    worker.refresh_from_db()
    assert RecordingRuntime.starts == []
    assert worker.status == WorkerStatus.KILLED
    assert worker.container_id == ""
    assert kinds(item) == before
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.FAILED


def test_a_worker_killed_while_its_container_starts_gets_that_container_stopped(
    use_runtime: Any, nudges: dict[str, mock.MagicMock]
) -> None:
    use_runtime(RecordingRuntime)
    RecordingRuntime.on_start = lambda w: worker_kill(
        worker_id=w.pk, reason="too slow", retry=False
    )
    item, worker = claimed()

    start_worker(str(worker.pk))

    worker.refresh_from_db()
    item.refresh_from_db()
    assert RecordingRuntime.stops == [f"rec-{worker.pk}"]
    assert worker.status == WorkerStatus.KILLED
    assert item.status == WorkItemStatus.FAILED
    assert item.error == "killed: too slow"
    assert "started" not in kinds(item)


# --- fake_run ------------------------------------------------------------------------------


def running(mock_mode: str, **item_fields: Any) -> tuple[WorkItem, Worker]:
    item, worker = claimed(metadata={"mock": mock_mode, "mockSeconds": 0}, **item_fields)
    assert worker_mark_started(worker_id=worker.pk, container_id=f"fake-{worker.pk}")
    return item, worker


def test_a_successful_mock_run_completes_the_item(nudges: dict[str, mock.MagicMock]) -> None:
    item, worker = running("success")

    fake_run(str(worker.pk))

    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.COMPLETED
    assert item.status == WorkItemStatus.COMPLETED
    assert worker.iteration == item.iteration == 1
    row = WorkerMetrics.objects.get(worker=worker)
    assert (row.tokens_in, row.tokens_out, row.duration_ms) == (100, 20, 0)
    assert "mock agent: mode=success" in worker.log_tail
    assert kinds(item) == ["claimed", "started", "completed"]


def test_a_failing_mock_run_retries_the_item(nudges: dict[str, mock.MagicMock]) -> None:
    item, worker = running("fail")

    fake_run(str(worker.pk))

    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.FAILED
    assert worker.error == "mock agent failed on purpose"
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1
    assert item.error_category == "AGENT_ERROR"
    assert item.next_retry_at is not None
    assert kinds(item) == ["claimed", "started", "retry_scheduled"]


def test_a_stuck_mock_run_retries_the_item(nudges: dict[str, mock.MagicMock]) -> None:
    item, worker = running("stuck")

    fake_run(str(worker.pk))

    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.STUCK
    assert worker.error.startswith("stuck: mock agent is stuck on purpose")
    assert item.status == WorkItemStatus.QUEUED
    assert item.error_category == "STUCK"
    assert item.retry_count == 1
    assert kinds(item) == ["claimed", "started", "retry_scheduled"]


def test_a_stuck_mock_run_on_the_last_retry_fails_the_item(
    nudges: dict[str, mock.MagicMock], settings: Any
) -> None:
    item, worker = running("stuck", retry_count=settings.MAX_RETRIES)

    fake_run(str(worker.pk))

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "STUCK"


def test_a_mock_run_of_a_worker_that_is_not_running_does_nothing(
    nudges: dict[str, mock.MagicMock],
) -> None:
    item, worker = running("success")
    worker_kill(worker_id=worker.pk, retry=False)
    before = kinds(item)

    fake_run(str(worker.pk))

    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert worker.iteration == 0
    assert worker.log_tail == ""
    assert item.status == WorkItemStatus.FAILED
    assert kinds(item) == before
    assert not WorkerMetrics.objects.exists()


def test_a_repeated_mock_run_changes_nothing_the_second_time(
    nudges: dict[str, mock.MagicMock],
) -> None:
    item, worker = running("success")
    fake_run(str(worker.pk))
    before = kinds(item)

    fake_run(str(worker.pk))

    assert kinds(item) == before
    assert WorkerMetrics.objects.count() == 1


def test_the_whole_fake_pipeline_from_claim_to_completion(
    nudges: dict[str, mock.MagicMock], django_capture_on_commit_callbacks: Any
) -> None:
    item, worker = claimed(metadata={"mock": "success", "mockSeconds": 0})

    with django_capture_on_commit_callbacks(execute=True):
        start_worker(str(worker.pk))
    ((run_args, _),) = nudges["fake_run"].call_args_list
    fake_run(*run_args)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.COMPLETED
    assert kinds(item) == ["claimed", "started", "completed"]
