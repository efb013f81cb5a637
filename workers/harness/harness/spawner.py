"""The harness's side of the supervisor: start agent processes as the ``agent`` user.

``Spawner.from_env()`` finds the socket the supervisor handed over (``WHIM_SPAWNER_FD``);
without one (the local runtime, tests) agents start as plain subprocesses of the harness.
``RemoteProcess`` offers what the harness uses of ``subprocess.Popen``: ``pid``, ``stdin``,
``stdout``, ``poll``, ``wait`` and signalling the whole process group.

An attempt spawns many processes (each agent iteration, the setup and test commands), one at a
time: requests are answered in order, and a process's exit is keyed by its pid — forgotten when
a later spawn reuses that pid, so a new process never inherits an old one's exit code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from .supervisor import MAX_MESSAGE, SPAWNER_FD


class SpawnError(RuntimeError):
    """The supervisor refused or could not start the process."""


class Spawner:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()  # one request at a time
        self._cond = threading.Condition()
        self._replies: list[dict[str, Any]] = []
        self._exits: dict[int, int] = {}
        threading.Thread(target=self._read, name="spawner", daemon=True).start()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Spawner | None:
        fd = (os.environ if environ is None else environ).get(SPAWNER_FD)
        if not fd:
            return None
        return cls(socket.socket(fileno=int(fd)))

    def spawn(self, argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> RemoteProcess:
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        request = {"spawn": {"argv": argv, "cwd": str(cwd), "env": dict(env)}}
        reply: dict[str, Any] = {}
        try:
            with self._lock:
                socket.send_fds(self.sock, [json.dumps(request).encode()], [stdin_r, stdout_w])
                reply = self._next_reply()
        except OSError as exc:
            reply = {"error": f"the supervisor is gone: {exc}"}
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
            if "spawned" not in reply:  # our ends too: nothing will use them
                os.close(stdin_w)
                os.close(stdout_r)
        if "spawned" not in reply:
            raise SpawnError(str(reply.get("error") or "the supervisor did not start it"))
        return RemoteProcess(
            int(reply["spawned"]), os.fdopen(stdin_w, "wb"), os.fdopen(stdout_r, "rb"), self
        )

    def signal_group(self, pid: int, sig: int) -> None:
        self.sock.send(json.dumps({"pid": pid, "signal": int(sig)}).encode())

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits, timeout=timeout)
            return self._exits.get(pid)

    def _next_reply(self) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._replies, timeout=30):
                raise SpawnError("the supervisor did not answer")
            return self._replies.pop(0)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except OSError:
                return
            if not data:
                return
            message = json.loads(data)
            with self._cond:
                if "exited" in message:
                    self._exits[int(message["exited"])] = int(message["code"])
                else:
                    if "spawned" in message:
                        # A pid the kernel handed out again: the earlier process's exit (read
                        # before this reply, as the supervisor sent it first) is not this one's.
                        self._exits.pop(int(message["spawned"]), None)
                    self._replies.append(message)
                self._cond.notify_all()


class RemoteProcess:
    """An agent process the supervisor started (see the module docstring)."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes], spawner: Spawner) -> None:
        self.pid, self.stdin, self.stdout, self.spawner = pid, stdin, stdout, spawner
        self.returncode: int | None = None

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.spawner.exit_code(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self.returncode = code
        return self.returncode

    def signal_group(self, sig: int) -> None:
        self.spawner.signal_group(self.pid, sig)
