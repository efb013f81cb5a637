"""Two nodes on two real Docker engines: placement, a dead host, draining and labels.

One gunicorn, one beat, and a Celery worker per node (``WHIM_NODE=a`` on the main engine,
``b`` on a second dockerd: tests/docker_nodes_support.py), the mock agent, 2 slots per node.
Every test ends with the fleet's invariants: each item terminal or queued, at most one live
container per item across both engines, no container without an active attempt of its own
node.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from typing import Any

import pytest

from orchestration.models import Node, Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.pages.explain import why_not_running
from orchestration.services.dispatch import worker_token
from tests.docker_nodes_support import TwoNodes
from tests.docker_stack import make_bare_repo
from tests.helpers import wait_for
from tests.invariants import assert_invariants

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

REPO = "acme/widgets"
NODES = ("a", "b")


def call(
    stack: TwoNodes, method: str, path: str, body: Any = None, *, token: str = ""
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["X-API-Key"] = stack.api_key
    req = urllib.request.Request(
        f"{stack.base_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def submit(stack: TwoNodes, name: str, **metadata: Any) -> uuid.UUID:
    status, body = call(
        stack,
        "POST",
        "/api/work",
        {"repo": REPO, "spec": f"# {name}", "branch": name, "metadata": metadata},
    )
    assert status == 201, body
    return uuid.UUID(body["id"])


def all_finished(ids: list[uuid.UUID]) -> bool:
    return WorkItem.objects.filter(pk__in=ids, status__in=WorkItem.TERMINAL).count() == len(ids)


def active_on(node: str) -> list[Worker]:
    return list(Worker.objects.filter(node_id=node, status__in=Worker.ACTIVE))


def violations(stack: TwoNodes) -> list[str]:
    """The fleet invariants that containers can break, across both engines ([] when held)."""
    found: list[str] = []
    live: Counter[str] = Counter()
    for node in NODES:
        if node == "b" and not stack.engine_b.answers():
            continue
        for container in stack.containers(node):
            labels = container.labels
            worker = Worker.objects.filter(pk=labels.get("whim.worker")).first()
            if container.status == "running":
                live[labels.get("whim.work_item", container.name)] += 1
            if labels.get("whim.node") != node:
                found.append(f"{container.name} on {node} is labelled {labels.get('whim.node')}")
            if worker is None or worker.status not in Worker.ACTIVE or worker.node_id != node:
                found.append(f"{container.name} on {node} has no active attempt of {node}")
    found += [f"{item} has {n} live containers" for item, n in live.items() if n > 1]
    return found


def assert_fleet_invariants(stack: TwoNodes) -> None:
    """Wait for the observers to remove finished containers, then check everything."""
    wait_for(lambda: not violations(stack), timeout=60, interval=1, what="the fleet invariants")
    assert_invariants()


def test_twenty_items_spread_over_both_nodes_never_past_their_capacity(two_nodes: Any) -> None:
    stack = two_nodes()
    make_bare_repo(stack.repos, REPO)
    ids = [submit(stack, f"item-{i}", mockSeconds=1) for i in range(20)]
    placed: dict[str, str] = {}  # worker id -> the engine its container was seen on
    most = dict.fromkeys(NODES, 0)

    def watch() -> bool:
        for node in NODES:
            running = stack.containers(node, live_only=True)
            most[node] = max(most[node], len(running), len(active_on(node)))
            for container in running:
                placed[container.labels["whim.worker"]] = node
        return all_finished(ids)

    wait_for(watch, timeout=240, interval=0.3, what="20 items on two nodes")

    items = WorkItem.objects.filter(pk__in=ids)
    assert {item.status for item in items} == {WorkItemStatus.COMPLETED}
    completed = Worker.objects.filter(work_item_id__in=ids, status=WorkerStatus.COMPLETED)
    assert sorted(str(w.work_item_id) for w in completed) == sorted(map(str, ids))
    assert set(completed.values_list("node_id", flat=True)) == {"a", "b"}
    assert most["a"] <= 2 and most["b"] <= 2, most
    assert placed, "no running container was ever seen"
    for worker_id, engine in placed.items():
        assert Worker.objects.get(pk=worker_id).node_id == engine
    assert_fleet_invariants(stack)


def test_a_dead_node_s_attempts_run_again_on_the_other_and_its_leftovers_go(
    two_nodes: Any,
) -> None:
    stack = two_nodes()
    make_bare_repo(stack.repos, REPO)
    ids = [submit(stack, f"long-{i}", mockSeconds=12) for i in range(4)]

    def two_running_on_each() -> bool:
        return all(
            len([w for w in active_on(n) if w.status == WorkerStatus.RUNNING]) == 2 for n in NODES
        )

    wait_for(two_running_on_each, timeout=90, interval=0.3, what="2 attempts running per node")
    on_b = active_on("b")
    names_b = {f"whim-{stack.instance}-{w.pk}" for w in on_b}
    tokens = {}
    for container in stack.containers("b", live_only=True):
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        tokens[env["WORKER_ID"]] = worker_token(env["WORKER_ID"])
        # Its token came on stdin: not in the configuration the Docker API shows.
        assert tokens[env["WORKER_ID"]] not in json.dumps(container.attrs)
        assert "WORKER_TOKEN" not in env and "ORCHESTRATOR_URL" not in env
    assert set(tokens) == {str(w.pk) for w in on_b}

    # Host b dies: its Celery worker is SIGKILLed and its engine stops answering.
    stack.kill_worker("b")
    stack.engine_b.kill()

    # The sweep marks the node lost, then ends its attempts one by one (level-triggered):
    # wait for both, then check how they ended.
    def b_lost_and_its_attempts_ended() -> bool:
        return (
            Node.objects.get(pk="b").state == "lost"
            and not Worker.objects.filter(
                pk__in=[w.pk for w in on_b], status__in=Worker.ACTIVE
            ).exists()
        )

    wait_for(
        b_lost_and_its_attempts_ended,
        timeout=40,
        interval=0.5,
        what="node b to be marked lost and its attempts ended",
    )
    for worker in Worker.objects.filter(pk__in=[w.pk for w in on_b]):
        assert worker.status not in Worker.ACTIVE
        assert worker.error_category == "NODE_LOST", worker.error_category
    wait_for(lambda: all_finished(ids), timeout=150, interval=0.5, what="the retries on a")
    for item_id in ids:
        item = WorkItem.objects.get(pk=item_id)
        assert item.status == WorkItemStatus.COMPLETED, item.error
        assert item.worker_id is not None
        assert Worker.objects.get(pk=item.worker_id).node_id == "a"
    # Late callbacks from b's attempts are fenced off.
    for worker_id, token in tokens.items():
        status, body = call(
            stack, "POST", f"/api/worker/{worker_id}/heartbeat", {"iteration": 1}, token=token
        )
        assert status == 409 and body["code"] == "INVALID_STATE", body
        status, body = call(stack, "POST", f"/api/worker/{worker_id}/complete", {}, token=token)
        assert status == 409 and body["code"] == "INVALID_STATE", body
    # Node a's worker never acted on b's containers (it only sees its own engine).
    log_a = "".join(path.read_text(errors="replace") for path in stack.nodes["a"].logs)
    assert not [name for name in names_b if name in log_a]

    # Host b comes back: its engine still holds the leftovers until b's own worker runs.
    stack.engine_b.start()
    leftovers = {c.name for c in stack.containers("b")}
    assert names_b <= leftovers, leftovers
    stack.start_worker("b")
    wait_for(
        lambda: Node.objects.get(pk="b").state == "active", timeout=30, what="b registered again"
    )
    wait_for(lambda: not stack.containers("b"), timeout=60, interval=1, what="b's leftovers gone")
    assert_fleet_invariants(stack)


def test_a_draining_node_takes_nothing_new_and_finishes_what_it_runs(two_nodes: Any) -> None:
    stack = two_nodes()
    make_bare_repo(stack.repos, REPO)
    first = [submit(stack, f"first-{i}", mockSeconds=8) for i in range(4)]
    wait_for(
        lambda: len(active_on("a")) == 2 and len(active_on("b")) == 2,
        timeout=90,
        interval=0.3,
        what="2 attempts per node",
    )
    running_on_a = {w.pk for w in active_on("a")}

    status, body = call(stack, "POST", "/api/nodes/a/drain")
    assert status == 200 and body["state"] == "draining", body
    later = [submit(stack, f"later-{i}", mockSeconds=1) for i in range(4)]

    wait_for(lambda: all_finished(first + later), timeout=150, interval=0.5, what="all items")
    assert set(Worker.objects.filter(work_item_id__in=later).values_list("node_id", flat=True)) == {
        "b"
    }
    assert set(Worker.objects.filter(pk__in=running_on_a).values_list("status", flat=True)) == {
        WorkerStatus.COMPLETED
    }
    assert not Worker.objects.filter(node_id="a").exclude(pk__in=running_on_a).exists()
    _, nodes = call(stack, "GET", "/api/nodes")
    assert {n["name"]: n["state"] for n in nodes} == {"a": "drained", "b": "active"}
    assert_fleet_invariants(stack)


def test_an_item_asking_for_a_label_only_b_has_waits_for_b(two_nodes: Any) -> None:
    stack = two_nodes(b_env={"NODE_LABELS": "gpu"})
    make_bare_repo(stack.repos, REPO)
    busy = [submit(stack, f"busy-{i}", mockSeconds=10, nodeLabels=["gpu"]) for i in range(2)]
    wait_for(lambda: len(active_on("b")) == 2, timeout=90, interval=0.3, what="b full")

    waiting = submit(stack, "waiting", mockSeconds=1, nodeLabels=["gpu"])
    time.sleep(4)  # several dispatch rounds (LOOP_INTERVAL=1) with node a idle
    item = WorkItem.objects.get(pk=waiting)
    assert item.status == WorkItemStatus.QUEUED
    assert not Worker.objects.filter(work_item_id=waiting).exists()
    assert not active_on("a")
    reasons = " ".join(why_not_running(item))
    assert "gpu" in reasons and "full" in reasons, reasons

    wait_for(lambda: all_finished([*busy, waiting]), timeout=120, interval=0.5, what="the items")
    item = WorkItem.objects.get(pk=waiting)
    assert item.status == WorkItemStatus.COMPLETED, item.error
    assert item.worker_id is not None
    assert Worker.objects.get(pk=item.worker_id).node_id == "b"
    assert_fleet_invariants(stack)
