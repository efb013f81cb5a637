"""The fleet's edges: GET /api/nodes, drain and resume by API, console, admin and CLI, the
Worker object's node, and the /metrics node gauges — with bad input refused in API.md's shape."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from orchestration.models import Node, NodeState, WorkerStatus
from orchestration.services.nodes import node_register
from tests.factories import WorkerFactory
from tests.helpers import assert_error
from tests.test_commands import assert_refused, whim

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(db: None) -> dict[str, Node]:
    """Node a (2 slots, one running attempt) and node b (4 slots, label gpu, idle)."""
    a = node_register(name="a", runtime="docker", capacity=2, labels=[])
    b = node_register(name="b", runtime="docker", capacity=4, labels=["gpu", "big-mem"])
    WorkerFactory.create(node=a, status=WorkerStatus.RUNNING)
    WorkerFactory.create(node=a, status=WorkerStatus.COMPLETED)
    return {"a": a, "b": b}


JSON = "application/json"


def state_of(name: str) -> str:
    return Node.objects.get(pk=name).state


# --- API ------------------------------------------------------------------------------------


def test_the_api_lists_every_node_with_its_running_attempts(api: Client, fleet: Any) -> None:
    resp = api.get("/api/nodes")

    assert resp.status_code == 200
    a, b = resp.json()
    assert a["name"] == "a" and a["state"] == "active"
    assert (a["capacity"], a["running"], a["labels"]) == (2, 1, [])
    assert a["lastHeartbeat"] is not None and "T" in a["lastHeartbeat"]
    assert b == {**b, "name": "b", "capacity": 4, "running": 0, "labels": ["big-mem", "gpu"]}
    assert set(a) == {"name", "state", "capacity", "running", "labels", "lastHeartbeat"}


def test_draining_by_api_answers_the_node_and_shows_drained_once_idle(
    api: Client, fleet: Any
) -> None:
    resp = api.post("/api/nodes/a/drain", content_type=JSON)
    assert resp.status_code == 200 and resp.json()["state"] == "draining"
    assert state_of("a") == NodeState.DRAINING
    assert (
        api.post("/api/nodes/a/drain", content_type=JSON).json()["state"] == "draining"
    )  # idempotent

    resp = api.post("/api/nodes/b/drain", content_type=JSON)
    assert resp.json()["state"] == "drained"  # nothing running on b

    resp = api.post("/api/nodes/a/resume", content_type=JSON)
    assert resp.status_code == 200 and resp.json()["state"] == "active"
    assert state_of("a") == NodeState.ACTIVE


@pytest.mark.parametrize("verb", ["drain", "resume"])
def test_an_unknown_node_is_404_in_the_api_s_error_shape(
    api: Client, fleet: Any, verb: str
) -> None:
    assert_error(api.post(f"/api/nodes/zz/{verb}", content_type=JSON), 404, "NOT_FOUND")
    assert not Node.objects.filter(pk="zz").exists()


@pytest.mark.parametrize("name", ["UPPER", "-dash", "a" * 64, "sp%20ace", "%C3%A9"])
def test_a_name_no_node_can_have_is_refused_as_invalid_input(api: Client, name: str) -> None:
    assert_error(
        api.post(f"/api/nodes/{name}/drain", content_type=JSON),
        400,
        "VALIDATION_ERROR",
        details=["name"],
    )


def test_the_node_routes_need_a_key_and_their_method(client: Client, api_key: str) -> None:
    assert_error(client.get("/api/nodes"), 401, "UNAUTHORIZED")
    assert_error(client.post("/api/nodes/a/drain", content_type=JSON), 401, "UNAUTHORIZED")
    client.defaults["HTTP_X_API_KEY"] = api_key
    assert_error(client.get("/api/nodes/a/drain"), 405, "METHOD_NOT_ALLOWED")
    assert_error(client.post("/api/nodes", content_type=JSON), 405, "METHOD_NOT_ALLOWED")


def test_the_worker_object_names_its_node(api: Client, fleet: Any) -> None:
    WorkerFactory.create()  # from before nodes: no node

    nodes = {w["node"] for w in api.get("/api/workers").json()}

    assert nodes == {"a", None}


def test_metrics_report_each_node_s_capacity_running_and_state(client: Client, fleet: Any) -> None:
    Node.objects.filter(pk="b").update(state=NodeState.LOST)

    text = client.get("/metrics").content.decode()

    assert 'whim_node_capacity{node="a"} 2.0' in text
    assert 'whim_node_running{node="a"} 1.0' in text
    assert 'whim_node_running{node="b"} 0.0' in text
    assert 'whim_node_state{node="b",state="lost"} 1.0' in text
    assert 'whim_node_state{node="b",state="active"} 0.0' in text
    assert 'whim_node_state{node="a",state="active"} 1.0' in text


# --- CLI ------------------------------------------------------------------------------------


def test_whim_nodes_lists_them_and_whim_node_drains_and_resumes(fleet: Any) -> None:
    listed = whim("nodes")
    assert listed.code == 0 and [n["name"] for n in listed.json] == ["a", "b"]

    drained = whim("node", "drain", "a")
    assert drained.code == 0 and drained.json["state"] == "draining"
    assert state_of("a") == NodeState.DRAINING

    resumed = whim("node", "resume", "a")
    assert resumed.code == 0 and resumed.json["state"] == "active"


def test_whim_node_refuses_an_unknown_or_malformed_name(fleet: Any) -> None:
    assert_refused(whim("node", "drain", "zz"), 1, "NOT_FOUND")
    body = assert_refused(whim("node", "resume", "Bad Name"), 2, "VALIDATION_ERROR")
    assert "name" in body["details"]
    assert state_of("a") == NodeState.ACTIVE


# --- console --------------------------------------------------------------------------------


def test_the_nodes_page_shows_each_node_and_buttons_only_for_operators(
    user_client: Client, viewer_client: Client, fleet: Any
) -> None:
    page = user_client.get("/nodes/").content.decode()
    assert 'id="node-a"' in page and 'id="node-b"' in page
    assert "1 / 2" in page and "gpu" in page
    assert "/nodes/a/drain/" in page
    assert 'href="/nodes/"' in page  # the nav link

    seen = viewer_client.get("/nodes/").content.decode()
    assert 'id="node-a"' in seen and "/nodes/a/drain/" not in seen


def test_draining_from_the_console_asks_first_then_drains(
    staff_csrf_client: Client, fleet: Any
) -> None:
    page = staff_csrf_client.get("/nodes/")
    token = page.cookies["csrftoken"].value

    confirm = staff_csrf_client.post("/nodes/a/drain/", {"csrfmiddlewaretoken": token})
    assert confirm.status_code == 200 and b"are you sure" in confirm.content
    assert state_of("a") == NodeState.ACTIVE

    done = staff_csrf_client.post(
        "/nodes/a/drain/", {"csrfmiddlewaretoken": token, "confirm": "yes"}
    )
    assert done.status_code == 302 and state_of("a") == NodeState.DRAINING

    staff_csrf_client.post("/nodes/a/resume/", {"csrfmiddlewaretoken": token})
    assert state_of("a") == NodeState.ACTIVE


def test_the_console_refuses_a_post_without_csrf_a_viewer_and_an_unknown_node(
    staff_csrf_client: Client, viewer_client: Client, user_client: Client, fleet: Any
) -> None:
    assert staff_csrf_client.post("/nodes/a/drain/", {"confirm": "yes"}).status_code == 403
    assert viewer_client.post("/nodes/a/drain/", {"confirm": "yes"}).status_code == 403
    assert state_of("a") == NodeState.ACTIVE

    resp = user_client.post("/nodes/zz/resume/", follow=True)
    assert b"Node not found" in resp.content or b"zz" in resp.content
    resp = user_client.post("/nodes/BAD/drain/", {"confirm": "yes"}, follow=True)
    assert resp.status_code == 200 and b"Invalid node name" in resp.content
    assert user_client.get("/nodes/a/drain/").status_code == 405


# --- admin ----------------------------------------------------------------------------------


def test_the_admin_drains_and_resumes_the_selected_nodes(staff_client: Client, fleet: Any) -> None:
    url = "/admin/orchestration/node/"
    listing = staff_client.get(url)
    assert listing.status_code == 200 and b"gpu" in listing.content

    staff_client.post(url, {"action": "drain", "_selected_action": ["a", "b"]})
    assert {state_of("a"), state_of("b")} == {NodeState.DRAINING}

    staff_client.post(url, {"action": "resume", "_selected_action": ["b"]})
    assert (state_of("a"), state_of("b")) == (NodeState.DRAINING, NodeState.ACTIVE)


def test_a_viewer_in_the_admin_cannot_drain(viewer: Any, fleet: Any) -> None:
    from tests.helpers import logged_in_client

    viewer.is_staff = True
    viewer.save()
    client = logged_in_client(viewer)

    client.post("/admin/orchestration/node/", {"action": "drain", "_selected_action": ["a"]})

    assert state_of("a") == NodeState.ACTIVE
