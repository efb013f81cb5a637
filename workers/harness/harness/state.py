"""State shared between the main thread, the heartbeat thread and the agent.

``Progress`` is what heartbeats report (iteration, tokens, cost, model, resumed-from commit);
``Children`` remembers the agent's process groups so a fenced or terminated harness can take
them down with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import IO, Protocol


@dataclass(frozen=True)
class Snapshot:
    iteration: int
    tokens_in: int
    tokens_out: int
    cost_usd: float = 0.0
    model: str = ""
    resumed_from: str | None = None


class Progress:
    """Iteration, token and cost counts (cumulative for the attempt), the model and the commit
    the attempt resumed from; updated by the agent, read by heartbeats (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._iteration = 0
        self._tokens_in = 0
        self._tokens_out = 0
        self._cost_usd = 0.0
        self._model = ""
        self._resumed_from: str | None = None

    def update(
        self,
        *,
        iteration: int | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        model: str | None = None,
        resumed_from: str | None = None,
    ) -> None:
        """Set the iteration, model and resumed-from commit (when given) and add to the
        token and cost counts (which never go down)."""
        with self._lock:
            if iteration is not None:
                self._iteration = iteration
            if model:
                self._model = model[:100]
            if resumed_from:
                self._resumed_from = resumed_from
            self._tokens_in += max(0, tokens_in)
            self._tokens_out += max(0, tokens_out)
            self._cost_usd += max(0.0, cost_usd)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                self._iteration,
                self._tokens_in,
                self._tokens_out,
                round(self._cost_usd, 6),
                self._model,
                self._resumed_from,
            )


class AgentProcess(Protocol):
    """What the harness uses of an agent process: ``subprocess.Popen`` or, when the
    supervisor starts it as another user, ``spawner.RemoteProcess``."""

    pid: int

    @property
    def stdin(self) -> IO[bytes] | None: ...

    @property
    def stdout(self) -> IO[bytes] | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Children:
    """Agent processes, each started in its own session (= process group)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[AgentProcess] = set()

    def add(self, proc: AgentProcess) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: AgentProcess) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self, *, grace: float = 5.0) -> None:
        """SIGTERM every group, then SIGKILL whatever is left after ``grace`` seconds."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
        # Leftovers of an exited leader (a backgrounded grandchild) share its group id.
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: AgentProcess, sig: signal.Signals) -> None:
    """The whole process group: through the supervisor for another user's process (the
    harness may not signal it itself), directly for its own."""
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        signal_group = getattr(proc, "signal_group", None)
        if signal_group is not None:
            signal_group(sig)
        else:
            os.killpg(proc.pid, sig)


children = Children()
