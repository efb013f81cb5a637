"""The repository rules: an ``owner/name`` GitHub would accept (API.md "Validation").

Owner: letters, digits and single hyphens, not starting or ending with a hyphen, at most 39
characters. Name: letters, digits, '.', '_', '-', at most 100 characters, not '.' or '..' and
not ending in '.git' (the clone URL adds that, and ``acme/x.git`` would be ``x.git.git``).
Used by the submit, lock and webhook forms; the harness keeps its own copy
(workers/harness/harness/refs.py), which tests/test_branch_policy.py keeps equal to this one.
No project imports: any layer may use it.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

REPO_RE = re.compile(r"^(?P<owner>[A-Za-z0-9][A-Za-z0-9-]*)/(?P<name>[A-Za-z0-9._-]+)$")
OWNER_MAX = 39
NAME_MAX = 100
REPO_PATTERN = (
    "must be owner/name (owner starts with a letter or digit and may hold '-'; "
    "name holds letters, digits, '.', '_', '-')"
)


def repo_error(value: str) -> str | None:
    """Why ``value`` is not an ``owner/name`` GitHub would accept (the first rule), or None."""
    match = REPO_RE.match(value)
    if not match:
        return REPO_PATTERN
    owner, name = match["owner"], match["name"]
    if owner.endswith("-") or "--" in owner:
        return "owner must not end with '-' or hold '--'"
    if len(owner) > OWNER_MAX:
        return f"owner must be at most {OWNER_MAX} characters"
    if len(name) > NAME_MAX:
        return f"name must be at most {NAME_MAX} characters"
    if name in (".", ".."):
        return "name must not be '.' or '..'"
    if name.casefold().endswith(".git"):
        return "name must not end with '.git'"
    return None


def validate_repo(value: str) -> None:
    """ValidationError naming the rule ``value`` breaks (see ``repo_error``)."""
    message = repo_error(value)
    if message is not None:
        raise ValidationError(message, code="pattern")
