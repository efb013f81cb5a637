"""``python -m bench [--smoke] [--only NAME ...] [--json PATH]`` — run the benchmark suite.

The run creates a scratch PostgreSQL database (``BENCH_DATABASE_NAME``, default
``whim_bench``) and uses a scratch Redis database (``BENCH_REDIS_URL``, default the
``REDIS_URL`` server's db 14), empties both when it starts and drops them when it ends; it
never touches the ``whim`` database. How a module plugs in: bench/core.py's docstring.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
import uuid
from pathlib import Path

# One line per benchmark module (bench/core.py: "Plug-in interface").
MODULES = (
    "bench.claims",
    "bench.pickup",
    "bench.heartbeats",
    "bench.containers",
    "bench.memory",
    "bench.pages",
    "bench.nodes",
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, targets not enforced")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="benchmarks by name")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    parser.add_argument("--rounds", type=int, default=None, help="A/B rounds (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit("bench: set DATABASE_URL and REDIS_URL (make bench does)")
    from bench.core import with_db

    database = os.environ.get("BENCH_DATABASE_NAME", "whim_bench")
    redis_url = os.environ.get("BENCH_REDIS_URL") or with_db(os.environ["REDIS_URL"], 14)
    if redis_url == os.environ["REDIS_URL"]:
        sys.exit("bench: BENCH_REDIS_URL must not be REDIS_URL (the run empties it)")
    queue = f"whim-bench-{uuid.uuid4().hex[:8]}"
    # This process publishes to the scratch Redis and queue, and its ORM uses the scratch db.
    os.environ.update(
        DJANGO_SETTINGS_MODULE="whim.settings",
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        DATABASE_TEST_NAME=database,
        REDIS_URL=redis_url,
        CELERY_QUEUE=queue,
    )
    import django

    django.setup()
    from django.db import connection

    from bench import core, procs

    benchmarks = []
    for name in MODULES:
        module = importlib.import_module(name)
        for bench in module.BENCHMARKS:
            if not args.only or bench.name in args.only or name.split(".")[-1] in args.only:
                benchmarks.append(bench)
    if not benchmarks:
        sys.exit(f"bench: nothing matches {args.only}")
    old_name = connection.settings_dict["NAME"]
    created = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    ctx = core.Context(
        smoke=args.smoke,
        database=created,
        redis_url=redis_url,
        queue=queue,
        database_url=core.with_db(os.environ["DATABASE_URL"], created),
        rounds=args.rounds or (2 if args.smoke else 5),
    )
    ctx.redis().flushdb()
    print(f"bench: database {created}, redis {redis_url}, {len(benchmarks)} benchmark(s)")
    figures: list[core.Figure] = []
    failed = False
    started = time.monotonic()
    try:
        for bench in benchmarks:
            missing = [n for n in bench.needs if not _available(n)]
            if missing:
                figures.append(
                    core.Figure(bench.name, "", [], skipped=f"needs {missing}", bench=bench.name)
                )
                continue
            print(f"\n== {bench.name}: {bench.description}", flush=True)
            t0 = time.monotonic()
            try:
                got = bench.run(ctx)
            except Exception:
                traceback.print_exc()
                failed = True
                got = [core.Figure(bench.name, "", [], skipped="raised (see above)")]
            finally:
                procs.stop(ctx.processes)
                ctx.processes.clear()
            for fig in got:
                fig.bench = bench.name
            print(core.table(got, smoke=args.smoke))
            print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
            figures.extend(got)
    finally:
        procs.stop(ctx.processes)
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        ctx.redis().flushdb()
    took = time.monotonic() - started
    print("\n" + core.table(figures, smoke=args.smoke))
    out = args.json or core.default_json_path()
    core.write_json(out, figures=figures, smoke=args.smoke, took=took)
    print(f"\nfigures written to {out} ({took:.0f} s)")
    return 1 if failed else 0


def _available(need: str) -> bool:
    if need == "docker":
        try:
            import docker

            docker.from_env().ping()
            return True
        except Exception:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
