"""The heartbeat thread: reports progress every ``HEARTBEAT_INTERVAL`` seconds — the
iteration, cumulative tokens in/out and cost, the model and the commit the attempt resumed
from (``client.heartbeat``).

One heartbeat goes out at once, then one per interval, each tried once (the next tick is the
retry). A 409 means the orchestrator has fenced this worker off: ``on_fenced`` runs, and it is
expected to stop the whole process at once. Stop the thread (``stop``) before the final
callback, so no heartbeat can follow a complete, fail or stuck. ``stop(report=True)`` then
sends one last heartbeat when the progress moved since the last one delivered: what an attempt
spent after its last tick is charged even when it ends by fail or stuck (which carry no
metrics; the iteration that reached the cost cap, say), and an attempt that resumed and ended
within one interval still has its ``resumedFrom`` recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .client import OrchestratorClient
from .errors import CallbackError, Fenced
from .logs import Logger
from .state import Progress, Snapshot


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
        self.delivered: Snapshot | None = None  # the progress the last heartbeat carried

    def run(self) -> None:
        while not self._stop_event.is_set():
            snap = self.progress.snapshot()
            try:
                self.client.heartbeat(snap)
                self.sent += 1
                self.delivered = snap
            except Fenced as exc:
                if not self._stop_event.is_set():
                    self.on_fenced(str(exc))
                return
            except CallbackError as exc:
                self.log(f"heartbeat not delivered: {exc}")
            except Exception as exc:  # a heartbeat problem must never kill the attempt
                self.log(f"heartbeat error: {type(exc).__name__}: {exc}")
            self._stop_event.wait(self.interval)

    def stop(self, *, report: bool = False) -> None:
        """Stop sending, and wait for a heartbeat in flight to finish. ``report``: then send
        the progress once more (tried once) if it moved since the last heartbeat delivered."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.client.timeout + 5)
        if not report or self.is_alive() or self.client.fenced.is_set():
            return
        snap = self.progress.snapshot()
        if snap == self.delivered:
            return
        try:
            self.client.heartbeat(snap)
            self.delivered = snap
        except Fenced:
            pass  # the final callback that follows is refused too, and says so
        except CallbackError as exc:
            self.log(f"the last heartbeat was not delivered: {exc}")
        except Exception as exc:  # never in the way of the final callback
            self.log(f"the last heartbeat: {type(exc).__name__}: {exc}")
