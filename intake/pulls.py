"""Pull requests in, review jobs out (skeleton: filled in by the review-bot slice)."""

from __future__ import annotations

from typing import Any


def pull_event_receive(*, action: str, payload: dict[str, Any]) -> tuple[str, str]:
    """A ``pull_request`` webhook delivery, validated: (outcome, note)."""
    return "ignored", "the review bot is not built yet"


def pulls_poll(*, repo: str) -> dict[str, int]:
    """Poll one watched repository's open pull requests."""
    return {}
