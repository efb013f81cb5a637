"""The local runtime: the harness as a host process, for machines without Docker.

NOT isolated — the agent runs as this user, on this machine, with this filesystem. It gets
its own process group (so stop/kill reach every child), resource limits (address space,
CPU time, open files, core dumps) and its own workspace under WHIM_RUN_DIR/local-workers/.
The startup banner and `/api/status` say plainly that it is not isolated. Nor are
repositories: the agent can read and write every repository this user can (the docker runtime
mounts only the item's, ``repo_mounts.py``). The harness's own pushes into a local bare
repository still run no hook of it (``LOCAL_RECEIVE_PACK`` in ``harness/gitops.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from orchestration.models import Worker, WorkItem
from workers.agent_bin import local_path
from workers.runtime import (
    LABEL_NODE,
    ContainerRuntime,
    ContainerState,
    register,
    worker_environment,
)

HARNESS_PATH = Path(__file__).resolve().parent / "harness"
PREFIX = "local-"


def _parse_size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    value = value.strip().lower()
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def _root() -> Path:
    return Path(settings.RUN_DIR) / "local-workers"


def _dir(container_id: str) -> Path:
    return _root() / container_id.removeprefix(PREFIX)


def _limits() -> None:  # runs in the child before exec
    memory = _parse_size(settings.WORKER_MEMORY)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = settings.WORKER_TIMEOUT + 60
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _groups(leader: int | None, worker_id: str) -> set[int]:
    """Process groups holding a live process of the attempt.

    The leader's group, while anything is left in it (the leader may be gone, its children
    not), and the group of every process carrying the attempt's WORKER_ID: the harness starts
    agents in sessions of their own, which a signal to the leader's group never reaches.
    """
    needle = f"WORKER_ID={worker_id}".encode()
    groups: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X"):
                continue
            pgid = int(fields[2])
            if pgid == leader or needle in (entry / "environ").read_bytes().split(b"\0"):
                groups.add(pgid)
        except (OSError, IndexError, ValueError):
            continue
    return groups


@register("local")
class LocalRuntime(ContainerRuntime):
    name = "local"
    isolated = False

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        container_id = f"{PREFIX}{worker.pk}"
        home = _dir(container_id)
        if (home / "pid").exists():  # a retried start adopts the process it already made
            return container_id
        workspace = home / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        (home / "labels.json").write_text(
            json.dumps(
                {
                    "whim.worker": str(worker.pk),
                    "whim.work_item": str(work_item.pk),
                    "whim.instance": settings.WHIM_INSTANCE,
                    LABEL_NODE: worker.node_id or settings.WHIM_NODE,
                }
            )
        )
        if settings.WHIM_GIT_BASE_URL.startswith("file://"):
            # Bare repos on this host may belong to another uid (the docker runtime's 1000).
            # The harness's `-c safe.directory=*` does not reach the upload-pack/receive-pack
            # that git runs inside the remote repository; the global config (HOME) does.
            (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
        base = settings.WHIM_CALLBACK_URL or f"http://127.0.0.1:{settings.PORT}"
        env = worker_environment(
            worker=worker, work_item=work_item, token=token, callback_base=base.rstrip("/")
        )
        env.update(
            PATH=local_path(os.environ.get("PATH", "/usr/bin:/bin")),  # WHIM_AGENT_PATH_DIR
            HOME=str(home),
            WORKSPACE=str(workspace),
            PYTHONPATH=str(HARNESS_PATH),
            LANG="C.UTF-8",
        )
        # sh records the exit status where any process can read it later.
        script = f'"{sys.executable}" -m harness; echo $? > "{home}/exitcode"'
        with open(home / "output.log", "ab") as log:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", script],
                cwd=workspace,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_limits,
            )
        (home / "pid").write_text(str(proc.pid))
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it: no zombies
        return container_id

    def _pid(self, container_id: str) -> int | None:
        try:
            return int((_dir(container_id) / "pid").read_text())
        except (OSError, ValueError):
            return None

    def _groups(self, container_id: str) -> set[int]:
        return _groups(self._pid(container_id), container_id.removeprefix(PREFIX))

    def _signal(self, container_id: str, sig: signal.Signals) -> None:
        for pgid in self._groups(container_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def stop(self, *, container_id: str, grace_seconds: int = 10) -> None:
        self._signal(container_id, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while self._groups(container_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._signal(container_id, signal.SIGKILL)

    def kill(self, *, container_id: str) -> None:
        self._signal(container_id, signal.SIGKILL)

    def remove(self, *, container_id: str) -> None:
        self.kill(container_id=container_id)
        shutil.rmtree(_dir(container_id), ignore_errors=True)

    def inspect(self, *, container_id: str) -> ContainerState | None:
        home = _dir(container_id)
        if not home.exists():
            return None
        labels = {}
        with contextlib.suppress(OSError, ValueError):
            labels = json.loads((home / "labels.json").read_text())
        try:
            code = int((home / "exitcode").read_text())
            return ContainerState(container_id, "exited", code, False, labels)
        except (OSError, ValueError):
            pass
        pid = self._pid(container_id)
        if pid is not None and _alive(pid):
            return ContainerState(container_id, "running", None, False, labels)
        status = "dead" if pid is not None else "created"
        return ContainerState(container_id, status, None, False, labels)

    def list_labelled(self) -> list[ContainerState]:
        if not _root().exists():
            return []
        # Only this instance's, as the docker runtime filters by label. A directory without
        # its labels yet is a start in progress, not a leftover.
        states = (self.inspect(container_id=PREFIX + d.name) for d in _root().iterdir())
        return [
            s
            for s in states
            if s is not None and s.labels.get("whim.instance") == settings.WHIM_INSTANCE
        ]

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        path = _dir(container_id) / "output.log"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - settings.LOG_TAIL_BYTES))
                data = f.read(settings.LOG_TAIL_BYTES)
        except OSError:
            return None
        return data.decode("utf-8", errors="replace").splitlines()[-lines:]
