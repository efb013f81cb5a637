"""The name rules for repositories and branches, and the protected-branch policy.

The orchestrator's own rules (``orchestration.forms.branches`` and ``.repos``) repeated here:
the harness runs on the standard library alone, and its copy must agree with them because an
item stored before those rules existed can still reach it. tests/test_branch_policy.py runs
one table of names through both and through ``git check-ref-format --branch``.

- A branch: Whim's characters (ASCII letters, digits, ``/ _ . -``, starting with a letter or
  digit) and git's ref rules (no '..', '//', trailing '/' or '.', no part starting with '.'
  or ending in '.lock', not 'HEAD').
- A repo: GitHub's ``owner/name`` (owner: letters, digits, single hyphens, no hyphen at either
  end, ≤ 39; name: ``[A-Za-z0-9._-]``, ≤ 100, not '.' or '..', not ending in '.git').
- Protected: ``WHIM_PROTECTED_BRANCHES`` globs (fnmatch), matched regardless of case, since a
  case-insensitive filesystem keeps ``Main`` and ``main`` in one ref file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]*$")
REPO_RE = re.compile(r"^(?P<owner>[A-Za-z0-9][A-Za-z0-9-]*)/(?P<name>[A-Za-z0-9._-]+)$")
BRANCH_MAX = 250
OWNER_MAX = 39
NAME_MAX = 100
# When the orchestrator sends no WHIM_PROTECTED_BRANCHES (an older one), the same default.
DEFAULT_PROTECTED = ("main", "master", "develop", "trunk", "release/*", "HEAD")


def branch_error(value: str) -> str | None:
    """Why ``value`` is not a branch name Whim accepts, or None."""
    if not BRANCH_RE.match(value):
        return "must start with a letter or digit and hold only letters, digits, '/', '_', '.', '-'"
    if len(value) > BRANCH_MAX:
        return f"must be at most {BRANCH_MAX} characters"
    if ".." in value:
        return "must not contain '..'"
    if value.endswith(("/", ".lock")):
        return "must not end with '/' or '.lock'"
    if "//" in value:
        return "must not contain '//'"
    parts = value.split("/")
    if any(part.startswith(".") for part in parts):
        return "no part between '/' may start with '.'"
    if any(part.endswith(".lock") for part in parts):
        return "no part between '/' may end with '.lock'"
    if value.endswith("."):
        return "must not end with '.'"
    if value == "HEAD":
        return "must not be 'HEAD' (git's name for the current commit)"
    return None


def repo_error(value: str) -> str | None:
    """Why ``value`` is not an ``owner/name`` GitHub would accept, or None."""
    match = REPO_RE.match(value)
    if not match:
        return "must be owner/name"
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


def parse_globs(text: str | None) -> tuple[str, ...]:
    """``WHIM_PROTECTED_BRANCHES`` as globs; unset means the default, empty means none."""
    if text is None:
        return DEFAULT_PROTECTED
    return tuple(g.strip() for g in text.split(",") if g.strip())


def protected_rule(branch: str, globs: Iterable[str]) -> str | None:
    """The first glob ``branch`` matches (regardless of case), or None."""
    name = branch.casefold()
    for glob in globs:
        if fnmatchcase(name, glob.casefold()):
            return glob
    return None
