"""The fleet's services: a node registers, heartbeats, is drained or resumed, and is marked
lost when it falls silent (the "nodes" sweep), failing its attempts so they run elsewhere.
"""

from __future__ import annotations

from orchestration.models import Node


def node_register(*, name: str, runtime: str, capacity: int, labels: list[str]) -> Node:
    raise NotImplementedError


def node_heartbeat(*, name: str) -> None:
    raise NotImplementedError


def node_drain(*, name: str, actor: str) -> Node:
    raise NotImplementedError


def node_resume(*, name: str, actor: str) -> Node:
    raise NotImplementedError


def nodes_mark_lost() -> int:
    return 0
