"""Starting the agent's processes (the agent itself, the repository's setup and tests) and
watching their output.

In the worker image every such process runs as the ``agent`` user through the supervisor
(``Spawner``), never as the harness: the repository's code and whatever the agent wrote are
untrusted. Without a spawner (the local runtime, tests) they are plain subprocesses. Each one
runs in a process group of its own, registered in ``Children`` so that a timeout, a fenced or a
terminated harness takes the whole group down. One process at a time: the spawner answers
requests in order, and each spawn's exit is reported for its own pid.
"""

from __future__ import annotations

import collections
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import AgentError
from .spawner import Spawner, SpawnError
from .state import AgentProcess, Children

POLL_SECONDS = 0.2
OUTPUT_CHARS = 400_000  # what ``command_run`` keeps of a command's output (the end of it)


def process_start(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], spawner: Spawner | None
) -> AgentProcess:
    """Start ``argv`` (stdin and stdout+stderr piped) as the agent user when there is a
    spawner, else as a subprocess in a new session. ``SpawnError`` when it cannot start."""
    if spawner is not None:
        return spawner.spawn(argv, cwd=cwd, env=env)
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it can be killed whole
        )
    except OSError as exc:
        raise SpawnError(f"{argv[0]}: {exc.strerror or exc}") from None


class Running:
    """A started process: its stdin is written and closed, its output read line by line in
    threads; ``last_output`` is when it last printed anything."""

    def __init__(self, proc: AgentProcess, *, stdin: bytes, on_line: Callable[[str], None]) -> None:
        self.proc = proc
        self.on_line = on_line
        self.last_output = time.monotonic()
        self.threads = [
            threading.Thread(target=self._feed, args=(stdin,), daemon=True),
            threading.Thread(target=self._pump, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it does not read its stdin: fine

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.last_output = time.monotonic()
            self.on_line(raw.decode("utf-8", errors="replace").rstrip("\r\n"))

    def wait(self, *, timeout: float | None = None, idle_timeout: float | None = None) -> int | str:
        """The exit code, or ``"timeout"`` / ``"idle"`` (then it still runs: kill it).

        Polls rather than blocks, so signal handlers run promptly in the main thread."""
        started = time.monotonic()
        while True:
            try:
                return self.proc.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                return "timeout"
            if idle_timeout is not None and now - self.last_output > idle_timeout:
                return "idle"

    def drain(self) -> None:
        """Wait (briefly) for the output threads, once the process group is gone."""
        for thread in self.threads:
            thread.join(timeout=5)


def command_run(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    spawner: Spawner | None,
    children: Children,
    timeout: float,
) -> tuple[int | None, str]:
    """Run ``argv`` to the end, bounded by ``timeout`` seconds: (exit code, or None when it
    timed out and was killed; its combined output, the end of it when long)."""
    try:
        proc = process_start(argv, cwd=cwd, env=env, spawner=spawner)
    except SpawnError as exc:
        raise AgentError(f"{argv[0]} could not be started: {exc}") from None
    children.add(proc)
    lines: collections.deque[str] = collections.deque()
    size = [0]

    def keep(line: str) -> None:
        lines.append(line)
        size[0] += len(line) + 1
        while size[0] > OUTPUT_CHARS and len(lines) > 1:
            size[0] -= len(lines.popleft()) + 1

    running = Running(proc, stdin=b"", on_line=keep)
    try:
        outcome = running.wait(timeout=timeout)
    finally:
        children.kill_all(grace=2)  # the group: whatever it left running in the background
        children.discard(proc)
    running.drain()
    return (outcome if isinstance(outcome, int) else None), "\n".join(lines)
