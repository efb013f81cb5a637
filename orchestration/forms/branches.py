"""The branch rules: which branch names Whim accepts, which it protects, and the branch
derived from a spec.

Used by the submit and complete forms, the web form's preview and
``work_item_submit`` (which derives the branch when none is given). No project imports: any
layer may use it.

A name is accepted when ``git check-ref-format --branch`` accepts it *and* it keeps to Whim's
narrower character set (ASCII letters, digits, ``/ _ . -``, starting with a letter or digit):
the name travels through URLs, log lines and the agent's environment, where quoting is never
needed for those. The git rules are checked here in Python (no subprocess in a web request);
tests/test_branch_policy.py runs a table of tricky names through real git to keep them equal.
The harness keeps its own copy (workers/harness/harness/refs.py); the same test compares them.

Protected names (``WHIM_PROTECTED_BRANCHES``, fnmatch globs) are refused at submit. They are
matched without regard to case: on a case-insensitive filesystem ``Main`` and ``main`` are one
ref file, so refusing only ``main`` would protect nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.text import slugify

BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]*$")
BRANCH_SLUG_MAX = 30
DEFAULT_PROTECTED = ("main", "master", "develop", "trunk", "release/*", "HEAD")


def branch_error(value: str) -> str | None:
    """Why ``value`` is not a branch name Whim accepts (the first rule it breaks), or None.

    1. Whim's character set, starting with a letter or digit (so never '-', '.', '/', '@',
       control characters, space or any of ``~^:?*[\\{``);
    2. git: no '..'; no trailing '/' or '.lock'; no '//'; no part between slashes starting
       with '.' or ending in '.lock'; no trailing '.'; not 'HEAD'.
    """
    if not BRANCH_RE.match(value):
        return "must start with a letter or digit and hold only letters, digits, '/', '_', '.', '-'"
    if ".." in value:
        return "must not contain '..'"
    if value.endswith("/") or value.endswith(".lock"):
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


def validate_branch(value: str) -> None:
    """A branch name git and Whim both accept; ValidationError with the rule it breaks."""
    message = branch_error(value)
    if message is not None:
        raise ValidationError(message, code="branch")


def protected_globs(globs: Iterable[str] | None = None) -> tuple[str, ...]:
    """The configured ``WHIM_PROTECTED_BRANCHES`` globs, stripped, empties dropped."""
    raw = settings.WHIM_PROTECTED_BRANCHES if globs is None else globs
    return tuple(g.strip() for g in raw if g.strip())


def protected_rule(branch: str, globs: Iterable[str] | None = None) -> str | None:
    """The first protected glob ``branch`` matches (case-insensitively), or None."""
    name = branch.casefold()
    for glob in protected_globs(globs):
        if fnmatchcase(name, glob.casefold()):
            return glob
    return None


def protected_message(branch: str, rule: str) -> str:
    return (
        f"'{branch}' is protected (WHIM_PROTECTED_BRANCHES rule '{rule}'); "
        "Whim never pushes to it: choose another branch"
    )


def validate_unprotected(value: str) -> None:
    """Refuse a protected branch, naming the rule it matches (after ``validate_branch``)."""
    rule = protected_rule(value)
    if rule is not None:
        raise ValidationError(protected_message(value, rule), code="protected")


def derive_branch(spec: str) -> str:
    """The branch for a spec with none given: its first heading, slugified, ≤ 30 chars.

    Never a protected name: a heading such as "# Main" gives ``whim/main``; then ``task``
    and ``whim/task`` are tried. Only a glob protecting all of those (``*``) leaves a
    protected result, which the submit form refuses (and the harness would not push).
    """
    slug = ""
    for line in spec.splitlines():
        match = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            slug = slugify(match.group(1))[:BRANCH_SLUG_MAX].strip("-._")
            break
    candidates = [slug, f"whim/{slug}"] if slug and branch_error(slug) is None else []
    candidates += ["task", "whim/task"]
    for candidate in candidates:
        if protected_rule(candidate) is None:
            return candidate
    return candidates[-1]
