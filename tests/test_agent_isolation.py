"""The harness, not the agent, reports (issue 9): the agent runs as another user than the
harness, holds neither the worker token nor the orchestrator's URL, cannot read them from
the harness's process or files, and locks files through the harness's socket."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestration.models import Worker, WorkItemStatus
from orchestration.services.dispatch import worker_token
from tests.conftest import ROOT
from tests.docker_stack import make_bare_repo
from tests.helpers import wait_for
from tests.test_docker_e2e import finished, submit
from workers.harness.harness import lockserver
from workers.harness.harness.agents import AGENT_ENV_WITHHELD, agent_environment
from workers.harness.harness.config import Config, WorkItem
from workers.harness.harness.errors import Fenced
from workers.harness.harness.logs import Logger

HARNESS = ROOT / "workers" / "harness"

# --- the supervisor: two users, as root ---------------------------------------------------

HARNESS_SCRIPT = r"""
import json, os, sys
from harness.spawner import Spawner
spawner = Spawner.from_env()
probe = "id -u; id -G; cat /proc/$HARNESS_PID/environ >/dev/null 2>&1 && echo READ || echo DENIED"
proc = spawner.spawn(["sh", "-c", probe], cwd="/", env={"PATH": "/usr/bin:/bin",
                     "HARNESS_PID": str(os.getpid())})
proc.stdin.close()
out = proc.stdout.read().decode()
print(json.dumps({"harness_uid": os.getuid(), "harness_groups": os.getgroups(),
                  "agent": out.split(), "code": proc.wait(timeout=30)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor changes users: needs root")
def test_the_supervisor_runs_the_harness_and_the_agent_as_two_users() -> None:
    # The system interpreter, as in the worker image: the harness is standard library only,
    # and this test's own interpreter may live where uid 1000 cannot reach.
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None, "no /usr/bin/python3"
    code = (
        "import sys; from harness import supervisor; "
        f"sys.exit(supervisor.main([{python!r}, '-c', {HARNESS_SCRIPT!r}]))"
    )
    done = subprocess.run(
        [python, "-c", code],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(HARNESS), "WORKER_TOKEN": "s3cret"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["harness_uid"] == 1000 and seen["harness_groups"] == [1002]
    assert seen["agent"][0] == "1001"  # the agent's uid
    assert set(seen["agent"][1:-1]) == {"1001", "1002"}  # its groups: not the harness's
    assert seen["agent"][-1] == "DENIED"  # the harness's environment is out of its reach
    assert seen["code"] == 0


# --- the lock socket -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [["../other/file"], ["/etc/passwd"], [".git/config"], ["a/../../b"], ["."], [], ["x\0y"], "a"],
)
def test_the_lock_socket_refuses_paths_outside_the_checkout(files: Any) -> None:
    with pytest.raises(ValueError):
        lockserver.checked_paths(files)


def test_the_lock_socket_normalises_paths_inside_the_checkout() -> None:
    assert lockserver.checked_paths(["./src//app.py", "a/b/../c.txt"]) == ["src/app.py", "a/c.txt"]


class FakeClient:
    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.answer, self.error = answer, error

    def lock(self, *, repo: str, files: list[str], retry_for: float | None = None) -> Any:
        self.calls.append(("lock", repo, files))
        if self.error:
            raise self.error
        return self.answer

    def unlock(self, *, repo: str, files: list[str], retry_for: float | None = None) -> Any:
        self.calls.append(("unlock", repo, files))
        return {}


def test_the_lock_socket_asks_for_its_own_repo_with_its_own_token(tmp_path: Path) -> None:
    client = FakeClient(answer={"acquired": False, "conflictingWorker": "w2"})
    server = lockserver.LockServer(
        path=tmp_path / "s" / "lock.sock",
        client=client,  # type: ignore[arg-type]
        repo="acme/widgets",
        log=Logger("[test]", io.StringIO()),
    )
    try:
        reply = lockserver.request(str(server.path), "lock", ["src/app.py"])
        refused = lockserver.request(str(server.path), "lock", ["../victim/app.py"])
    finally:
        server.close()
    assert reply == {"code": 1, "answer": {"acquired": False, "conflictingWorker": "w2"}}
    assert refused["code"] == 2 and "inside the checkout" in refused["error"]
    assert client.calls == [("lock", "acme/widgets", ["src/app.py"])]


def test_a_fenced_harness_answers_exit_code_3_on_the_socket(tmp_path: Path) -> None:
    server = lockserver.LockServer(
        path=tmp_path / "lock.sock",
        client=FakeClient(error=Fenced("worker is killed")),  # type: ignore[arg-type]
        repo="acme/widgets",
        log=Logger("[test]", io.StringIO()),
    )
    try:
        assert server.answer({"action": "lock", "files": ["a"]})["code"] == 3
    finally:
        server.close()


def test_the_agent_environment_withholds_the_harness_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("WORKER_TOKEN", "ORCHESTRATOR_URL", "GITHUB_TOKEN", "GITHUB_TOKEN_FILE"):
        monkeypatch.setenv(name, f"secret-{name}")
    data = {"id": "item-1", "repo": "acme/widgets", "branch": "feature", "spec": "# Do"}
    config = Config.from_env(
        {
            "ORCHESTRATOR_URL": "http://127.0.0.1:9/w/t",
            "WORKER_ID": "w1",
            "WORKER_TOKEN": "t",
            "WORK_ITEM": json.dumps(data),
            "WHIM_GIT_BASE_URL": "file:///srv/repos/",
            "WORKSPACE": str(tmp_path),
        }
    )

    env = agent_environment(config, WorkItem.from_json(data), lock_socket=tmp_path / "s")

    assert set(AGENT_ENV_WITHHELD) >= {"WORKER_TOKEN", "ORCHESTRATOR_URL", "GITHUB_TOKEN"}
    assert not [name for name, value in env.items() if value.startswith("secret-")]
    assert env["WHIM_LOCK_SOCKET"] == str(tmp_path / "s")
    assert env["WHIM_REPO"] == "acme/widgets"


# --- a hostile agent in a real container ----------------------------------------------------

# Its own environment holds this script (WHIM_AGENT_COMMAND), so each success marker is
# spelled in two pieces: found in loot.txt only when the attack printed it.
HOSTILE = r"""
{
  id
  for f in /proc/[0-9]*/environ; do echo "== $f"; tr '\0' '\n' < "$f"; done
  echo "== env"; env
  echo "== gitdir"; ls -la /workspace/.whim-git
  echo planted > /workspace/.whim-git/hooks/post-commit && echo "PLAN""TED"
  mv /workspace/.whim-git /workspace/stolen && echo "MOV""ED"
  ls /home/whim && echo "HOME-""READ"
} > loot.txt 2>&1
whim-lock loot.txt > lock.txt 2>&1 && echo LOCKED >> lock.txt
"""


@pytest.mark.docker
def test_a_hostile_agent_cannot_read_the_token_or_touch_the_harness(docker_stack: Any) -> None:
    stack = docker_stack(WHIM_AGENT="command", WHIM_AGENT_COMMAND=HOSTILE)
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(stack, repo="acme/widgets", spec="# Loot")

    item = wait_for(lambda: finished(item_id), timeout=120, interval=0.5, what="the item")
    assert item.status == WorkItemStatus.COMPLETED, item.error  # the harness reported
    loot = stack.show("acme/widgets", item.commit_sha, "loot.txt")
    token = worker_token(Worker.objects.get(work_item_id=item_id).pk)
    assert "uid=1001(agent)" in loot
    assert token not in loot
    assert "WORKER_TOKEN" not in loot and "ORCHESTRATOR_URL" not in loot
    assert "PLANTED" not in loot and "MOVED" not in loot and "HOME-READ" not in loot
    assert "Permission denied" in loot
    assert "LOCKED" in stack.show("acme/widgets", item.commit_sha, "lock.txt")
