"""Template filters for the console: ANSI stripping, durations, money, clipping long text."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import template

from orchestration.text import strip_ansi

register = template.Library()


@register.filter
def noansi(value: Any) -> str:
    """The text without ANSI escape codes (the template still escapes it afterwards)."""
    return strip_ansi(str(value or ""))


@register.filter
def clip(value: Any, limit: int = 2000) -> str:
    """The first ``limit`` characters (a "show all" link shows the rest)."""
    text = str(value or "")
    return text[: int(limit)]


@register.filter
def clipped(value: Any, limit: int = 2000) -> int:
    """How many characters ``clip`` left out."""
    return max(0, len(str(value or "")) - int(limit))


@register.filter
def seconds(value: Any) -> str:
    """A number of seconds (or a timedelta) as "3 s", "4 min 2 s", "2 h 5 min"."""
    if value is None or value == "":
        return "—"
    total = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    total = max(0, int(total))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    if total < 86400:
        return f"{total // 3600} h {total % 3600 // 60} min"
    return f"{total // 86400} d {total % 86400 // 3600} h"


@register.filter
def is_http_url(value: Any) -> bool:
    """Only http(s) URLs become links (never ``javascript:`` from a bad row)."""
    return str(value or "").startswith(("http://", "https://"))


@register.filter
def finding_text(value: Any) -> str:
    """A review finding's message, whatever shape the reviewer gave it."""
    if isinstance(value, dict):
        for key in ("message", "description", "text", "body", "title"):
            if value.get(key):
                return str(value[key])
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


@register.filter
def findings_shape(value: Any) -> str:
    """How a review's findings are shaped: ``whim`` (the original Whim's ReviewFindings
    object, what attempts report and GitHub reviews are stored as), ``list`` (a list, what
    older versions stored) or ``other`` (anything else, shown as it is)."""
    if isinstance(value, dict) and isinstance(value.get("specAlignment"), dict):
        return "whim"
    if isinstance(value, list):
        return "list"
    return "other"


@register.filter
def money(value: Any) -> str:
    """Dollars without the sign: two places, or four below a dollar (agents cost cents)."""
    try:
        amount = Decimal(str(value or 0))
    except ArithmeticError:
        return "—"
    return f"{amount:.4f}" if abs(amount) < 1 else f"{amount:,.2f}"
