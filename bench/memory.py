"""Memory of the web and Celery processes while a container prints 1 GB of logs.

A running attempt's container (the worker image, labelled as Whim's, on the bench's own
network: ``bench/dockerenv.py``) prints lines of 100 bytes, 1 GB in all, then exits.
Meanwhile the bench reads its logs through ``GET /api/workers/<id>/logs`` (gunicorn) five
times a second and sends the containers sweep (Celery) every second; when the container
exits, the sweep keeps its last lines and ends the attempt. RSS of each process tree
(gunicorn with its workers, the Celery worker with its pool) is sampled every 0.2 s.

The baseline is the same processes doing the same for as long before the printing, with a
container that prints nothing (another attempt's): a figure's ratio is the largest RSS
while printing over the largest before. Target: ≤ 1.10x (flat within 10 %).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable

from django.conf import settings

from bench import procs
from bench.core import Benchmark, Context, Figure, Target
from bench.dockerenv import DockerInstance
from bench.heartbeats import running_workers
from orchestration.models import Worker
from orchestration.services.apikeys import apikey_create

LINE = 100  # bytes a line, newline included


def memory(ctx: Context) -> list[Figure]:
    ctx.reset_db()
    total = ctx.size(1 << 30, 16 << 20)
    docker_env = DockerInstance(ctx)
    try:
        web, port = procs.gunicorn(ctx, workers=2, **docker_env.env)
        celery = procs.celery_worker(ctx, concurrency=2, **docker_env.env)
        _, key = apikey_create(name="bench")
        (quiet_worker,) = running_workers(1)
        from celery import current_app

        def container(command: str, worker_id: str) -> str:
            made = docker_env.client.containers.run(
                settings.WORKER_IMAGE,
                entrypoint=["sh", "-c", command],
                user="1000:1000",
                detach=True,
                network=docker_env.network,
                labels={
                    "whim.instance": docker_env.instance,
                    "whim.worker": worker_id,
                },
            )
            Worker.objects.filter(pk=worker_id).update(container_id=made.id)
            return str(made.id)

        def phase(until: Callable[[], bool], worker_id: str) -> dict[str, list[float]]:
            samples: dict[str, list[float]] = {"web": [], "celery": []}
            stop = threading.Event()
            failures: list[int] = []

            def read_logs() -> None:
                while not stop.is_set():
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    conn.request(
                        "GET",
                        f"/api/workers/{worker_id}/logs?lines=200",
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    response = conn.getresponse()
                    response.read()
                    conn.close()
                    if response.status != 200:
                        failures.append(response.status)
                    stop.wait(0.2)

            reader = threading.Thread(target=read_logs)
            reader.start()
            last_sweep = 0.0
            try:
                while not until():
                    if time.monotonic() - last_sweep >= 1:
                        current_app.send_task("orchestration.sweep", args=["containers"])
                        last_sweep = time.monotonic()
                    samples["web"].append(procs.rss_mb(web.pid))
                    samples["celery"].append(procs.rss_mb(celery.pid))
                    time.sleep(0.2)
            finally:
                stop.set()
                reader.join()
            if failures:
                raise RuntimeError(f"{len(failures)} log reads failed: {failures[:5]}")
            return samples

        quiet_seconds = 5.0 if ctx.smoke else 20.0
        quiet = container("sleep 600", quiet_worker)
        deadline = time.monotonic() + quiet_seconds
        before = phase(lambda: time.monotonic() > deadline, quiet_worker)
        docker_env.remove(quiet)
        lines = total // LINE
        # Made only now: the sweeps above would have ended an attempt with no container yet.
        (worker_id,) = running_workers(1)
        loud = container(f"yes '{'x' * (LINE - 1)}' | head -n {lines}", worker_id)
        started = time.monotonic()

        def over() -> bool:
            done = not Worker.objects.filter(pk=worker_id, status__in=Worker.ACTIVE).exists()
            return done or time.monotonic() - started > 900

        during = phase(over, worker_id)
        took = time.monotonic() - started
        status = Worker.objects.get(pk=worker_id).status
        docker_env.remove(loud)
    finally:
        procs.stop(ctx.processes)
        ctx.processes.clear()
        docker_env.close()
        ctx.reset_db()
    note = f"{total / (1 << 20):,.0f} MB printed; attempt {status} after {took:.0f} s"
    return [
        Figure(
            f"RSS of {name} while a container prints {total >> 20} MB",
            "MB",
            during[name],
            before[name],
            "the same processes and requests before the printing",
            targets=(Target("max", max_ratio=1.10),),
            note=note,
        )
        for name in ("web", "celery")
    ]


BENCHMARKS = [
    Benchmark("memory", "web and Celery RSS while a container prints 1 GB", memory, ("docker",))
]
