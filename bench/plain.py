"""The plain-Celery baselines: a Celery app with no Django, on the same Redis as Whim's.

``celery -A bench.plain worker`` (started by ``bench.procs.celery_worker(app="bench.plain")``)
runs two tasks that do nothing but record when they ran, in a Redis list:

- ``plain.hop1(t0, key)`` sends ``plain.hop2`` — the two-hop chain that pickup is measured
  against (Whim's pickup is two hops: the dispatch run, then the start);
- ``plain.noop(key)`` — the no-op task that dispatch throughput is measured against.

The worker options that change throughput are Whim's own (JSON, late acks, prefetch 1), so
the baseline differs from Whim only in what the tasks do.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

# Not the current app: the bench process also publishes Whim's nudges (``current_app``).
app = Celery(
    "plain",
    broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
    set_as_current=False,
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ.get("PLAIN_QUEUE", "plain"),
)

_redis: Any = None


def _client() -> Any:
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(app.conf.broker_url)
    return _redis


@app.task(name="plain.hop1")
def hop1(t0: float, key: str) -> None:
    hop2.delay(t0, key)


@app.task(name="plain.hop2")
def hop2(t0: float, key: str) -> None:
    _client().rpush(key, repr(time.time() - t0))


@app.task(name="plain.noop")
def noop(key: str) -> None:
    _client().rpush(key, repr(time.time()))
