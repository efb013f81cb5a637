"""Read endpoints the API and the CLI share: validate the query, select, shape API.md's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestration.api.serializers import work_item_json
from orchestration.forms.clients import QueueQueryForm
from orchestration.selectors import queue_in_dispatch_order, queue_list


def queue_page(query: Mapping[str, Any]) -> dict[str, Any]:
    """GET /api/queue and ``whim queue``: validate the filters, list, shape as API.md's JSON.

    Asked for no status, cursor or limit, it answers as the original Whim does: every waiting
    and running item in dispatch order, unpaginated. Any of them asks for cursor pages."""
    q = QueueQueryForm(data=query).validated()
    if not any(q.get(k) for k in ("status", "cursor", "limit")):
        result = queue_in_dispatch_order(type=q.get("type") or "", repo=q.get("repo") or "")
    else:
        result = queue_list(
            status=q.get("status") or "",
            type=q.get("type") or "",
            repo=q.get("repo") or "",
            cursor=q.get("cursor") or "",
            limit=q.get("limit") or 50,
        )
    result["items"] = [work_item_json(i) for i in result["items"]]
    return result
