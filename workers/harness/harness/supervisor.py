"""The container's first process: start the harness and, on its request, agents — each as
its own user — and nothing else.

The worker image starts this as root holding only CAP_SETUID, CAP_SETGID and CAP_KILL (every
other capability dropped, no-new-privileges). It

1. starts the harness as ``whim`` (uid 1000) with one end of a socket pair, and keeps the
   other: the only way to ask anything of it;
2. on the harness's request starts an agent process as ``agent`` (uid 1001) in a session of
   its own, on the stdin/stdout the harness passed (SCM_RIGHTS), and answers its pid;
3. signals those processes (and only those) when asked, and reports each one's exit;
4. forwards SIGTERM/SIGINT to the harness and exits with the harness's exit code.

The agent therefore never shares a uid with the harness: ``/proc/<harness>/environ`` (the
worker token, the orchestrator URL) and the harness's private files are out of its reach.
Both users share the ``whimwork`` group (gid 1002), which owns the checkout. Started
unprivileged (the local runtime, tests), this simply becomes the harness.

Those secrets are not in the container's configuration either (``docker inspect`` shows it to
whoever may use the Docker API): with ``WHIM_SECRETS_ON_STDIN=1`` the runtime writes them on
stdin as one JSON object on one line, which this reads first of all (``read_secrets``) and
gives the harness in its environment; stdin is then ``/dev/null``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import sys
import time
from typing import Any

HARNESS_UID = HARNESS_GID = 1000
AGENT_UID = AGENT_GID = 1001
WORK_GID = 1002
AGENT_HOME = "/home/agent"
JUDGE_HOME_PREFIX = "/tmp/whim-judge-home-"  # noqa: S108  (made by mkdtemp: unique, 0700 first)
SPAWNER_FD = "WHIM_SPAWNER_FD"
MAX_MESSAGE = 1024 * 1024
SECRETS_ON_STDIN = "WHIM_SECRETS_ON_STDIN"
SECRETS_TIMEOUT = 120.0  # the runtime writes them right after the start: ms, not minutes
MAX_SECRETS = 64 * 1024  # a few keys and tokens: a few hundred bytes
SECRET_NAME = re.compile(r"[^=\0]{1,200}")  # what an environment's name may hold
EXIT_NO_SECRETS = 78  # EX_CONFIG


class SecretsError(Exception):
    """What came on stdin is not the secrets line (the message never quotes it)."""


def read_secrets(fd: int = 0, timeout: float = SECRETS_TIMEOUT) -> dict[str, str]:
    """The one line of secrets on ``fd``: a JSON object of name: text, at most MAX_SECRETS
    bytes, within ``timeout`` seconds. Nothing after the line is read."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SecretsError(f"no secrets arrived on stdin within {timeout:.0f} s")
        chunk = os.read(fd, 1)  # byte by byte: what follows the line stays unread
        if not chunk:
            raise SecretsError("stdin closed before the secrets line ended")
        data += chunk
        if len(data) > MAX_SECRETS:
            raise SecretsError(f"the secrets line is longer than {MAX_SECRETS} bytes")
    try:
        secrets = json.loads(data)
    except ValueError:
        raise SecretsError("the secrets line is not JSON") from None
    if not isinstance(secrets, dict) or not all(
        isinstance(k, str) and SECRET_NAME.fullmatch(k) and isinstance(v, str) and "\0" not in v
        for k, v in secrets.items()
    ):
        raise SecretsError("the secrets line is not an object of name: text")
    return secrets


def _take_secrets() -> None:
    """With WHIM_SECRETS_ON_STDIN=1: the secrets into this process's environment (the
    harness's, when it starts), stdin then /dev/null. Without them it cannot run: exit 78."""
    if os.environ.pop(SECRETS_ON_STDIN, "") != "1":
        return
    try:
        os.environ.update(read_secrets())
    except (SecretsError, OSError) as exc:
        print(f"whim supervisor: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_NO_SECRETS)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _home(env: dict[str, str]) -> str:
    """The agent's HOME: its own, or a fresh one the harness made for a judging invocation
    (review, verify), so nothing the working agent left in its HOME steers the judge."""
    fresh = env.get("WHIM_AGENT_HOME", "")
    if fresh.startswith(JUDGE_HOME_PREFIX) and "/" not in fresh[len(JUDGE_HOME_PREFIX) :]:
        return fresh
    return AGENT_HOME


def main(harness: list[str] | None = None) -> int:
    # -P: the working directory (/workspace, which the agent writes) is not on sys.path, so the
    # agent cannot plant a module the harness would import.
    argv = harness or [sys.executable, "-P", "-m", "harness"]
    _take_secrets()
    if os.geteuid() != 0:
        os.execvp(argv[0], argv)  # unprivileged: no second user to run agents as
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the harness
        ours.close()
        _become(HARNESS_UID, HARNESS_GID)
        os.set_inheritable(theirs.fileno(), True)
        env = {**os.environ, SPAWNER_FD: str(theirs.fileno()), "HOME": "/home/whim"}
        os.execvpe(argv[0], argv, env)
    theirs.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _forward(pid, signum))
    return Supervisor(ours, pid).serve()


def _become(uid: int, gid: int) -> None:
    os.setgroups([WORK_GID])
    os.setgid(gid)
    os.setuid(uid)
    os.umask(0o002)  # what either writes in the checkout stays editable by the other


def _exit_code(status: int) -> int:
    """A wait status as a shell would report it: a signal N is 128 + N (137 for SIGKILL)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class Supervisor:
    def __init__(self, sock: socket.socket, harness: int) -> None:
        self.sock, self.harness = sock, harness
        self.agents: set[int] = set()  # running agent processes (their exits are reported)
        self.groups: set[int] = set()  # every agent's process group: leftovers die with it
        sock.settimeout(0.2)

    def serve(self) -> int:
        while True:
            code = self._reap()
            if code is not None:
                return code
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
            except TimeoutError:
                continue
            except OSError:
                data, fds = b"", []
            if not data:  # the harness closed its end: wait for it to exit
                self.sock.settimeout(None)
                _, status = os.waitpid(self.harness, 0)
                self._kill_agents()
                return _exit_code(status)
            self._handle(data, fds)

    def _handle(self, data: bytes, fds: list[int]) -> None:
        try:
            request: Any = json.loads(data)
            if "signal" in request:  # no reply: only spawn requests are answered
                if request.get("pid") in self.groups:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(request["pid"]), int(request["signal"]))
            elif request.get("spawn") and len(fds) == 2:
                self._send({"spawned": self._spawn(request["spawn"], fds)})
            else:
                self._send({"error": "bad request"})
        except (ValueError, TypeError, KeyError, OSError) as exc:
            self._send({"error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _spawn(self, spec: dict[str, Any], fds: list[int]) -> int:
        argv = [str(a) for a in spec["argv"]]
        env = {str(k): str(v) for k, v in dict(spec["env"]).items()}
        cwd = str(spec["cwd"])
        stdin, stdout = fds
        pid = os.fork()
        if pid == 0:  # the agent
            try:
                os.setsid()
                _become(AGENT_UID, AGENT_GID)
                os.dup2(stdin, 0)
                os.dup2(stdout, 1)
                os.dup2(stdout, 2)
                os.closerange(3, 65536)
                os.chdir(cwd)
                os.execvpe(argv[0], argv, {**env, "HOME": _home(env)})
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.write(2, f"could not start {argv[0]}: {exc}\n".encode())
            os._exit(127)
        self.agents.add(pid)
        self.groups.add(pid)  # setsid: its pid is its process group's id
        return pid

    def _reap(self) -> int | None:
        """Collect exited children: report agents' exits; the harness's exit code, if it
        has exited (then every agent left is killed)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 1
            if pid == 0:
                return None
            code = _exit_code(status)
            if pid == self.harness:
                self._kill_agents()
                return code
            if pid in self.agents:
                self.agents.discard(pid)
                self._send({"exited": pid, "code": code})

    def _kill_agents(self) -> None:
        for pid in list(self.groups):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps(message).encode())


if __name__ == "__main__":
    raise SystemExit(main())
