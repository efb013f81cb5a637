"""Startup validation of the database settings (Django system check E092)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.db import connection


@register()
def check_client_side_binding(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """The claim and the start send several statements as one query (``rows.statements_run``),
    which only client-side parameter binding (Django's default on PostgreSQL) allows."""
    options = settings.DATABASES["default"].get("OPTIONS") or {}
    if connection.vendor == "postgresql" and options.get("server_side_binding"):  # type: ignore[attr-defined]
        return [
            Error(
                "DATABASES['default']['OPTIONS']['server_side_binding'] must be off: the claim "
                "sends its statements together in one query, which PostgreSQL accepts only "
                "with the parameters bound on the client.",
                id="orchestration.E092",
            )
        ]
    return []
