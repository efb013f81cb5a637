"""The ``local`` runtime end to end on real processes: API → PostgreSQL → Celery worker and
beat → the harness as a host process (its own process group, rlimits, a workspace under
WHIM_RUN_DIR) → callbacks to gunicorn → a push to a local bare repository.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemStatus
from orchestration.services.apikeys import apikey_create
from tests.conftest import ROOT, free_port, start_web, stop_processes
from tests.docker_stack import git, make_bare_repo
from tests.helpers import wait_for
from workers.local_runtime import LocalRuntime
from workers.services import containers_observe

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

REPO = "acme/widgets"


@dataclasses.dataclass
class LocalStack:
    base_url: str
    api_key: str
    repos: Path
    run_dir: Path

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(body or {}).encode() if method == "POST" else None,
            method=method,
            headers={"Content-Type": "application/json", "X-API-Key": self.api_key},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())

    def submit(self, **body: Any) -> uuid.UUID:
        status, answer = self.request("POST", "/api/work", {"repo": REPO, **body})
        assert status == 201, answer
        return uuid.UUID(answer["id"])

    def home(self, worker_id: object) -> Path:
        return self.run_dir / "local-workers" / str(worker_id)

    def branch_head(self, branch: str) -> str:
        return git(
            "--git-dir", str(self.repos / f"{REPO}.git"), "rev-parse", f"refs/heads/{branch}"
        )

    def show(self, ref: str, path: str) -> str:
        return git("--git-dir", str(self.repos / f"{REPO}.git"), "show", f"{ref}:{path}")


@pytest.fixture
def local_stack(celery_workers: Any, settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``local_stack(**env)`` starts gunicorn and a Celery worker with beat on the
    local runtime, a bare repo ``acme/widgets``, and returns a LocalStack."""
    procs: list[subprocess.Popen[bytes]] = []
    made: list[Any] = []
    run_dir = tmp_path / "run"
    repos = tmp_path / "repos"

    def make(**env: str) -> LocalStack:
        port = free_port()
        overrides = {
            "WHIM_RUNTIME": "local",
            "WHIM_INSTANCE": f"local-{uuid.uuid4().hex[:8]}",
            "PORT": str(port),
            "WHIM_CALLBACK_URL": f"http://127.0.0.1:{port}",
            "ALLOWED_HOSTS": "*",
            "WHIM_GIT_BASE_URL": f"file://{repos}/",
            "LOOP_INTERVAL": "1",
            "HEARTBEAT_INTERVAL": "1",
            "SWEEP_BEATS_EVERY": "1",  # coalesced heartbeats written each second
            "RETRY_DELAYS": "1,1,1",
            "WHIM_RUN_DIR": str(run_dir),
            # Every process must derive the same worker tokens.
            "SECRET_KEY": f"local-runtime-test-{uuid.uuid4().hex}",
            **env,
        }
        make_bare_repo(repos, REPO)
        workers = celery_workers(**overrides)
        _, key = apikey_create(name="local-e2e")
        procs.append(
            start_web(
                env={**workers.env, **overrides},
                binds=[f"127.0.0.1:{port}"],
                log=ROOT / "test-artifacts" / f"{workers.queue}-web.log",
            )
        )
        workers.start(concurrency=4, beat=True)
        made.append(workers)
        return LocalStack(f"http://127.0.0.1:{port}", key, repos, run_dir)

    yield make
    # Celery first: a retry falling due meanwhile would start a harness nobody stops.
    for workers in made:
        workers.stop_all()
    stop_processes(procs, grace=15)
    # Whatever a failed test left running of the harness processes.
    for pid in processes_with_env(f"WHIM_GIT_BASE_URL=file://{repos}/"):
        with_pid_gone(pid)


# --- /proc helpers -------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, …)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _live_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X"):
                yield int(entry.name)


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid: int) -> set[int]:
    """Live processes whose process group is ``pgid``."""
    return {pid for pid in _live_pids() if (_stat(pid) or ["", "", ""])[2] == str(pgid)}


def processes_with_env(entry: str) -> set[int]:
    """Live processes whose environment holds ``entry`` exactly (NAME=value)."""
    needle = entry.encode()
    found = set()
    for pid in _live_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.add(pid)
    return found


def worker_processes(worker_id: object) -> set[int]:
    """Every live process of one attempt, wherever it went: they all carry its WORKER_ID."""
    return processes_with_env(f"WORKER_ID={worker_id}")


def with_pid_gone(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- waiting -------------------------------------------------------------------------------


def finished(item_id: uuid.UUID) -> WorkItem | None:
    item = WorkItem.objects.get(pk=item_id)
    return item if item.status in WorkItem.TERMINAL else None


def running_worker(item_id: uuid.UUID) -> Worker | None:
    return Worker.objects.filter(
        work_item_id=item_id, status=WorkerStatus.RUNNING, registered_at__isnull=False
    ).first()


def harness_pid(stack: LocalStack, worker: Worker) -> int:
    """The pid (= process group) the runtime recorded for the attempt."""
    return int((stack.home(worker.pk) / "pid").read_text())


# --- tests ---------------------------------------------------------------------------------


def test_a_mock_run_pushes_its_commit_completes_and_leaves_nothing_behind(
    local_stack: Any,
) -> None:
    stack = local_stack()

    # Long enough to look at the running process before the mock finishes.
    item_id = stack.submit(spec="# Add widgets\n\nPlease.", metadata={"mockSeconds": 8})

    worker = wait_for(lambda: running_worker(item_id), timeout=60, what="a registered worker")
    assert worker.container_id == f"local-{worker.pk}"
    pid = harness_pid(stack, worker)
    assert alive(pid) and os.getpgid(pid) == pid  # a process group of its own
    assert worker_processes(worker.pk), "the harness does not carry its WORKER_ID"
    assert (stack.home(worker.pk) / "workspace").is_dir()

    item = wait_for(lambda: finished(item_id), timeout=90, interval=0.2, what="the item")
    assert item.status == WorkItemStatus.COMPLETED, item.error
    head = stack.branch_head(item.branch)
    assert item.commit_sha == head
    assert f"whim mock change for {item_id}" in stack.show(head, "WHIM_MOCK.md")
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.COMPLETED

    wait_for(lambda: not group_members(pid), timeout=30, what="the process group to end")
    wait_for(lambda: not worker_processes(worker.pk), timeout=30, what="every process to end")
    wait_for(
        lambda: not stack.home(worker.pk).exists(),
        timeout=30,
        what="the observer to remove the workspace",
    )
    worker.refresh_from_db()
    assert "mock agent" in worker.log_tail


def test_a_failing_mock_is_retried_once_then_failed(local_stack: Any) -> None:
    stack = local_stack(MAX_RETRIES="1")

    item_id = stack.submit(spec="# Fail\n\nPlease.", metadata={"mock": "fail", "mockSeconds": 0.2})

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.2, what="the failure")
    assert item.status == WorkItemStatus.FAILED
    assert item.retry_count == 1
    assert item.error_category == "AGENT_ERROR", item.error
    attempts = Worker.objects.filter(work_item_id=item_id)
    assert attempts.count() == 2
    assert {(w.status, w.error_category) for w in attempts} == {
        (WorkerStatus.FAILED, "AGENT_ERROR")
    }
    homes = [stack.home(w.pk) for w in attempts]
    wait_for(
        lambda: not any(home.exists() for home in homes),
        timeout=30,
        what="each attempt's workspace removed",
    )
    for worker in attempts:
        assert not worker_processes(worker.pk)


def test_killing_a_running_local_worker_ends_its_whole_process_group(local_stack: Any) -> None:
    # Heartbeats far apart: the harness must not learn of the kill from a 409 and leave on
    # its own; what ends it here is the runtime's stop.
    stack = local_stack(HEARTBEAT_INTERVAL="120")
    item_id = stack.submit(spec="# Long\n\nPlease.", metadata={"mockSeconds": 300})
    worker = wait_for(lambda: running_worker(item_id), timeout=60, what="a registered worker")
    pid = harness_pid(stack, worker)
    members = wait_for(lambda: group_members(pid) if len(group_members(pid)) >= 2 else None)
    assert pid in members  # sh and the harness under it

    status, answer = stack.request(
        "POST", f"/api/workers/{worker.pk}/kill", {"reason": "runaway", "retry": False}
    )

    assert status == 200 and answer == {"success": True}
    wait_for(lambda: not alive(pid), timeout=20, what="the harness pid to die")
    wait_for(lambda: not group_members(pid), timeout=20, what="its process group to end")
    assert not worker_processes(worker.pk)
    item = WorkItem.objects.get(pk=item_id)
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == "KILLED"
    assert "runaway" in item.error
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    wait_for(lambda: not stack.home(worker.pk).exists(), timeout=30, what="workspace removed")


def test_a_local_worker_past_worker_timeout_is_killed_with_every_agent_process(
    local_stack: Any,
) -> None:
    # The command agent runs in a session of its own (the harness can kill it whole); a
    # SIGKILL of the harness's group alone would leave it running.
    stack = local_stack(
        WHIM_AGENT="command",
        WHIM_AGENT_COMMAND="sleep 600; echo late",
        WORKER_TIMEOUT="4",
        MAX_RETRIES="0",
    )
    item_id = stack.submit(spec="# Sleepy\n\nPlease.")
    worker = wait_for(lambda: running_worker(item_id), timeout=60, what="a registered worker")
    pid = harness_pid(stack, worker)
    wait_for(
        lambda: worker_processes(worker.pk) - group_members(pid),
        timeout=30,
        what="the agent to start in its own session",
    )

    wait_for(
        lambda: Worker.objects.get(pk=worker.pk).status != WorkerStatus.RUNNING,
        timeout=60,
        what="the timeout",
    )

    worker.refresh_from_db()
    assert worker.error_category == "TIMEOUT", worker.error
    wait_for(lambda: not alive(pid), timeout=20, what="the harness to die")
    wait_for(
        lambda: not worker_processes(worker.pk),
        timeout=20,
        what="every process of the attempt (the agent too) to end",
    )
    wait_for(lambda: not stack.home(worker.pk).exists(), timeout=30, what="workspace removed")


def test_the_observer_removes_only_this_instances_leftover_local_workers(
    settings: Any, tmp_path: Path
) -> None:
    settings.RUN_DIR = tmp_path / "run"
    settings.WHIM_INSTANCE = "mine"
    homes: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for instance in ("mine", "theirs"):
        worker_id = str(uuid.uuid4())  # no such worker here: a leftover, for "mine"
        home = homes[instance] = settings.RUN_DIR / "local-workers" / worker_id
        (home / "workspace").mkdir(parents=True)
        (home / "labels.json").write_text(
            json.dumps({"whim.worker": worker_id, "whim.instance": instance})
        )
        procs[instance] = subprocess.Popen(["sleep", "600"], start_new_session=True)
        (home / "pid").write_text(str(procs[instance].pid))
    try:
        counts = containers_observe(runtime=LocalRuntime())

        assert counts["removed"] == 1
        assert procs["mine"].wait(timeout=20) != 0  # stopped by a signal
        assert not homes["mine"].exists()
        assert procs["theirs"].poll() is None, "another instance's worker was stopped"
        assert homes["theirs"].exists()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
