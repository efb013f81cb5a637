"""Locking every changed file before the commit (API.md: all or nothing per call).

When another worker holds one of the files, wait with exponential backoff and jitter, for at
most ``LOCK_WAIT_SECONDS``, asking again each time; the caller reports stuck if that runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client import OrchestratorClient
from .errors import Category, HarnessError
from .logs import Logger
from .transport import backoff_delay

LOCK_BACKOFF_BASE = 0.5
LOCK_BACKOFF_CAP = 30.0


@dataclass
class LockResult:
    acquired: bool
    attempts: int
    conflicting_worker: str | None = None
    blocked_files: list[str] = field(default_factory=list)

    def reason(self, total: int) -> str:
        holder = f" held by worker {self.conflicting_worker}" if self.conflicting_worker else ""
        blocked = ", ".join(self.blocked_files[:20]) or "unknown files"
        return (
            f"could not lock {total} changed file(s) after {self.attempts} attempts: "
            f"{blocked}{holder}"
        )


def files_lock(
    *,
    client: OrchestratorClient,
    repo: str,
    files: list[str],
    wait_seconds: float,
    log: Logger,
    sleep: Callable[[float], None] = time.sleep,
) -> LockResult:
    """Lock ``files`` in one call, retrying a refusal until ``wait_seconds`` have passed."""
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        answer: Any = client.lock(repo=repo, files=files)
        attempt += 1
        if not isinstance(answer, dict) or not isinstance(answer.get("acquired"), bool):
            raise HarnessError(
                f"unexpected lock answer: {answer!r}"[:300], category=Category.LOCK_ERROR
            )
        result = LockResult(
            acquired=answer["acquired"],
            attempts=attempt,
            conflicting_worker=answer.get("conflictingWorker"),
            blocked_files=list(answer.get("blockedFiles") or []),
        )
        if result.acquired:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return result
        delay = min(
            remaining, backoff_delay(attempt - 1, base=LOCK_BACKOFF_BASE, cap=LOCK_BACKOFF_CAP)
        )
        log(f"lock refused ({result.reason(len(files))}); asking again in {delay:.1f}s")
        sleep(delay)
