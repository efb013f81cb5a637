"""Single-machine mode: no DATABASE_URL or REDIS_URL, so SQLite and a filesystem broker.

One smoke test: the stack starts (web, Celery worker with beat) and runs a work item.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, stop_processes
from tests.helpers import wait_for

pytestmark = pytest.mark.embedded


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_embedded_stack_starts_and_runs_a_work_item(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "API_KEY", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        WHIM_RUN_DIR=str(tmp_path), COOLDOWN_SECONDS="0", LOOP_INTERVAL="1", WHIM_RUNTIME="fake"
    )
    python = sys.executable
    migrate = subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "whim.sqlite3").exists()

    port = free_port()
    procs = []
    log = (tmp_path / "stack.log").open("wb")
    try:
        procs.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "whim",
                    "worker",
                    "-B",
                    "-l",
                    "INFO",
                    "-c",
                    "2",
                    "-s",
                    str(tmp_path / "beat-schedule"),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        procs.append(
            subprocess.Popen(
                [python, "-m", "gunicorn", "whim.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        base = f"http://127.0.0.1:{port}"

        def web_up() -> bool:
            try:
                return http("GET", f"{base}/health")[0] == 200
            except OSError:
                return False

        wait_for(web_up, timeout=60, interval=0.2, what="the web server")
        status, created = http(
            "POST",
            f"{base}/api/work",
            {
                "repo": "acme/widgets",
                "spec": "# Embedded smoke",
                "metadata": {"mockSeconds": 0.2},
            },
        )
        assert status == 201, created

        def completed() -> bool:
            code, item = http("GET", f"{base}/api/work/{created['id']}")
            return code == 200 and item["status"] == "completed"

        wait_for(completed, timeout=90, interval=0.5, what="the work item to complete")
    finally:
        stop_processes(procs)
        log.close()
