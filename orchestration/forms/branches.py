"""The branch rules: which branch names Whim accepts, and the branch derived from a spec.

Used by the submit and complete forms, by the web form's preview and by ``work_item_submit``
(which derives the branch when none is given). No project imports: any layer may use it.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.utils.text import slugify

BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]*$")
BRANCH_SLUG_MAX = 30


def validate_branch(value: str) -> None:
    """A branch name git and Whim both accept; ValidationError with the rule it breaks."""
    if not BRANCH_RE.match(value):
        raise ValidationError(
            "must start with a letter or digit and hold only letters, digits, '/', '_', '.', '-'"
        )
    if ".." in value:
        raise ValidationError("must not contain '..'")
    if value.endswith("/") or value.endswith(".lock"):
        raise ValidationError("must not end with '/' or '.lock'")


def derive_branch(spec: str) -> str:
    """The branch for a spec with none given: its first heading, slugified, ≤ 30 chars."""
    for line in spec.splitlines():
        match = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            slug = slugify(match.group(1))[:BRANCH_SLUG_MAX].strip("-._")
            if slug and BRANCH_RE.match(slug):
                return slug
            break
    return "task"
