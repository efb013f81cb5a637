"""The outbox of GitHub calls (skeleton: filled in by the client/outbox slice).

Contract (notes/contract11.md §Outbox): rows are written in the transaction of the change they
report; ``key`` makes each call happen once; a handler per ``kind`` does the call
idempotently on GitHub's side; the task delivers, the sweep re-sends what is due.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from intake.github import GitHubClient
from intake.models import GitHubAction
from orchestration.models import WorkItem

# kind → handler(client, action) → result dict stored on the row. Raises intake.github errors.
Handler = Callable[[GitHubClient, GitHubAction], dict[str, Any]]
_handlers: dict[str, Handler] = {}


def action_handler_register(kind: str, handler: Handler) -> None:
    _handlers[kind] = handler


def github_action_enqueue(
    *,
    key: str,
    kind: str,
    repo: str,
    number: int | None,
    payload: dict[str, Any],
    work_item: WorkItem | None = None,
) -> GitHubAction | None:
    """Write one outbox row (None when ``key`` exists already) and nudge its delivery after
    commit. Call inside the transaction of the change it reports."""
    raise NotImplementedError


def github_action_deliver(*, action_id: int) -> str:
    """Deliver one due row: its handler, then ``done`` / retry later / ``failed``."""
    raise NotImplementedError


def github_actions_sweep() -> dict[str, int]:
    """Re-send the outbox rows that are due."""
    return {}
