"""Learnings: what earlier attempts on a repository noted, handed to the next agent and collected
from it, in the original Whim's markdown forms.

``learnings_markdown`` writes the orchestrator's list (``GET /api/learnings``) as
``.whim/learnings.md``; ``learnings_parse`` reads the ``.whim/new-learnings.md`` the agent wrote:
every ``## `` section whose heading names a learning, insight or note is one learning (its
non-blank lines, rules dropped); a file with no such section is one learning as a whole
(headings and rules dropped). Both are bounded in count and size: the file is the agent's
writing, and what is collected is stored and shown.
"""

from __future__ import annotations

import re
from typing import Any

MAX_LEARNINGS_IN = 50  # what the API answers at most
MAX_LEARNINGS_OUT = 20  # collected from one attempt
MAX_TEXT_CHARS = 64 * 1024  # of new-learnings.md read
MAX_CONTENT_CHARS = 4000
MAX_SPEC_CHARS = 500  # an excerpt: it titles the learning; 20 copies stay small
SPEC_TITLE_CHARS = 50
SECTION = re.compile(r"^## ", re.MULTILINE)
HEADING = re.compile(r"^#.*$", re.MULTILINE)
RULE = re.compile(r"^---$", re.MULTILINE)
KINDS = ("learning", "insight", "note")


def learnings_markdown(items: list[dict[str, Any]]) -> str:
    """``.whim/learnings.md`` for the orchestrator's learnings (newest first); "" for none."""
    lines = ["# Learnings from Previous Tasks", ""]
    count = 0
    for item in items[:MAX_LEARNINGS_IN]:
        content = item.get("content") if isinstance(item, dict) else None
        if not isinstance(content, str) or not content.strip():
            continue
        spec = item.get("spec")
        title = " ".join(spec.split())[:SPEC_TITLE_CHARS] if isinstance(spec, str) else ""
        lines += [f"## From: {title or 'an earlier task'}...", ""]
        lines += [_bounded(content), "", "---", ""]
        count += 1
    return "\n".join(lines) if count else ""


def learnings_parse(text: str, *, spec: str) -> list[dict[str, str]]:
    """The learnings in an agent's ``new-learnings.md``, each ``{content, spec}``."""
    text = text[:MAX_TEXT_CHARS].replace("\x00", "").replace("\r\n", "\n")
    spec = spec[:MAX_SPEC_CHARS]
    learnings: list[dict[str, str]] = []
    for section in SECTION.split(text):
        if not section.strip():
            continue
        heading, _, body = section.partition("\n")
        if not any(kind in heading.lower() for kind in KINDS):
            continue
        lines = [line for line in body.split("\n") if line.strip() and line.strip() != "---"]
        content = "\n".join(lines).strip()
        if content:
            learnings.append({"content": _bounded(content), "spec": spec})
    if not learnings:
        whole = RULE.sub("", HEADING.sub("", text)).strip()
        if whole:
            learnings.append({"content": _bounded(whole), "spec": spec})
    return learnings[:MAX_LEARNINGS_OUT]


def _bounded(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_CONTENT_CHARS else text[: MAX_CONTENT_CHARS - 1] + "…"
