"""The heartbeat thread: reports progress every ``HEARTBEAT_INTERVAL`` seconds — the
iteration, cumulative tokens in/out and cost, the model and the commit the attempt resumed
from (``client.heartbeat``).

One heartbeat goes out at once, then one per interval, each tried once (the next tick is the
retry). A 409 means the orchestrator has fenced this worker off: ``on_fenced`` runs, and it is
expected to stop the whole process at once. Stop the thread (``stop``) before the final
callback, so no heartbeat can follow a complete, fail or stuck; ``stop(last=True)`` sends one
final heartbeat with the attempt's totals first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .client import OrchestratorClient
from .errors import CallbackError, Fenced
from .logs import Logger
from .state import Progress


class Heartbeat(threading.Thread):
    def __init__(
        self,
        *,
        client: OrchestratorClient,
        progress: Progress,
        interval: float,
        on_fenced: Callable[[str], None],
        log: Logger,
    ) -> None:
        super().__init__(name="whim-heartbeat", daemon=True)
        self.client = client
        self.progress = progress
        self.interval = interval
        self.on_fenced = on_fenced
        self.log = log
        self._stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            snap = self.progress.snapshot()
            try:
                self.client.heartbeat(snap)
                self.sent += 1
            except Fenced as exc:
                if not self._stop_event.is_set():
                    self.on_fenced(str(exc))
                return
            except CallbackError as exc:
                self.log(f"heartbeat not delivered: {exc}")
            except Exception as exc:  # a heartbeat problem must never kill the attempt
                self.log(f"heartbeat error: {type(exc).__name__}: {exc}")
            self._stop_event.wait(self.interval)

    def stop(self, *, last: bool = False) -> None:
        """Stop sending, and wait for a heartbeat in flight to finish. ``last``: then send one
        more with the final totals, so what the attempt spent since the last tick is charged
        before its final callback (fail and stuck carry no usage)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.client.timeout + 5)
        if last:
            try:
                self.client.heartbeat(self.progress.snapshot())
            except (CallbackError, Fenced) as exc:  # the final callback will say the same
                self.log(f"last heartbeat not delivered: {exc}")
