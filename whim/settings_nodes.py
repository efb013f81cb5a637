"""The fleet's settings (issue 13): which node this process's Celery worker is, how much it
takes, and when a silent node counts as lost. Star-imported by ``whim.settings``; each is in
README.md's configuration table and validated by ``orchestration.checks`` (E080 to E089).
"""

from __future__ import annotations

import re
import socket

import environ

env = environ.FileAwareEnv()


def default_node_name(hostname: str) -> str:
    """The host name as a node name: lower-cased, anything outside [a-z0-9_.-] turned into
    "-", leading punctuation dropped, cut to 63 characters ("whim" if nothing is left)."""
    name = re.sub(r"[^a-z0-9_.-]", "-", hostname.lower()).lstrip("_.-")[:63]
    return name or "whim"


# This process's node: the Celery worker consumes ``whim.node.<WHIM_NODE>`` and registers it.
WHIM_NODE = env.str("WHIM_NODE", default="").strip() or default_node_name(socket.gethostname())
# Attempts this node runs at once. None: MAX_WORKERS (read where it is used, so one setting
# is enough on a single host).
NODE_MAX_WORKERS: int | None = env.int("NODE_MAX_WORKERS", default=None)
# What this node offers to items that ask (metadata.nodeLabels), e.g. "gpu,arm64".
NODE_LABELS: list[str] = sorted(
    {label.strip().lower() for label in env.list("NODE_LABELS", default=[]) if label.strip()}
)
# A node whose worker has not heartbeaten for this long is lost (seconds, database clock).
NODE_TIMEOUT = env.float("NODE_TIMEOUT", default=60.0)
# How often each Celery worker heartbeats its node, from a thread (not beat).
NODE_HEARTBEAT_INTERVAL = env.float("NODE_HEARTBEAT_INTERVAL", default=10.0)
