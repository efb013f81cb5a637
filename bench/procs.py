"""Processes a benchmark runs against: gunicorn and Celery workers on the scratch stores, and
their memory (RSS of a process tree). Everything started here is stopped by the runner."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.core import ROOT, Context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    what: str, ready: object, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _spawn(
    ctx: Context, name: str, args: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    ctx.artifacts.mkdir(parents=True, exist_ok=True)
    log = ctx.artifacts / f"{name}-{len(ctx.processes)}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    ctx.processes.append(proc)
    return proc, log


def celery_worker(
    ctx: Context,
    *,
    app: str = "whim",
    concurrency: int = 2,
    pool: str = "prefork",
    queue: str | None = None,
    **env: str,
) -> subprocess.Popen[bytes]:
    """``celery -A <app> worker`` on this run's queue (or ``queue``); returns once ready."""
    args = [
        sys.executable, "-m", "celery", "-A", app, "worker", "-l", "INFO",
        "-Q", queue or ctx.queue, "-c", str(concurrency), "-P", pool,
        "-n", f"bench{len(ctx.processes)}@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    proc, log = _spawn(ctx, f"celery-{app}", args, ctx.env(**env))
    _wait("celery worker", lambda: b"ready." in log.read_bytes(), proc, log, 90)
    return proc


def gunicorn(
    ctx: Context, *, workers: int = 2, settings_module: str = "whim.settings", **env: str
) -> tuple[subprocess.Popen[bytes], int]:
    """gunicorn (sync workers) on a free loopback port; returns once ``/health`` answers."""
    port = free_port()
    args = [
        sys.executable, "-m", "gunicorn", "whim.wsgi", "-w", str(workers),
        "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--backlog", "256",
    ]  # fmt: skip
    proc, log = _spawn(
        ctx, "gunicorn", args, ctx.env(DJANGO_SETTINGS_MODULE=settings_module, **env)
    )

    def answers() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            return conn.getresponse().status < 500
        except OSError:
            return False

    _wait("gunicorn", answers, proc, log, 60)
    return proc, port


def stop(procs: list[subprocess.Popen[bytes]], grace: float = 15) -> None:
    """SIGTERM each process group still running, wait, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    out = [pid]
    for p in out:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                out.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process tree in MB (0 for what has exited)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
