"""Startup validation of the fleet's settings (Django system checks E080 to E089)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from orchestration.fleet import NODE_LABEL_RE, node_name_valid


@register()
def check_nodes(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    name = str(settings.WHIM_NODE)
    if not node_name_valid(name):
        errors.append(
            Error(
                f"WHIM_NODE {name[:80]!r} is not a node name: 1 to 63 of a-z, 0-9, '_', '.', "
                "'-', starting with a letter or digit.",
                id="orchestration.E080",
            )
        )
    capacity = settings.NODE_MAX_WORKERS
    if capacity is not None and capacity < 0:
        errors.append(
            Error(
                f"NODE_MAX_WORKERS must be at least 0 (it is {capacity}).",
                id="orchestration.E081",
            )
        )
    bad = [label for label in settings.NODE_LABELS if not NODE_LABEL_RE.fullmatch(label)]
    if bad:
        errors.append(
            Error(
                f"NODE_LABELS has labels that are not [a-z0-9][a-z0-9_.-]{{0,62}}: "
                f"{', '.join(repr(b[:80]) for b in bad[:5])}.",
                id="orchestration.E082",
            )
        )
    interval, timeout = settings.NODE_HEARTBEAT_INTERVAL, settings.NODE_TIMEOUT
    if not interval > 0:
        errors.append(
            Error(
                f"NODE_HEARTBEAT_INTERVAL must be more than 0 seconds (it is {interval}).",
                id="orchestration.E083",
            )
        )
    elif not interval * 3 <= timeout:
        errors.append(
            Error(
                f"NODE_TIMEOUT ({timeout:g}s) must be at least three NODE_HEARTBEAT_INTERVALs "
                f"({interval:g}s): a node missing one heartbeat is not lost.",
                id="orchestration.E084",
            )
        )
    return errors
