"""Heartbeat callbacks under 8 concurrent clients, on a real gunicorn, against two baselines
served by the same gunicorn (``bench/web_settings.py``, the bench's URLconf):

- a naive view that does one ``UPDATE`` of the heartbeat (``bench/web_urls.py``): the rate
  target is ≥ 1.5x its requests/s;
- ``/health``: the p99 target is ≤ 2x its p99.

Each client is a thread with its own running worker (and token), sending
``POST /api/worker/<id>/heartbeat`` one after another for a fixed time; a new connection
per request (gunicorn's sync workers close it). The clients run in this process, the same
for all three sides.

The beats are coalesced (HEARTBEAT_COALESCE, the default): a running attempt's beat is
answered from Redis and written by the "beats" sweep. So the sweep runs here too, on the same
machine, every FLUSH_SECONDS (harsher than its 30 s default) while the heartbeat side runs,
and the side ends with a last pass: what it measures includes writing every beat down.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from unittest import mock

from django.conf import settings
from django.db import connection

from bench import procs
from bench.core import Benchmark, Context, Figure, Target, interleave, stat
from orchestration.services.dispatch import dispatch_claim_one, worker_token
from orchestration.services.sweeps import sweep_beats
from orchestration.services.work_items import work_item_submit
from orchestration.services.workers import worker_mark_started

CLIENTS = 8
GUNICORN_WORKERS = 2  # sync workers, one per core
FLUSH_SECONDS = 1.0


Request = Callable[[int, int], tuple[str, str, bytes, dict[str, str]]]


def load(port: int, seconds: float, request: Request) -> tuple[float, list[float]]:
    """CLIENTS threads send requests for ``seconds``; (requests/s, latencies in ms)."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    barrier = threading.Barrier(CLIENTS + 1)

    def client(index: int) -> None:
        barrier.wait()
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            method, path, body, headers = request(index, n)
            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            latencies[index].append((time.perf_counter() - t) * 1000)
            if response.status != 200:
                errors.append(f"{path}: {response.status}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    flat = [x for side in latencies for x in side]
    return len(flat) / took, flat


@contextlib.contextmanager
def flushing() -> Iterator[None]:
    """The "beats" sweep every FLUSH_SECONDS in a thread, and a last pass at the end (its
    time counted: the side's rate is requests over the whole span)."""
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.wait(FLUSH_SECONDS):
                sweep_beats()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sweep_beats()


def running_workers(count: int) -> list[str]:
    """``count`` running workers (claimed and started, no message sent anywhere)."""
    out = []
    with (
        mock.patch("celery.Celery.send_task", lambda *a, **kw: None),
        mock.patch.multiple(
            settings, MAX_WORKERS=10**9, DAILY_BUDGET=10**9, COOLDOWN_SECONDS=0, MAX_QUEUED=10**9
        ),
    ):
        for i in range(count):
            work_item_submit(repo=f"acme/hb{i}", spec="# x")
            worker_id = dispatch_claim_one()
            assert worker_id is not None
            worker_mark_started(worker_id=worker_id, container_id=f"fake-{worker_id}")
            out.append(str(worker_id))
    return out


def heartbeats(ctx: Context) -> list[Figure]:
    ctx.reset_db()
    workers = running_workers(CLIENTS)
    tokens = [worker_token(w) for w in workers]
    _, port = procs.gunicorn(ctx, workers=GUNICORN_WORKERS, settings_module="bench.web_settings")
    seconds = 2.0 if ctx.smoke else 8.0
    json_headers = {"Content-Type": "application/json"}

    def beat(i: int, n: int) -> tuple[str, str, bytes, dict[str, str]]:
        body = json.dumps({"iteration": n, "tokensIn": n, "tokensOut": n}).encode()
        headers = {**json_headers, "Authorization": f"Bearer {tokens[i]}"}
        return "POST", f"/api/worker/{workers[i]}/heartbeat", body, headers

    def naive(i: int, n: int) -> tuple[str, str, bytes, dict[str, str]]:
        return "POST", f"/bench/naive-heartbeat/{workers[i]}", b"{}", json_headers

    def health(i: int, n: int) -> tuple[str, str, bytes, dict[str, str]]:
        return "GET", "/health", b"", {}

    results: dict[str, list[tuple[float, list[float]]]] = {"beat": [], "naive": [], "health": []}

    def side(name: str, request: Request) -> Callable[[], float]:
        def run() -> float:
            if name != "beat":
                got = load(port, seconds, request)
            else:  # the rate over the load and the last sweep pass after it
                started = time.perf_counter()
                with flushing():
                    _, latencies = load(port, seconds, request)
                got = (len(latencies) / (time.perf_counter() - started), latencies)
            results[name].append(got)
            return got[0]

        return run

    load(port, 1.0, beat)  # warm the gunicorn workers (imports, connections)
    load(port, 1.0, naive)
    rate, naive_rate = interleave(ctx, a=side("beat", beat), b=side("naive", naive))
    interleave(ctx, a=side("beat", beat), b=side("health", health), rounds=max(2, ctx.rounds - 2))
    ctx.reset_db()

    def pooled(name: str) -> list[float]:
        return [x for _, lat in results[name] for x in lat]

    return [
        Figure(
            f"heartbeats, {CLIENTS} clients: rate",
            "req/s",
            rate,
            naive_rate,
            "a one-UPDATE Django view, same gunicorn (bench URLconf)",
            higher_is_better=True,
            targets=(Target("p50", min_ratio=1.5),),
        ),
        Figure(
            f"heartbeats, {CLIENTS} clients: latency",
            "ms",
            pooled("beat"),
            pooled("health"),
            "/health, same gunicorn",
            targets=(Target("p99", max_ratio=2),),
            note=f"naive view p99 {stat(pooled('naive'), 'p99'):.1f} ms",
        ),
    ]


BENCHMARKS = [Benchmark("heartbeats", "heartbeat callbacks, 8 clients, real gunicorn", heartbeats)]
