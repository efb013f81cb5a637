"""The orchestrator's worker callbacks (API.md "Worker callbacks").

Every call authenticates twice over: the token is in the base URL's path (``/w/<token>``) and,
when ``WORKER_TOKEN`` is set, in an ``Authorization: Bearer`` header. Network errors and 5xx
are retried with backoff and jitter for a bounded time (the server treats repeats as no-ops);
409 means this worker has been fenced off and raises ``Fenced``; any other 4xx raises
``CallbackError`` at once.
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

from .errors import CallbackError, Fenced
from .logs import Logger, mask
from .state import Snapshot
from .transport import RetriesExhausted, request_json


class OrchestratorClient:
    """One worker's callbacks; paths and bodies exactly as API.md gives them."""

    def __init__(
        self,
        *,
        base_url: str,
        worker_id: str,
        token: str | None,
        retry_for: float,
        log: Logger,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.worker_id = worker_id
        self.token = token
        self.retry_for = retry_for
        self.log = log
        self.timeout = timeout
        # Set by the first 409 (from any thread): nothing is sent after being fenced off.
        self.fenced = threading.Event()

    def post(self, path: str, body: dict[str, Any], *, retry_for: float | None = None) -> Any:
        """POST ``body`` to ``$ORCHESTRATOR_URL<path>`` and return the parsed answer."""
        return self.request("POST", path, body, retry_for=retry_for)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        retry_for: float | None = None,
    ) -> Any:
        """``method`` ``$ORCHESTRATOR_URL<path>`` and return the parsed answer."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        label = f"{method} {path.split('?', 1)[0]}"
        if self.fenced.is_set():
            raise Fenced(f"{label}: not sent, this worker has been fenced off")
        try:
            response = request_json(
                method,
                self.base_url + path,
                body=body,
                headers=headers,
                retry_for=self.retry_for if retry_for is None else retry_for,
                timeout=self.timeout,
                label=label,
                log=self.log,
            )
        except RetriesExhausted as exc:
            raise CallbackError(str(exc)) from None
        if response.status == 409:
            self.fenced.set()
            raise Fenced(f"{label}: 409 {_error_text(response.body)}")
        if response.status >= 400:
            details = response.body.get("details") if isinstance(response.body, dict) else None
            raise CallbackError(
                f"{label}: HTTP {response.status} {_error_text(response.body)}",
                status=response.status,
                fields=tuple(str(k) for k in details) if isinstance(details, dict) else (),
            )
        return response.body

    def _worker(self, action: str) -> str:
        return f"/api/worker/{self.worker_id}/{action}"

    def register(self, *, work_item_id: str) -> Any:
        return self.post("/api/worker/register", {"workItemId": work_item_id})

    def heartbeat(self, snap: Snapshot, *, retry_for: float = 0.0) -> Any:
        """``{iteration, tokensIn, tokensOut, costUsd, model, resumedFrom?}`` (cumulative)."""
        body: dict[str, Any] = {
            "iteration": snap.iteration,
            "tokensIn": snap.tokens_in,
            "tokensOut": snap.tokens_out,
            "costUsd": snap.cost_usd,
            "model": snap.model,
        }
        if snap.resumed_from:
            body["resumedFrom"] = snap.resumed_from
        return self.post(self._worker("heartbeat"), body, retry_for=retry_for)

    def learnings(self, *, repo: str) -> Any:
        """GET ``/api/learnings?repo=<repo>``: the repository's learnings, newest first."""
        return self.request("GET", "/api/learnings?" + urllib.parse.urlencode({"repo": repo}))

    def lock(self, *, repo: str, files: list[str], retry_for: float | None = None) -> Any:
        return self.post(self._worker("lock"), {"repo": repo, "files": files}, retry_for=retry_for)

    def unlock(self, *, repo: str, files: list[str], retry_for: float | None = None) -> Any:
        body = {"repo": repo, "files": files}
        return self.post(self._worker("unlock"), body, retry_for=retry_for)

    def complete(self, body: dict[str, Any]) -> Any:
        return self.post(self._worker("complete"), body)

    def fail(self, body: dict[str, Any]) -> Any:
        return self.post(self._worker("fail"), body)

    def stuck(self, *, reason: str, attempts: int) -> Any:
        return self.post(self._worker("stuck"), {"reason": mask(reason), "attempts": attempts})


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        return mask(str(body.get("error") or body.get("code") or body))[:300]
    return mask(str(body))[:300]
