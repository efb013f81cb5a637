"""Learnings: what attempts found out about a repository, stored one row each on completion
and handed to later attempts in that repository (``GET /api/learnings``)."""

from __future__ import annotations

from orchestration.models import Learning, WorkItem


def learnings_record(*, work_item: WorkItem, learnings: list[dict[str, str]]) -> int:
    """Store an attempt's learnings (already validated ``{content, spec}``) for its item's
    repo. Called inside the completion's transaction, so a repeated complete (a no-op) never
    stores them twice. Returns how many were stored."""
    rows = [
        Learning(
            repo=work_item.repo,
            spec=entry.get("spec") or "",
            content=entry["content"],
            work_item=work_item,
        )
        for entry in learnings
    ]
    Learning.objects.bulk_create(rows)
    return len(rows)


# At most this many learnings are answered per request (newest first).
LEARNINGS_LIST_MAX = 50


def learnings_list(*, repo: str | None, limit: int = LEARNINGS_LIST_MAX) -> list[Learning]:
    """A repo's learnings (every repo's when ``repo`` is None), newest first, at most
    ``limit`` (capped at LEARNINGS_LIST_MAX)."""
    rows = Learning.objects.all() if repo is None else Learning.objects.filter(repo=repo)
    return list(rows.order_by("-created_at", "-id")[: min(limit, LEARNINGS_LIST_MAX)])
