"""``{% github_status %}``: one line on the dashboard when GitHub is holding intake back (a
watched repository rate limited until a time still ahead). One bounded query."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils import timezone

from intake.models import Repository

register = template.Library()
SHOWN = 5


@register.inclusion_tag("intake/_github_status.html")
def github_status() -> dict[str, Any]:
    now = timezone.now()
    limited = list(
        Repository.objects.filter(enabled=True, rate_limited_until__gt=now)
        .order_by("rate_limited_until")
        .values("name", "rate_limited_until", "poll_note")[: SHOWN + 1]
    )
    return {"limited": limited[:SHOWN], "more": len(limited) > SHOWN, "now": now}
