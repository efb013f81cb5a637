"""The harness's spawner used many times in one attempt (every agent iteration, the setup and
test commands): each spawn gets its own process, output and exit code — also when the kernel
hands out a pid again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from workers.harness.harness.spawner import Spawner
from workers.harness.harness.supervisor import MAX_MESSAGE

HARNESS = Path(__file__).resolve().parent.parent / "workers" / "harness"

# The real supervisor loop, unprivileged: no second user to become, the rest as in the image.
SUPERVISOR = r"""
import os, socket, sys
sys.path.insert(0, sys.argv[2])
from harness import supervisor
supervisor._become = lambda uid, gid: None
sock = socket.socket(fileno=int(sys.argv[1]))
harness = os.fork()
if harness == 0:
    os.execvp("sleep", ["sleep", "120"])
print(harness, flush=True)
sys.exit(supervisor.Supervisor(sock, harness).serve())
"""


def test_one_spawner_runs_many_processes_one_after_another(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(theirs.fileno()), str(HARNESS)],
        pass_fds=[theirs.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    )
    theirs.close()
    assert proc.stdout is not None
    harness_pid = int(proc.stdout.readline())
    spawner = Spawner(ours)
    try:
        pids = set()
        for n in range(8):
            child = spawner.spawn(
                ["sh", "-c", f'read line; echo "got $line {n}"; exit {n}'],
                cwd=tmp_path,
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(b"hello\n")
            child.stdin.close()
            assert child.stdout.read() == f"got hello {n}\n".encode()
            assert child.wait(timeout=10) == n
            pids.add(child.pid)
        assert len(pids) == 8
    finally:
        os.kill(harness_pid, signal.SIGKILL)  # the supervisor exits with its harness
        proc.wait(timeout=10)
        ours.close()


def test_a_reused_pid_does_not_inherit_the_earlier_process_s_exit(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def supervisor() -> None:
        # The first process (pid 4242) exits with 7; the next spawn gets pid 4242 again.
        for n in range(2):
            _, fds, _, _ = socket.recv_fds(theirs, MAX_MESSAGE, 4)
            for fd in fds:
                os.close(fd)
            theirs.send(json.dumps({"spawned": 4242}).encode())
            if n == 0:
                theirs.send(json.dumps({"exited": 4242, "code": 7}).encode())

    thread = threading.Thread(target=supervisor, daemon=True)
    thread.start()
    spawner = Spawner(ours)
    env = {"PATH": os.defpath}
    first = spawner.spawn(["true"], cwd=tmp_path, env=env)
    assert first.wait(timeout=5) == 7
    second = spawner.spawn(["true"], cwd=tmp_path, env=env)
    thread.join(timeout=5)

    assert second.pid == first.pid
    assert second.poll() is None  # still running, as far as anyone has said
    theirs.send(json.dumps({"exited": 4242, "code": 0}).encode())
    assert second.wait(timeout=5) == 0
    ours.close()
    theirs.close()


def test_the_supervisor_gives_a_judge_only_a_fresh_home_it_recognises() -> None:
    from workers.harness.harness.supervisor import AGENT_HOME, _home

    assert _home({"WHIM_AGENT_HOME": "/tmp/whim-judge-home-ab12"}) == "/tmp/whim-judge-home-ab12"
    for other in ("", "/etc", "/tmp/whim-judge-home-x/../../etc", "/home/whim"):
        assert _home({"WHIM_AGENT_HOME": other}) == AGENT_HOME
    assert _home({}) == AGENT_HOME
