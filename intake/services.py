"""Placeholder (issue 11 skeleton): the outbox sweep."""

from __future__ import annotations


def github_actions_sweep() -> dict[str, int]:
    """Re-send the outbox rows that are due (skeleton: nothing yet)."""
    return {}
