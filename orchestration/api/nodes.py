"""The fleet's client routes: ``GET /api/nodes`` and ``POST /api/nodes/<name>/drain|resume``.

A node answers as ``{name, state, capacity, running, labels, lastHeartbeat}``; ``state`` is the
display state (``drained``: draining with nothing left running). An unknown node is 404
NOT_FOUND, a name no node can have 400 VALIDATION_ERROR (API.md's error shape for both).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from orchestration.api.base import api_view
from orchestration.api.serializers import INTEGER, NULLABLE_DATE_TIME, iso, object_schema
from orchestration.errors import NotFound
from orchestration.fleet import NodeState
from orchestration.forms.node_name import node_name_parsed
from orchestration.selectors import NodeRow, nodes_overview
from orchestration.services.nodes import node_drain as node_drain_service
from orchestration.services.nodes import node_resume as node_resume_service

DISPLAY_STATES = [*NodeState.values, "drained"]
NODE_SCHEMA = object_schema(
    {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"},
        "state": {"enum": DISPLAY_STATES},
        "capacity": {**INTEGER, "minimum": 0},
        "running": {**INTEGER, "minimum": 0},
        "labels": {"type": "array", "items": {"type": "string"}},
        "lastHeartbeat": NULLABLE_DATE_TIME,
    },
    description="A node: a Docker host whose Celery worker runs attempts",
)


def node_json(row: NodeRow) -> dict[str, Any]:
    return {
        "name": row["name"],
        "state": row["state"],
        "capacity": row["capacity"],
        "running": row["running"],
        "labels": list(row["labels"]),
        "lastHeartbeat": iso(row["last_heartbeat"]),
    }


def node_answer(name: str) -> dict[str, Any]:
    """The node's object as it is now (after an action)."""
    for row in nodes_overview():
        if row["name"] == name:
            return node_json(row)
    raise NotFound("Node not found")


@api_view("GET")
def nodes_list(request: HttpRequest, *, body: dict[str, Any], actor: str) -> Any:
    return [node_json(row) for row in nodes_overview()]


@api_view("POST")
def node_drain(request: HttpRequest, *, body: dict[str, Any], actor: str, name: str) -> Any:
    """Stop new attempts on the node; the running ones finish (idempotent)."""
    node = node_drain_service(name=node_name_parsed(name), actor=actor)
    return node_answer(node.name)


@api_view("POST")
def node_resume(request: HttpRequest, *, body: dict[str, Any], actor: str, name: str) -> Any:
    """A draining or lost node takes new attempts again (idempotent)."""
    node = node_resume_service(name=node_name_parsed(name), actor=actor)
    return node_answer(node.name)
