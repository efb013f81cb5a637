"""A node's name as an edge receives it (API path, console form, CLI argument): one check,
one message, so every edge refuses a bad name alike (400 VALIDATION_ERROR, ``details.name``)."""

from __future__ import annotations

from orchestration.errors import ValidationFailed
from orchestration.fleet import node_name_valid

NODE_NAME_RULE = (
    "must be 1 to 63 characters: lower-case letters, digits, '_', '.' or '-', starting with a "
    "letter or digit"
)


def node_name_parsed(raw: str) -> str:
    """``raw`` if it can name a node; ValidationFailed otherwise (whether it exists is the
    service's question: NotFound)."""
    if not node_name_valid(raw):
        raise ValidationFailed("Invalid node name", details={"name": NODE_NAME_RULE})
    return raw
