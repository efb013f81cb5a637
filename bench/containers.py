"""Container start overhead: an item committed → its attempt's container started (the Docker
runtime, through the dispatch run and the start task), against bare docker-py
``containers.create`` + ``start`` of the same image with the same options (every hardening
option: ``DockerRuntime.container_options``). Target: p50 ≤ 1.15x.

Each started container is removed at once (the harness inside never gets a web server to
call back: only the start is measured). Runs on a network and instance of its own
(``bench/dockerenv.py``), removed at the end.
"""

from __future__ import annotations

import functools
import time
import uuid
from unittest import mock

from django.conf import settings

from bench import procs
from bench.core import Benchmark, Context, Figure, Target, interleave
from bench.dockerenv import DockerInstance
from bench.pickup import LIMITS, started_times, submit_items, wait_for
from orchestration.models import Worker, WorkItem


def containers(ctx: Context) -> list[Figure]:
    ctx.reset_db()
    docker_env = DockerInstance(ctx)
    try:
        procs.celery_worker(ctx, concurrency=2, **docker_env.env)
        per_round = ctx.size(6, 2)

        def whim() -> list[float]:
            out = []
            for _ in range(per_round):
                ids, t0 = submit_items(1)
                got = wait_for(functools.partial(started_times, ids), 120, "the container start")
                out.append((got[0] - t0) * 1000)
                worker = Worker.objects.get(work_item_id=ids[0])
                docker_env.remove(worker.container_id)
            return out

        def bare() -> list[float]:
            out = []
            for _ in range(per_round):
                item = WorkItem(pk=uuid.uuid4(), repo="acme/bare", spec="# x")
                worker = Worker(pk=uuid.uuid4(), work_item=item)
                options, _ = docker_env.runtime.container_options(
                    worker=worker, work_item=item, token="x" * 64
                )
                options.pop("detach")
                started = time.perf_counter()
                container = docker_env.client.containers.create(**options)
                container.start()
                out.append((time.perf_counter() - started) * 1000)
                docker_env.remove(str(container.id))
            return out

        with mock.patch.multiple(settings, **LIMITS):
            whim(), bare()  # warm both (the image's layers, the worker's Docker client)
            a, b = interleave(ctx, a=whim, b=bare)
    finally:
        procs.stop(ctx.processes)
        ctx.processes.clear()
        docker_env.close()
        ctx.reset_db()
    return [
        Figure(
            "container start: committed → container started",
            "ms",
            a,
            b,
            "bare docker-py create+start, same image and options",
            targets=(Target("p50", max_ratio=1.15),),
        )
    ]


BENCHMARKS = [
    Benchmark("containers", "submit → container started vs bare docker-py", containers, ("docker",))
]
