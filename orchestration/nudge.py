"""Enqueue Celery messages by task name, once the current transaction commits.

Messages are nudges (DESIGN.md §2): if the broker is down at commit time the failure is
logged, not raised — the row is already the truth and a periodic sweep sends the nudge again.

Services enqueue through this module by *name* (``TaskName``), so no service imports a task
module: tasks import services, never the reverse (DESIGN.md §10). The task bodies live in
``orchestration/tasks.py`` and ``workers/tasks.py`` and are registered under these names.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction

from orchestration import requestid

logger = logging.getLogger(__name__)


class TaskName:
    """Every task a service enqueues, by its registered name (the wire contract of the queue:
    renaming one strands the messages already queued under the old name)."""

    DISPATCH = "orchestration.dispatch"
    SWEEP = "orchestration.sweep"
    GENERATE_SPEC = "orchestration.generate_spec"
    # Defined in workers/tasks.py; the name is kept from when it lived in orchestration, so
    # messages queued before an upgrade still run.
    START_WORKER = "orchestration.start_worker"
    STOP_CONTAINER = "workers.stop_container"
    FAKE_RUN = "workers.fake_run"
    # One node's container observation and reconciler, sent to that node's queue.
    OBSERVE_CONTAINERS = "workers.observe_containers"
    # Defined in intake/tasks.py: deliver one outbox row (a GitHub call); poll the watched
    # repositories for labelled issues and pull requests.
    GITHUB_DELIVER = "intake.deliver"
    INTAKE_POLL = "intake.poll"


# The fake runtime's runs stand in for containers, which take no Celery process: on a shared
# queue they yield to the control plane's messages (claims, starts, stops). Redis serves a
# queue's priority 0 (the default) before 9; the embedded broker ignores it.
_YIELDING = frozenset({TaskName.FAKE_RUN})
YIELDING_PRIORITY = 9


def send(name: str, *args: str, queue: str | None = None) -> None:
    """Send the message now, carrying the current request id (if any) as a message header.
    ``queue``: a node's own queue (``whim.node.<name>``) for a task only that node's worker may
    run (its containers); None: the default queue. Raises when the broker is unreachable
    (callers decide)."""
    rid = requestid.current()
    headers = {requestid.TASK_HEADER: rid} if rid else None
    options: dict[str, Any] = {"priority": YIELDING_PRIORITY} if name in _YIELDING else {}
    if queue:
        options["queue"] = queue
    # Without a queue: the default one (CELERY_TASK_DEFAULT_QUEUE), the message as before nodes.
    current_app.send_task(name, args=list(args), headers=headers, **options)


def send_on_commit(name: str, *args: str, queue: str | None = None) -> None:
    """Send the message after the current transaction commits (at once outside one).

    A broker failure then is logged, not raised: the level-triggered sweep re-sends it. The
    message carries the request id current now, whenever the commit comes. A dispatch nudge
    is coalesced (``dispatch_nudge``).
    """
    rid = requestid.current()

    def after_commit() -> None:
        try:
            with requestid.bound(rid):
                if name == TaskName.DISPATCH and not args and queue is None:
                    dispatch_nudge()
                else:
                    send(name, *args, queue=queue)
        except Exception as exc:  # broker down: the level-triggered sweep re-sends it
            logger.warning(
                "could not enqueue %s (%s); a sweep will retry", name, type(exc).__name__
            )

    transaction.on_commit(after_commit)


def broker_reachable() -> bool:
    """Whether the broker answers within a couple of seconds (status pages, checks)."""
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


# --- Coalesced dispatch nudges ---
# One dispatch run claims up to DISPATCH_BATCH (100) items, so a burst of submissions needs
# one run, not one per item. A nudge sends a run only when none is pending: the flag (a Redis
# key with a short expiry, per queue) is set by the nudge that sends the run and cleared by
# that run before it claims — an item committed before the clear is seen by the claim, one
# committed after it sends a new run. A lost message leaves the flag set for at most
# DISPATCH_PENDING_SECONDS, and the beat's level-triggered dispatch tick (LOOP_INTERVAL) runs
# whatever is claimable regardless: nothing is lost, at worst delayed by a tick.
DISPATCH_PENDING_SECONDS = 2.0


def _pending_key() -> str:
    return f"whim:dispatch-pending:{current_app.conf.task_default_queue}"


_redis_clients: dict[str, Any] = {}


def redis_client() -> Any:
    """A client of the broker's Redis, or None (the embedded broker: no coalescing)."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    client = _redis_clients.get(url)
    if client is None:
        import redis  # only with a Redis broker (the embedded stack has no server)

        client = _redis_clients[url] = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )
    return client


def dispatch_nudge() -> bool:
    """Send a dispatch run unless one is pending already; returns whether one was sent.
    Raises when the broker is unreachable (as ``send``); Redis errors on the flag send."""
    client = redis_client()
    if client is not None:
        try:
            ttl_ms = int(DISPATCH_PENDING_SECONDS * 1000)
            if not client.set(_pending_key(), "1", nx=True, px=ttl_ms):
                return False
        except Exception as exc:  # the flag is an optimisation: send the run anyway
            logger.info("dispatch flag unavailable (%s); sending the run", type(exc).__name__)
    send(TaskName.DISPATCH)
    return True


def dispatch_pending_clear() -> None:
    """A dispatch run starts: later commits must send a new run (call before claiming)."""
    client = redis_client()
    if client is None:
        return
    try:
        client.delete(_pending_key())
    except Exception:  # then it expires on its own within DISPATCH_PENDING_SECONDS
        logger.info("could not clear the dispatch flag; it expires on its own")
