"""The container observer on PostgreSQL: ``containers_observe`` and ``classify_exit`` against
an in-memory runtime that serves container states from a dict and records what it is asked
to do. No broker, no engine: the transitions are the real services.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest

from orchestration.clock import db_now
from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.services.workers import Completion, worker_complete
from tests.factories import WorkerFactory, WorkItemFactory
from workers import runtime as runtime_registry
from workers.fake_runtime import FakeRuntime
from workers.runtime import ContainerRuntime, ContainerState
from workers.services import classify_exit, container_keep_logs, containers_observe

pytestmark = pytest.mark.django_db

LOG_LINES = ["harness: cloning", "harness: running the agent", "boom: the agent fell over"]


@pytest.fixture(autouse=True)
def _observer_settings(settings: Any, retry_policy: None) -> None:
    settings.FAST_EXIT_SECONDS = 10
    settings.WORKER_TIMEOUT = 3600
    settings.WHIM_INSTANCE = "obs-test"


class DictRuntime(ContainerRuntime):
    """Containers are entries of ``states``; every stop, kill and remove is recorded."""

    name = "dict"
    observable = True

    def __init__(self) -> None:
        self.states: dict[str, ContainerState] = {}
        self.output: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.on_inspect: dict[str, Callable[[], None]] = {}

    def add(
        self,
        container_id: str,
        status: str,
        *,
        exit_code: int | None = None,
        oom_killed: bool = False,
        worker: object = None,
        labels: dict[str, str] | None = None,
        logs: list[str] | None = None,
    ) -> str:
        if labels is None:
            labels = {"whim.instance": "obs-test"}
            if worker is not None:
                labels["whim.worker"] = str(worker)
        self.states[container_id] = ContainerState(
            container_id, status, exit_code, oom_killed, labels
        )
        self.output[container_id] = list(LOG_LINES if logs is None else logs)
        return container_id

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        raise AssertionError("the observer never starts containers")

    def stop(self, *, container_id: str, grace_seconds: int = 10) -> None:
        self.calls.append(("stop", container_id))
        self._exit(container_id, 143)

    def kill(self, *, container_id: str) -> None:
        self.calls.append(("kill", container_id))
        self._exit(container_id, 137)

    def _exit(self, container_id: str, code: int) -> None:
        state = self.states.get(container_id)
        if state is not None and not state.finished:
            self.states[container_id] = ContainerState(
                container_id, "exited", code, False, state.labels
            )

    def remove(self, *, container_id: str) -> None:
        self.calls.append(("remove", container_id))
        self.states.pop(container_id, None)

    def inspect(self, *, container_id: str) -> ContainerState | None:
        hook = self.on_inspect.pop(container_id, None)
        if hook is not None:
            hook()
        return self.states.get(container_id)

    def list_labelled(self) -> list[ContainerState]:
        return list(self.states.values())

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        if container_id not in self.states:
            return None
        return self.output[container_id][-lines:]

    def touched(self, container_id: str) -> list[str]:
        return [verb for verb, cid in self.calls if cid == container_id]


class BlindRuntime(DictRuntime):
    """Sees containers, but says it cannot (like the fake runtime)."""

    observable = False


@pytest.fixture
def runtime() -> DictRuntime:
    return DictRuntime()


def attempt(
    *,
    status: str = WorkerStatus.RUNNING,
    age: float = 60.0,
    registered: bool = True,
    container: bool = True,
    retries: int = 0,
) -> tuple[WorkItem, Worker]:
    """An item with its current attempt, started ``age`` seconds ago (database clock)."""
    now = db_now()
    started = now - dt.timedelta(seconds=age)
    item_status = (
        WorkItemStatus.IN_PROGRESS if status == WorkerStatus.RUNNING else WorkItemStatus.ASSIGNED
    )
    item = WorkItemFactory.create(status=item_status, retry_count=retries)
    worker_id = uuid.uuid4()
    worker = WorkerFactory.create(
        id=worker_id,
        work_item=item,
        status=status,
        container_id=f"ctr-{worker_id}" if container else "",
        started_at=started if status == WorkerStatus.RUNNING else None,
        registered_at=started if registered else None,
        last_heartbeat=now,
    )
    WorkItem.objects.filter(pk=item.pk).update(worker=worker)
    item.refresh_from_db()
    return item, worker


def finished_attempt(status: str = WorkerStatus.COMPLETED) -> tuple[WorkItem, Worker]:
    item, worker = attempt()
    WorkItem.objects.filter(pk=item.pk).update(
        status=WorkItemStatus.COMPLETED
        if status == WorkerStatus.COMPLETED
        else WorkItemStatus.FAILED
    )
    Worker.objects.filter(pk=worker.pk).update(status=status, completed_at=db_now())
    item.refresh_from_db()
    worker.refresh_from_db()
    return item, worker


def refreshed(*rows: Any) -> None:
    for row in rows:
        row.refresh_from_db()


def snapshot() -> list[tuple[Any, ...]]:
    workers = Worker.objects.order_by("pk").values_list(
        "pk", "status", "error", "error_category", "log_tail", "completed_at"
    )
    items = WorkItem.objects.order_by("pk").values_list(
        "pk", "status", "retry_count", "next_retry_at", "error", "error_category", "worker_id"
    )
    return [*workers, *items, ("events", WorkItemEvent.objects.count())]


# --- exits of active workers ---------------------------------------------------------------


def test_an_exit_0_without_complete_is_retried_as_no_result_and_its_logs_are_kept(
    runtime: DictRuntime,
) -> None:
    item, worker = attempt()
    runtime.add(worker.container_id, "exited", exit_code=0, worker=worker.pk)

    counts = containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert counts["exited"] == 1
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "NO_RESULT"
    assert worker.log_tail == "\n".join(LOG_LINES)
    assert item.status == WorkItemStatus.QUEUED
    assert item.retry_count == 1 and item.next_retry_at is not None
    assert item.worker_id is None
    assert item.error_category == "NO_RESULT"
    assert "boom: the agent fell over" in item.error
    assert runtime.touched(worker.container_id) == ["remove"]
    assert worker.container_id not in runtime.states


def test_a_fast_nonzero_exit_before_register_fails_the_item_at_once_with_its_log_tail(
    runtime: DictRuntime,
) -> None:
    item, worker = attempt(age=2, registered=False)
    runtime.add(
        worker.container_id,
        "exited",
        exit_code=7,
        worker=worker.pk,
        logs=["exec: whim-harness: not found", "boom: no such agent"],
    )

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "CONTAINER_ERROR"
    assert "exited with 7" in item.error
    assert "boom: no such agent" in item.error
    assert item.retry_count == 0 and item.next_retry_at is None
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "CONTAINER_ERROR"
    assert WorkItemEvent.objects.filter(work_item=item, kind="retry_scheduled").count() == 0
    assert runtime.touched(worker.container_id) == ["remove"]


def test_the_same_exit_after_register_is_a_crash_and_is_retried(runtime: DictRuntime) -> None:
    item, worker = attempt(age=2, registered=True)
    runtime.add(worker.container_id, "exited", exit_code=7, worker=worker.pk)

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "CRASHED"
    assert item.status == WorkItemStatus.QUEUED
    assert item.error_category == "CRASHED"
    assert item.retry_count == 1
    assert runtime.touched(worker.container_id) == ["remove"]


def test_a_nonzero_exit_long_after_start_is_a_crash_even_before_register(
    runtime: DictRuntime,
) -> None:
    item, worker = attempt(age=60, registered=False)
    runtime.add(worker.container_id, "exited", exit_code=1, worker=worker.pk)

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert worker.error_category == "CRASHED"
    assert item.status == WorkItemStatus.QUEUED and item.retry_count == 1


def test_an_oom_kill_is_a_resource_error_and_is_retried(runtime: DictRuntime) -> None:
    item, worker = attempt(age=2, registered=False)
    runtime.add(worker.container_id, "exited", exit_code=137, oom_killed=True, worker=worker.pk)

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "RESOURCE_ERROR"
    assert "out of memory" in worker.error
    assert item.status == WorkItemStatus.QUEUED
    assert item.error_category == "RESOURCE_ERROR"
    assert item.retry_count == 1
    assert runtime.touched(worker.container_id) == ["remove"]


def test_a_crash_with_no_retries_left_fails_the_item(runtime: DictRuntime, settings: Any) -> None:
    settings.MAX_RETRIES = 1
    item, worker = attempt(retries=1)
    runtime.add(worker.container_id, "exited", exit_code=2, worker=worker.pk)

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "CRASHED"
    assert item.retry_count == 1


def test_a_running_worker_whose_container_is_gone_is_container_lost(
    runtime: DictRuntime,
) -> None:
    item, worker = attempt()

    counts = containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert counts["lost"] == 1
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "CONTAINER_LOST"
    assert item.status == WorkItemStatus.QUEUED
    assert item.error_category == "CONTAINER_LOST"
    assert item.retry_count == 1
    assert runtime.calls == []


def test_a_starting_worker_without_a_container_yet_is_left_alone(runtime: DictRuntime) -> None:
    item, worker = attempt(status=WorkerStatus.STARTING, container=False)

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert worker.status == WorkerStatus.STARTING
    assert item.status == WorkItemStatus.ASSIGNED


def test_a_worker_past_worker_timeout_is_killed_and_failed_with_timeout(
    runtime: DictRuntime, settings: Any
) -> None:
    settings.WORKER_TIMEOUT = 600
    item, worker = attempt(age=605)
    runtime.add(worker.container_id, "running", worker=worker.pk)

    counts = containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert counts["timed_out"] == 1
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "TIMEOUT"
    assert "WORKER_TIMEOUT (600s)" in worker.error
    assert worker.log_tail == "\n".join(LOG_LINES)
    assert item.status == WorkItemStatus.QUEUED
    assert item.error_category == "TIMEOUT"
    # Killed at once; the leftover pass of the same run then removes the dead container.
    assert runtime.touched(worker.container_id)[0] == "kill"
    assert worker.container_id not in runtime.states


def test_a_worker_just_under_worker_timeout_keeps_running(
    runtime: DictRuntime, settings: Any
) -> None:
    settings.WORKER_TIMEOUT = 600
    item, worker = attempt(age=590)
    runtime.add(worker.container_id, "running", worker=worker.pk)

    containers_observe(runtime=runtime)

    refreshed(item, worker)
    assert worker.status == WorkerStatus.RUNNING
    assert runtime.calls == []


# --- leftovers -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [WorkerStatus.COMPLETED, WorkerStatus.FAILED])
def test_a_running_container_of_a_finished_worker_is_stopped_and_removed(
    runtime: DictRuntime, status: str
) -> None:
    _, worker = finished_attempt(status)
    runtime.add(worker.container_id, "running", worker=worker.pk)
    before = snapshot()

    counts = containers_observe(runtime=runtime)

    assert counts["removed"] == 1
    assert runtime.touched(worker.container_id) == ["stop", "remove"]
    worker.refresh_from_db()
    assert worker.log_tail == "\n".join(LOG_LINES)  # kept before removal
    assert worker.status == status
    after = snapshot()
    assert [row for row in after if row[0] != worker.pk] == [
        row for row in before if row[0] != worker.pk
    ]


def test_an_exited_container_of_a_finished_worker_is_removed_without_a_stop(
    runtime: DictRuntime,
) -> None:
    _, worker = finished_attempt()
    runtime.add(worker.container_id, "exited", exit_code=0, worker=worker.pk)

    containers_observe(runtime=runtime)

    assert runtime.touched(worker.container_id) == ["remove"]


@pytest.mark.parametrize(
    "labels",
    [
        {"whim.instance": "obs-test", "whim.worker": str(uuid.uuid4())},  # no such row
        {"whim.instance": "obs-test", "whim.worker": "not-a-uuid"},
        {"whim.instance": "obs-test"},  # no worker label at all
    ],
    ids=["unknown-worker", "non-uuid-label", "no-worker-label"],
)
def test_a_container_of_an_unknown_worker_is_stopped_and_removed(
    runtime: DictRuntime, labels: dict[str, str]
) -> None:
    runtime.add("stray", "running", labels=labels)

    counts = containers_observe(runtime=runtime)

    assert counts["removed"] == 1
    assert runtime.touched("stray") == ["stop", "remove"]
    assert runtime.states == {}


def test_an_active_workers_container_is_never_touched(runtime: DictRuntime) -> None:
    _, running_worker = attempt()
    runtime.add(running_worker.container_id, "running", worker=running_worker.pk)
    # A start in flight: the container exists but the worker row does not name it yet.
    _, starting_worker = attempt(status=WorkerStatus.STARTING, container=False)
    runtime.add("being-started", "created", worker=starting_worker.pk)
    before = snapshot()

    counts = containers_observe(runtime=runtime)

    assert runtime.calls == []
    assert counts == {
        "exited": 0,
        "timed_out": 0,
        "disk_full": 0,
        "lost": 0,
        "removed": 0,
        "cleanup_failed": 0,
    }
    assert snapshot() == before
    assert set(runtime.states) == {running_worker.container_id, "being-started"}


def test_a_callback_that_completed_the_worker_first_wins(runtime: DictRuntime) -> None:
    item, worker = attempt()
    runtime.add(worker.container_id, "exited", exit_code=0, worker=worker.pk)

    # The harness's complete lands after the observer read the active workers, before it
    # turns the exit into a failure.
    def complete_first() -> None:
        worker_complete(worker_id=worker.pk, result=Completion(commit_sha="abc123"))

    runtime.on_inspect[worker.container_id] = complete_first

    containers_observe(runtime=runtime)  # must not raise Fenced

    refreshed(item, worker)
    assert worker.status == WorkerStatus.COMPLETED
    assert worker.error == "" and worker.error_category == ""
    assert item.status == WorkItemStatus.COMPLETED
    assert item.commit_sha == "abc123"
    assert item.retry_count == 0 and item.error == ""
    kinds = list(WorkItemEvent.objects.filter(work_item=item).values_list("kind", flat=True))
    assert "retry_scheduled" not in kinds and "failed" not in kinds
    assert worker.container_id not in runtime.states


def test_a_second_run_changes_nothing(runtime: DictRuntime, settings: Any) -> None:
    settings.WORKER_TIMEOUT = 600
    _, exited = attempt()
    runtime.add(exited.container_id, "exited", exit_code=3, worker=exited.pk)
    attempt()  # running, its container gone
    _, slow = attempt(age=700)
    runtime.add(slow.container_id, "running", worker=slow.pk)
    _, done = finished_attempt()
    runtime.add(done.container_id, "running", worker=done.pk)
    runtime.add("stray", "running", labels={"whim.worker": "nope"})
    _, busy = attempt()
    runtime.add(busy.container_id, "running", worker=busy.pk)

    first = containers_observe(runtime=runtime)
    assert first == {
        "exited": 1,
        "timed_out": 1,
        "disk_full": 0,
        "lost": 1,
        "removed": 3,
        "cleanup_failed": 0,
    }
    state, calls = snapshot(), list(runtime.calls)

    second = containers_observe(runtime=runtime)

    assert second == {
        "exited": 0,
        "timed_out": 0,
        "disk_full": 0,
        "lost": 0,
        "removed": 0,
        "cleanup_failed": 0,
    }
    assert snapshot() == state
    assert runtime.calls == calls
    assert set(runtime.states) == {busy.container_id}


def test_a_runtime_that_cannot_observe_is_left_alone(settings: Any) -> None:
    blind = BlindRuntime()
    _, worker = attempt(age=10_000)
    blind.add(worker.container_id, "exited", exit_code=1, worker=worker.pk)
    blind.add("stray", "running", labels={})
    before = snapshot()

    counts = containers_observe(runtime=blind)

    assert counts == {
        "exited": 0,
        "timed_out": 0,
        "disk_full": 0,
        "lost": 0,
        "removed": 0,
        "cleanup_failed": 0,
    }
    assert blind.calls == []
    assert snapshot() == before


def test_the_fake_runtime_is_never_observed(settings: Any) -> None:
    # The fake runtime's inspect() always says "gone": observing it would fail every worker.
    item, worker = attempt()

    counts = containers_observe(runtime=FakeRuntime())

    refreshed(item, worker)
    assert counts["lost"] == 0
    assert worker.status == WorkerStatus.RUNNING
    assert item.status == WorkItemStatus.IN_PROGRESS


@pytest.fixture
def configured(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[DictRuntime]:
    """A DictRuntime registered under a name of its own and made WHIM_RUNTIME."""
    observed = DictRuntime()
    name = f"observed-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(runtime_registry._REGISTRY, name, lambda: observed)
    settings.WHIM_RUNTIME = name
    yield observed
    runtime_registry._instance.cache_clear()  # the per-process instance of a gone name


def test_without_a_runtime_argument_the_configured_one_is_used(configured: DictRuntime) -> None:
    item, worker = attempt()
    configured.add(worker.container_id, "exited", exit_code=0, worker=worker.pk)

    counts = containers_observe()

    refreshed(item, worker)
    assert counts["exited"] == 1
    assert worker.status == WorkerStatus.FAILED
    assert worker.error_category == "NO_RESULT"
    assert item.status == WorkItemStatus.QUEUED
    assert configured.touched(worker.container_id) == ["remove"]


# --- keeping logs --------------------------------------------------------------------------


def test_kept_logs_are_bounded_in_lines_and_bytes(runtime: DictRuntime, settings: Any) -> None:
    settings.LOG_TAIL_LINES = 3
    settings.LOG_TAIL_BYTES = 40
    _, worker = attempt()
    lines = [f"line {n:03d} " + "x" * 10 for n in range(100)]
    runtime.add(worker.container_id, "running", worker=worker.pk, logs=lines)

    container_keep_logs(runtime=runtime, worker=worker)

    worker.refresh_from_db()
    assert len(worker.log_tail) <= 40
    assert worker.log_tail.endswith(lines[-1])
    assert "line 096" not in worker.log_tail


def test_no_logs_leave_the_kept_tail_as_it_was(runtime: DictRuntime) -> None:
    _, worker = attempt()
    Worker.objects.filter(pk=worker.pk).update(log_tail="earlier lines")
    worker.refresh_from_db()

    container_keep_logs(runtime=runtime, worker=worker)  # no such container: logs() is None

    worker.refresh_from_db()
    assert worker.log_tail == "earlier lines"


# --- classify_exit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "oom", "registered", "age", "category"),
    [
        (0, False, True, 60, "NO_RESULT"),
        (0, False, False, 1, "NO_RESULT"),
        (137, True, True, 60, "RESOURCE_ERROR"),
        (137, True, False, 1, "RESOURCE_ERROR"),
        (7, False, False, 1, "CONTAINER_ERROR"),
        (143, False, False, 1, "CRASHED"),  # killed by a signal (dockerd stopping): retried
        (137, False, False, 1, "CRASHED"),
        (7, False, True, 1, "CRASHED"),
        (7, False, False, 30, "CRASHED"),
        (1, False, True, 60, "CRASHED"),
        (None, False, True, 60, "CRASHED"),
    ],
)
def test_classify_exit(
    settings: Any, code: int | None, oom: bool, registered: bool, age: float, category: str
) -> None:
    settings.FAST_EXIT_SECONDS = 10
    now = db_now()
    started = now - dt.timedelta(seconds=age)
    worker = Worker(
        status=WorkerStatus.RUNNING,
        started_at=started,
        registered_at=started if registered else None,
    )
    state = ContainerState("c", "exited", code, oom, {})

    got, message = classify_exit(state=state, worker=worker, now=now)

    assert got == category
    assert message


def test_classify_exit_falls_back_to_created_at_without_a_start_time(settings: Any) -> None:
    now = db_now()
    worker = Worker(status=WorkerStatus.RUNNING, started_at=None)
    worker.created_at = now - dt.timedelta(seconds=1)
    state = ContainerState("c", "exited", 7, False, {})

    assert classify_exit(state=state, worker=worker, now=now)[0] == "CONTAINER_ERROR"
    worker.created_at = now - dt.timedelta(seconds=60)
    assert classify_exit(state=state, worker=worker, now=now)[0] == "CRASHED"


@pytest.mark.parametrize(("ran", "category"), [(0.2, "CONTAINER_ERROR"), (45.0, "CRASHED")])
def test_classify_exit_trusts_how_long_the_daemon_says_it_ran_over_when_it_is_seen(
    settings: Any, ran: float, category: str
) -> None:
    settings.FAST_EXIT_SECONDS = 10
    now = db_now()
    state = ContainerState("c", "exited", 7, False, {}, ran_seconds=ran)
    for seen_after in (300, 1):  # a pass that looks late, and one that looks at once
        worker = Worker(
            status=WorkerStatus.RUNNING, started_at=now - dt.timedelta(seconds=seen_after)
        )

        assert classify_exit(state=state, worker=worker, now=now)[0] == category, seen_after


def test_a_container_the_daemon_refuses_to_remove_is_recorded_and_retried(
    runtime: DictRuntime,
) -> None:
    _, worker = finished_attempt(WorkerStatus.COMPLETED)
    runtime.add(worker.container_id, "exited", exit_code=0, worker=worker.pk)

    def refuse(*, container_id: str) -> None:
        raise RuntimeError("device or resource busy")

    with mock.patch.object(runtime, "remove", side_effect=refuse):
        counts = containers_observe(runtime=runtime)
        again = containers_observe(runtime=runtime)  # still refusing, a period later

    assert counts["cleanup_failed"] == again["cleanup_failed"] == 1
    assert counts["removed"] == again["removed"] == 0
    # Visible once on the timeline, not once per period.
    event = WorkItemEvent.objects.get(worker=worker, kind="container_cleanup_failed")
    assert "device or resource busy" in event.message
    assert containers_observe(runtime=runtime)["removed"] == 1  # the next period succeeds
