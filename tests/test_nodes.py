"""Nodes (issue 13): the claim picks a node within its capacity and labels, a silent node is
lost and its attempts retried elsewhere (fenced), a draining node takes nothing new, and the
start message goes to the node's own queue. Real PostgreSQL; no broker (messages recorded)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from django.test import Client

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.errors import NotFound
from orchestration.models import Node, NodeState, Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.nudge import TaskName
from orchestration.pages.explain import why_not_running
from orchestration.selectors import nodes_overview
from orchestration.services.dispatch import dispatch_claim_one, dispatch_renudge_starts
from orchestration.services.nodes import (
    node_drain,
    node_heartbeat,
    node_register,
    node_resume,
    nodes_mark_lost,
)
from orchestration.services.workers import worker_kill, worker_mark_started
from tests.callbacks_support import call
from tests.factories import WorkItemFactory
from tests.helpers import assert_error, task_mocks

pytestmark = pytest.mark.django_db


def node(name: str, capacity: int = 2, labels: list[str] | None = None) -> Node:
    return node_register(name=name, runtime="fake", capacity=capacity, labels=labels or [])


def claim_all() -> list[Worker]:
    claimed = []
    while (worker_id := dispatch_claim_one()) is not None:
        claimed.append(Worker.objects.get(pk=worker_id))
    return claimed


def claimed() -> Worker:
    worker_id = dispatch_claim_one()
    assert worker_id is not None, "nothing was claimed"
    return Worker.objects.get(pk=worker_id)


def silence(name: str, seconds: float) -> None:
    Node.objects.filter(name=name).update(last_heartbeat=db_now() - dt.timedelta(seconds=seconds))


# --- the claim ---------------------------------------------------------------------------


def test_the_claim_fills_two_nodes_up_to_their_capacity_and_no_further() -> None:
    node("a", capacity=2)
    node("b", capacity=3)
    WorkItemFactory.create_batch(8)

    workers = claim_all()

    assert Counter(w.node_id for w in workers) == {"a": 2, "b": 3}
    assert WorkItem.objects.filter(status=WorkItemStatus.QUEUED).count() == 3


def test_the_node_with_the_most_free_slots_is_picked_first() -> None:
    node("a", capacity=1)
    node("b", capacity=3)
    WorkItemFactory.create_batch(2)

    first, second = claim_all()

    assert (first.node_id, second.node_id) == ("b", "b")


def test_an_item_asking_for_a_label_runs_only_on_a_node_offering_it() -> None:
    node("plain", capacity=5)
    node("gpu-box", capacity=5, labels=["gpu", "big-mem"])
    wants = WorkItemFactory.create(metadata={"nodeLabels": ["gpu"]})

    claim_all()

    assert Worker.objects.get(work_item=wants).node_id == "gpu-box"


def test_an_item_no_free_node_can_take_is_skipped_and_does_not_block_the_rest() -> None:
    node("a", capacity=2)
    node("b", capacity=1, labels=["gpu"])
    busy = WorkItemFactory.create(priority="critical", metadata={"nodeLabels": ["gpu"]})
    claim_all()  # b is full now
    waiting = WorkItemFactory.create(priority="critical", metadata={"nodeLabels": ["gpu"]})
    nowhere = WorkItemFactory.create(priority="high", metadata={"nodeLabels": ["arm64"]})
    later = WorkItemFactory.create(priority="low")

    claimed = claim_all()

    assert [w.work_item_id for w in claimed] == [later.pk]
    assert claimed[0].node_id == "a"
    assert Worker.objects.get(work_item=busy).node_id == "b"
    for item in (waiting, nowhere):
        item.refresh_from_db()
        assert item.status == WorkItemStatus.QUEUED


def test_with_no_node_registered_the_claim_registers_this_hosts(settings: Any) -> None:
    settings.WHIM_NODE = "solo"
    settings.MAX_WORKERS = 3
    settings.NODE_MAX_WORKERS = None
    WorkItemFactory.create_batch(5)
    assert not Node.objects.exists()

    workers = claim_all()

    solo = Node.objects.get()
    assert (solo.name, solo.capacity, solo.state) == ("solo", 3, NodeState.ACTIVE)
    assert [w.node_id for w in workers] == ["solo"] * 3


def test_a_draining_node_gets_no_claims_and_a_resumed_one_does() -> None:
    node("a", capacity=5)
    node("b", capacity=5)
    node_drain(name="a", actor="op")
    WorkItemFactory.create_batch(3)

    assert {w.node_id for w in claim_all()} == {"b"}
    node_drain(name="b", actor="op")
    WorkItemFactory.create()
    assert dispatch_claim_one() is None

    node_resume(name="a", actor="op")
    assert claimed().node_id == "a"


def test_drain_and_resume_are_idempotent_and_an_unknown_node_is_not_found() -> None:
    node("a")
    assert node_drain(name="a", actor="op").state == NodeState.DRAINING
    assert node_drain(name="a", actor="op").state == NodeState.DRAINING
    assert node_resume(name="a", actor="op").state == NodeState.ACTIVE
    assert node_resume(name="a", actor="op").state == NodeState.ACTIVE
    with pytest.raises(NotFound):
        node_drain(name="nope", actor="op")
    with pytest.raises(NotFound):
        node_resume(name="nope", actor="op")


def test_the_overview_shows_a_draining_node_with_nothing_running_as_drained() -> None:
    node("a", capacity=2)
    node("b", capacity=2)
    WorkItemFactory.create_batch(3)
    claim_all()
    node_drain(name="a", actor="op")
    node_drain(name="b", actor="op")
    busy_on_a = Worker.objects.filter(node_id="a").values_list("pk", flat=True)
    for worker_id in busy_on_a:
        worker_kill(worker_id=worker_id, actor="op")

    rows = {row["name"]: row for row in nodes_overview()}

    assert (rows["a"]["state"], rows["a"]["running"]) == ("drained", 0)
    assert (rows["b"]["state"], rows["b"]["running"]) == ("draining", 1)


# --- routing -----------------------------------------------------------------------------


def test_start_and_stop_messages_go_to_the_attempts_node_queue(settings: Any) -> None:
    settings.START_RENUDGE_SECONDS = 0
    node("a", capacity=1)
    node("b", capacity=1)
    WorkItemFactory.create_batch(2)
    with task_mocks(TaskName.START_WORKER, TaskName.STOP_CONTAINER) as sent:
        with django_capture_on_commit():
            workers = claim_all()
        starts = sent[TaskName.START_WORKER]
        assert starts.queues == [f"whim.node.{w.node_id}" for w in workers]
        assert {q for q in starts.queues} == {"whim.node.a", "whim.node.b"}

        Worker.objects.update(last_heartbeat=db_now() - dt.timedelta(seconds=5))
        dispatch_renudge_starts()
        assert sorted(starts.queues[2:]) == ["whim.node.a", "whim.node.b"]

        on_b = next(w for w in workers if w.node_id == "b")
        worker_mark_started(worker_id=on_b.pk, container_id="c-b")
        with django_capture_on_commit():
            worker_kill(worker_id=on_b.pk, actor="op")
        assert sent[TaskName.STOP_CONTAINER].queues == ["whim.node.b"]


def django_capture_on_commit() -> Any:
    """Run on_commit callbacks at the end of the block (the test runs in one transaction)."""
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)


# --- lost nodes --------------------------------------------------------------------------


def test_a_silent_node_is_lost_and_its_attempts_are_retried_elsewhere(
    settings: Any, client: Client, retry_policy: None
) -> None:
    settings.NODE_TIMEOUT = 60
    node("a", capacity=1)
    node("b", capacity=1)
    WorkItemFactory.create_batch(2)
    workers = claim_all()
    on_b = next(w for w in workers if w.node_id == "b")
    worker_mark_started(worker_id=on_b.pk, container_id="c-b")
    silence("b", 120)

    assert nodes_mark_lost() == 1

    on_b.refresh_from_db()
    item = on_b.work_item
    item.refresh_from_db()
    assert Node.objects.get(name="b").state == NodeState.LOST
    assert Node.objects.get(name="a").state == NodeState.ACTIVE
    assert (on_b.status, on_b.error_category) == (WorkerStatus.LOST, ErrorCategory.NODE_LOST)
    assert item.status == WorkItemStatus.QUEUED and item.retry_count == 1
    assert item.next_retry_at is not None and item.next_retry_at > db_now()  # backoff
    assert item.events.filter(kind=EventKind.NODE_LOST, data__node="b").exists()
    assert nodes_mark_lost() == 0  # level-triggered: nothing left to do

    # The node comes back: its late callbacks are fenced off.
    node("b", capacity=1)
    assert Node.objects.get(name="b").state == NodeState.ACTIVE
    assert call(client, on_b, "heartbeat", {"iteration": 3}).status_code == 409
    assert call(client, on_b, "complete", {}).status_code == 409
    on_b.refresh_from_db()
    assert on_b.status == WorkerStatus.LOST

    # Due again: it runs on a live node (b is back and free; a is busy).
    WorkItem.objects.filter(pk=item.pk).update(next_retry_at=None)
    retried = claimed()
    assert retried.work_item_id == item.pk and retried.node_id == "b"


def test_lost_attempts_count_toward_quarantine(settings: Any, retry_policy: None) -> None:
    settings.QUARANTINE_AFTER = 2
    node("b", capacity=1)
    item = WorkItemFactory.create()
    for _ in range(2):
        Node.objects.filter(name="b").update(state=NodeState.ACTIVE, last_heartbeat=db_now())
        WorkItem.objects.filter(pk=item.pk).update(next_retry_at=None)
        assert dispatch_claim_one() is not None
        silence("b", 600)
        assert nodes_mark_lost() == 1

    item.refresh_from_db()
    assert (item.status, item.error_category) == (WorkItemStatus.FAILED, "QUARANTINED")


def test_a_heartbeat_keeps_a_node_and_brings_a_lost_one_back(settings: Any) -> None:
    settings.NODE_TIMEOUT = 60
    node("a")
    silence("a", 30)
    nodes_mark_lost()
    assert Node.objects.get(name="a").state == NodeState.ACTIVE
    silence("a", 90)
    nodes_mark_lost()
    assert Node.objects.get(name="a").state == NodeState.LOST

    node_heartbeat(name="a")

    assert Node.objects.get(name="a").state == NodeState.ACTIVE
    with pytest.raises(NotFound):
        node_heartbeat(name="gone")


def test_a_returning_node_re_registers_with_its_new_settings_and_stays_draining() -> None:
    node("a", capacity=2, labels=["gpu"])
    node_drain(name="a", actor="op")
    Node.objects.filter(name="a").update(last_heartbeat=None)

    again = node_register(name="a", runtime="docker", capacity=4, labels=["x", "gpu"])

    assert (again.state, again.capacity, again.labels, again.runtime) == (
        NodeState.DRAINING,
        4,
        ["gpu", "x"],
        "docker",
    )
    assert again.last_heartbeat is not None


def test_a_silent_draining_nodes_attempts_are_failed_too(settings: Any) -> None:
    node("a", capacity=1)
    WorkItemFactory.create()
    worker = claimed()
    node_drain(name="a", actor="op")
    silence("a", settings.NODE_TIMEOUT + 30)

    assert nodes_mark_lost() == 1

    worker.refresh_from_db()
    assert worker.error_category == ErrorCategory.NODE_LOST


# --- why is it not running ---------------------------------------------------------------


def test_the_explainer_names_node_reasons() -> None:
    node("a", capacity=1)
    node("b", capacity=1, labels=["gpu"])
    WorkItemFactory.create_batch(2, priority="critical")
    claim_all()  # both full
    plain = WorkItemFactory.create()
    gpu = WorkItemFactory.create(metadata={"nodeLabels": ["gpu"]})
    arm = WorkItemFactory.create(metadata={"nodeLabels": ["arm64"]})

    assert any(r.startswith("All nodes are full") for r in why_not_running(plain))
    assert any("All nodes are full" in r and "label gpu" in r for r in why_not_running(gpu))
    assert any("No node has label arm64" in r for r in why_not_running(arm))

    node_drain(name="b", actor="op")
    assert any("The nodes with label gpu are draining or lost" in r for r in why_not_running(gpu))


# --- the edge ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    ["gpu", ["GPU"], ["gpu", 3], [f"l{n}" for n in range(11)], ["-x"], ["a" * 64]],
)
def test_node_labels_are_validated_at_the_edge(api: Client, labels: Any) -> None:
    body = {"repo": "acme/widgets", "spec": "# x", "metadata": {"nodeLabels": labels}}
    resp = api.post("/api/work", body, content_type="application/json")
    assert_error(resp, 400, "VALIDATION_ERROR")
    assert "metadata" in resp.json()["details"]
    assert not WorkItem.objects.exists()


def test_valid_node_labels_are_accepted(api: Client) -> None:
    body = {"repo": "acme/widgets", "spec": "# x", "metadata": {"nodeLabels": ["gpu", "arm64"]}}
    resp = api.post("/api/work", body, content_type="application/json")
    assert resp.status_code == 201, resp.content
    assert WorkItem.objects.get().metadata["nodeLabels"] == ["gpu", "arm64"]


def test_the_system_checks_refuse_a_bad_node_name_and_a_timeout_shorter_than_3_beats(
    settings: Any,
) -> None:
    from orchestration.checks_nodes import check_nodes

    assert check_nodes(None) == []
    settings.WHIM_NODE, settings.NODE_LABELS = "Bad Name", ["ok", "no way"]
    settings.NODE_HEARTBEAT_INTERVAL, settings.NODE_TIMEOUT = 10, 20
    ids = {message.id for message in check_nodes(None)}
    assert ids == {"orchestration.E080", "orchestration.E082", "orchestration.E084"}


def test_the_system_checks_refuse_a_negative_capacity_and_a_heartbeat_interval_of_zero(
    settings: Any,
) -> None:
    from orchestration.checks_nodes import check_nodes

    settings.NODE_MAX_WORKERS, settings.NODE_HEARTBEAT_INTERVAL = -1, 0
    messages = check_nodes(None)
    assert {m.id for m in messages} == {"orchestration.E081", "orchestration.E083"}
    assert any("NODE_MAX_WORKERS must be at least 0 (it is -1)" in m.msg for m in messages)
    settings.NODE_MAX_WORKERS, settings.NODE_HEARTBEAT_INTERVAL = 0, 5  # 0: takes nothing
    assert check_nodes(None) == []
