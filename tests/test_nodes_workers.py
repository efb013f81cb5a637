"""Nodes on the wire (issue 13): concurrent claimers never overfill a node, a node-bound
message lands on the node's own Redis queue, a Celery worker registers and heartbeats its
node by itself, and a node's observation leaves other nodes' containers and attempts alone.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from orchestration import nudge
from orchestration.clock import db_now
from orchestration.fleet import node_queue
from orchestration.models import Node, Worker, WorkerStatus, WorkItemStatus
from orchestration.nudge import TaskName
from orchestration.services.dispatch import dispatch_claim_one
from orchestration.services.nodes import node_register
from tests.factories import WorkItemFactory
from tests.helpers import wait_for
from tests.test_claim_races import claim_until_empty, run_concurrently
from tests.test_container_observer import DictRuntime
from workers.provider import WorkersRuntimeProvider
from workers.services import containers_observe

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_gated_claimers_never_exceed_any_nodes_capacity(settings: Any) -> None:
    for name, capacity in (("a", 2), ("b", 3)):
        node_register(name=name, runtime="fake", capacity=capacity, labels=[])
    WorkItemFactory.create_batch(20)

    run_concurrently(8, claim_until_empty(use_gate=True))

    running = Counter(
        Worker.objects.filter(status__in=Worker.ACTIVE).values_list("node_id", flat=True)
    )
    assert running == {"a": 2, "b": 3}
    assert WorkItemFactory._meta.model.objects.filter(status=WorkItemStatus.QUEUED).count() == 15


def test_a_node_bound_message_lands_on_the_nodes_own_redis_queue() -> None:
    name = f"n{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    try:
        nudge.send(
            TaskName.STOP_CONTAINER, "00000000-0000-0000-0000-000000000000", queue=node_queue(name)
        )
        assert client.llen(f"whim.node.{name}") == 1
        message = client.lindex(f"whim.node.{name}", 0)
        assert isinstance(message, bytes) and b"workers.stop_container" in message
    finally:
        client.delete(f"whim.node.{name}")
        client.close()


@pytest.mark.celery
def test_a_celery_worker_registers_and_heartbeats_its_node(celery_workers: Any) -> None:
    workers = celery_workers(
        NODE_HEARTBEAT_INTERVAL="0.5", NODE_LABELS="gpu,Big-Mem", NODE_MAX_WORKERS="4"
    )
    workers.start()
    name = workers.env["WHIM_NODE"]

    wait_for(lambda: Node.objects.filter(name=name).exists(), timeout=30, what="registration")
    node = Node.objects.get(name=name)
    assert (node.capacity, node.labels, node.runtime) == (4, ["big-mem", "gpu"], "fake")
    first = node.last_heartbeat
    assert first is not None
    wait_for(
        lambda: (Node.objects.get(name=name).last_heartbeat or first) > first,
        timeout=10,
        what="a heartbeat from the worker's timer",
    )
    assert Node.objects.count() == 1  # beat and this process register none


def test_observation_leaves_other_nodes_containers_and_attempts_alone(settings: Any) -> None:
    settings.WHIM_INSTANCE = "obs-test"
    for name in ("a", "b"):
        node_register(name=name, runtime="dict", capacity=5, labels=[])
    WorkItemFactory.create_batch(2)
    workers = [claimed(), claimed()]
    for w in workers:
        Worker.objects.filter(pk=w.pk).update(
            status=WorkerStatus.RUNNING, container_id=f"c-{w.pk}", started_at=db_now()
        )
    on_a = next(w for w in workers if w.node_id == "a")
    on_b = next(w for w in workers if w.node_id == "b")
    runtime = DictRuntime()  # node a's engine: a's container, and one labelled for b
    runtime.add(f"c-{on_a.pk}", "running", labels=_labels(on_a.pk, "a"))
    runtime.add("stray-b", "exited", exit_code=0, labels=_labels(uuid.uuid4(), "b"))
    runtime.add("stray-a", "exited", exit_code=0, labels=_labels(uuid.uuid4(), "a"))

    counts = containers_observe(runtime=runtime, node="a")

    assert counts["lost"] == 0  # b's attempt has no container here: not a's to call lost
    assert Worker.objects.get(pk=on_b.pk).status == WorkerStatus.RUNNING
    assert Worker.objects.get(pk=on_a.pk).status == WorkerStatus.RUNNING
    assert runtime.touched("stray-b") == []  # b's, even on this engine: left alone
    assert runtime.touched("stray-a") == ["remove"]  # a's leftover: removed
    assert counts["removed"] == 1
    connection.close()


def claimed() -> Worker:
    worker_id = dispatch_claim_one()
    assert worker_id is not None, "nothing was claimed"
    return Worker.objects.get(pk=worker_id)


def _labels(worker: object, node: str) -> dict[str, str]:
    return {"whim.instance": "obs-test", "whim.worker": str(worker), "whim.node": node}


def test_a_node_coming_back_removes_its_lost_attempts_leftovers(settings: Any) -> None:
    settings.WHIM_INSTANCE = "obs-test"
    node_register(name="a", runtime="dict", capacity=5, labels=[])
    node_register(name="b", runtime="dict", capacity=5, labels=[])
    WorkItemFactory.create()
    worker = claimed()
    Worker.objects.filter(pk=worker.pk).update(status=WorkerStatus.LOST, container_id="c-old")
    runtime = DictRuntime()
    runtime.add("c-old", "running", labels=_labels(worker.pk, worker.node_id or ""))

    containers_observe(runtime=runtime, node=worker.node_id)

    assert runtime.touched("c-old") == ["stop", "remove"]


def test_two_nodes_heartbeat_without_blocking_each_other() -> None:
    # Registration upserts are row-locked per node: two at once both land.
    errors: list[BaseException] = []

    def register(name: str) -> None:
        try:
            node_register(name=name, runtime="fake", capacity=1, labels=[])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=register, args=(n,)) for n in ("a", "a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert set(Node.objects.values_list("name", flat=True)) == {"a", "b"}


def test_in_a_fleet_a_running_containers_lines_reach_its_row_for_other_nodes_webs(
    settings: Any,
) -> None:
    settings.WHIM_INSTANCE = "obs-test"
    settings.WHIM_NODE = "web-host"  # the web reading the logs runs on neither node
    for name in ("a", "b"):
        node_register(name=name, runtime="dict", capacity=5, labels=[])
    WorkItemFactory.create()
    worker = claimed()
    Worker.objects.filter(pk=worker.pk).update(
        status=WorkerStatus.RUNNING, container_id="c-live", started_at=db_now()
    )
    runtime = DictRuntime()
    runtime.add("c-live", "running", labels=_labels(worker.pk, worker.node_id or ""))
    runtime.output["c-live"] = ["step 1", "step 2"]

    containers_observe(runtime=runtime, node=worker.node_id)

    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING
    assert worker.log_tail.splitlines() == ["step 1", "step 2"]
    lines, source = WorkersRuntimeProvider().worker_logs(worker, lines=10)
    assert lines == ["step 1", "step 2"] and f"node {worker.node_id}" in source
    connection.close()


def test_alone_a_running_containers_lines_are_not_copied_each_pass(settings: Any) -> None:
    settings.WHIM_INSTANCE = "obs-test"
    node_register(name="a", runtime="dict", capacity=5, labels=[])
    WorkItemFactory.create()
    worker = claimed()
    Worker.objects.filter(pk=worker.pk).update(
        status=WorkerStatus.RUNNING, container_id="c-live", started_at=db_now()
    )
    runtime = DictRuntime()
    runtime.add("c-live", "running", labels=_labels(worker.pk, "a"))

    containers_observe(runtime=runtime, node="a")

    assert Worker.objects.get(pk=worker.pk).log_tail == ""  # the web asks the engine itself
    connection.close()
