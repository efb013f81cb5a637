"""`make run` (scripts/run.sh), the README's run command, as a user meets it: it prints the
URL, an admin login and an API key; the web app, a Celery worker, beat and Flower (behind
basic auth) all answer; a submitted item runs to completion; Ctrl-C stops everything."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from orchestration.models import WorkItem, WorkItemStatus
from tests.conftest import ROOT, free_port
from tests.helpers import wait_for

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

FLOWER_AUTH = "ops:flower-pw-1234"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, *, headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    """(status, headers or parsed JSON) without following redirects."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            raw = resp.read()
            is_json = resp.headers.get_content_type() == "application/json"
            return resp.status, json.loads(raw) if is_json else resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def answers(url: str) -> bool:
    try:
        fetch(url)
    except OSError:
        return False
    return True


def test_make_run_starts_everything_prints_its_logins_and_stops_on_ctrl_c(
    celery_workers: Any,
) -> None:
    env = celery_workers().env  # the test database, Redis and a queue of this test's own
    port, flower_port = free_port(), free_port()
    env = {
        **env,
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "FLOWER_BASIC_AUTH": FLOWER_AUTH,
        "WHIM_RUNTIME": "fake",
        "WORKER_CONCURRENCY": "2",
        "LOOP_INTERVAL": "1",
        "STOP_TIMEOUT": "20",
    }
    log = ROOT / "test-artifacts" / f"make-run-{port}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "wb") as out:
        run = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run.sh")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    flower = f"http://127.0.0.1:{flower_port}"
    try:
        wait_for(
            lambda: "Ctrl-C stops everything." in log.read_text() or run.poll() is not None,
            timeout=240,
            what="make run to start",
        )
        text = log.read_text()
        assert run.poll() is None, text[-3000:]
        assert f"Whim:   {base}/" in text
        assert re.search(r"Admin login (created: admin / \S+|exists)", text), text[-3000:]
        key_line = re.search(r"API key for this run: (whim_\S+)", text)
        assert key_line is not None, text[-3000:]
        key = key_line.group(1)

        wait_for(lambda: answers(f"{base}/health"), timeout=30, what="the web app")
        assert fetch(f"{base}/health")[0] == 200
        status, headers = fetch(f"{base}/")
        assert status == 302 and headers["Location"].startswith("/accounts/login/")

        wait_for(lambda: answers(f"{flower}/"), timeout=60, what="Flower")
        assert fetch(f"{flower}/")[0] == 401  # never open without the login
        basic = base64.b64encode(FLOWER_AUTH.encode()).decode()
        assert fetch(f"{flower}/", headers={"Authorization": f"Basic {basic}"})[0] == 200

        status, body = fetch(
            f"{base}/api/work",
            headers={"X-API-Key": key},
            body={"repo": "acme/widgets", "spec": "# Through make run", "metadata": {}},
        )
        assert status == 201, body
        wait_for(
            lambda: WorkItem.objects.filter(
                pk=body["id"], status=WorkItemStatus.COMPLETED
            ).exists(),
            timeout=90,
            what="the item to complete (worker and beat at work)",
        )
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        code = run.wait(timeout=60)

    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "received SIGINT: stopping web, worker, beat and flower" in text
    assert not answers(f"{base}/health") and not answers(f"{flower}/")
