"""Issue intake (skeleton: filled in by the intake slice): labelled issues become items."""

from __future__ import annotations

from typing import Any


def issue_event_receive(*, action: str, payload: dict[str, Any]) -> tuple[str, str]:
    """An ``issues`` webhook delivery, validated: (outcome, note)."""
    return "ignored", "issue intake is not built yet"


def issues_poll(*, repo: str) -> dict[str, int]:
    """Poll one watched repository's labelled issues."""
    return {}
