"""This host's node, as its Celery worker keeps it: the queue, the registration, the heartbeat.

Connected to Celery's worker signals only, so ``celery -A whim worker`` (the command
``make run`` and compose use) needs no ``-Q``, and neither beat nor the web ever registers a
node:

1. ``celeryd_after_setup``: the worker consumes ``whim.node.<WHIM_NODE>`` besides its
   default queue (the node-bound tasks: start, stop, fake run, container observation).
2. ``worker_ready``: the node is registered (made, or updated and back from lost), and its
   own container observation is sent, so a node coming back removes what its lost attempts
   left behind at once.
3. A daemon thread heartbeats the node every NODE_HEARTBEAT_INTERVAL, independent of beat
   and of the task pool (a pool busy with long tasks still heartbeats); a row gone or
   lost is registered again. ``worker_shutdown`` stops it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connection

from orchestration.errors import NotFound
from orchestration.fleet import node_queue
from orchestration.nudge import TaskName, send
from orchestration.services.nodes import node_heartbeat, node_register
from orchestration.services.placement import node_capacity, node_labels_setting
from workers.runtime import runtime_info

logger = logging.getLogger(__name__)

_stop = threading.Event()
_thread: list[threading.Thread] = []


@celeryd_after_setup.connect
def consume_node_queue(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """Step 1: this worker also consumes its node's own queue. Only Whim's own app: another
    Celery app started in a process that imported this module (the bench's plain baseline)
    would take the node's "start worker" messages and drop them as unknown tasks."""
    if instance is not None and _whim_app(instance.app):
        instance.app.amqp.queues.select_add(node_queue(settings.WHIM_NODE))


def _whim_app(app: Any) -> bool:
    return getattr(app, "main", None) == "whim"


def register() -> None:
    """Register this node with what this worker is now."""
    node_register(
        name=settings.WHIM_NODE,
        runtime=runtime_info()["name"],
        capacity=node_capacity(),
        labels=node_labels_setting(),
    )


@worker_ready.connect
def node_start(sender: Any = None, **kwargs: Any) -> None:
    """Step 2 and the start of step 3 (Whim's own app only, as step 1)."""
    if sender is not None and not _whim_app(getattr(sender, "app", None)):
        return
    try:
        register()
        send(TaskName.OBSERVE_CONTAINERS, settings.WHIM_NODE, queue=node_queue(settings.WHIM_NODE))
    except Exception:  # the database or broker is down: the heartbeat thread registers later
        logger.exception("could not register node %s at start", settings.WHIM_NODE)
    finally:
        connection.close()  # this thread's; the pool's children open their own
    if not _thread:
        _stop.clear()
        thread = threading.Thread(target=_beat, name="whim-node-heartbeat", daemon=True)
        _thread.append(thread)
        thread.start()


@worker_shutdown.connect
def node_stop(sender: Any = None, **kwargs: Any) -> None:
    _stop.set()


def heartbeat_once() -> None:
    """One heartbeat; the row gone or the node lost: registered again."""
    try:
        node_heartbeat(name=settings.WHIM_NODE)
    except NotFound:
        register()


def _beat() -> None:
    while not _stop.wait(settings.NODE_HEARTBEAT_INTERVAL):
        try:
            close_old_connections()
            heartbeat_once()
        except Exception as exc:  # a database blip: the next beat tries again
            logger.warning("node %s heartbeat failed: %s", settings.WHIM_NODE, exc)
            connection.close()
    connection.close()
