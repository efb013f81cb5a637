"""Review findings in the original Whim's ``ReviewFindings`` object shape, whatever was stored.

An attempt's self-review reports that object. A person's review on GitHub (the webhook) is
mapped into it when stored (``github_review_findings``); rows stored before that hold a list
of ``{severity, message, url?}`` and are mapped when read (``findings_object``), so every API
answer has ``specAlignment``, ``codeQuality`` and ``overallSummary``.

A GitHub review state maps to the scores so: ``approved`` → aligned / good,
``changes_requested`` → partial / needs-work, anything else (``commented``, ``dismissed``)
→ aligned / acceptable (a comment raises no objection to the spec).
"""

from __future__ import annotations

from typing import Any

SCORES: dict[str, tuple[str, str]] = {
    "approved": ("aligned", "good"),
    "changes_requested": ("partial", "needs-work"),
}
DEFAULT_SCORES = ("aligned", "acceptable")
# Worst first: the scores of a list of findings are its worst state's.
STATE_RANK = ("changes_requested", "commented", "dismissed", "approved")


def _text(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("message", "issue", "description", "text", "body", "title"):
            if value.get(key):
                return str(value[key])
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _object(
    *, scores: tuple[str, str], summary: str, quality: str, concerns: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "specAlignment": {"score": scores[0], "summary": "", "gaps": [], "extras": []},
        "codeQuality": {"score": scores[1], "summary": quality, "concerns": concerns},
        "overallSummary": summary,
    }


def github_review_findings(*, state: str, body: str, url: str, reviewer: str) -> dict[str, Any]:
    """A person's GitHub review as a ReviewFindings object: the body is the summary."""
    state = state.lower()
    quality = f"GitHub review by {reviewer}: {state}" + (f" ({url})" if url else "")
    return _object(
        scores=SCORES.get(state, DEFAULT_SCORES),
        summary=body or f"review {state}",
        quality=quality,
        concerns=[],
    )


def findings_object(raw: Any) -> dict[str, Any]:
    """``raw`` (a stored review's findings) in the ReviewFindings shape.

    The object shape passes through. A list (older GitHub reviews, or an agent's list of
    findings): the messages become the summary, findings naming a file become concerns,
    the scores follow the worst GitHub state among them. Nothing at all: an empty review.
    """
    if isinstance(raw, dict) and isinstance(raw.get("specAlignment"), dict):
        return raw
    items = raw if isinstance(raw, list) else ([raw] if raw else [])
    states = [
        str(i.get("severity", "")).lower()
        for i in items
        if isinstance(i, dict) and str(i.get("severity", "")).lower() in STATE_RANK
    ]
    worst = min(states, key=STATE_RANK.index) if states else ""
    concerns, messages, urls = [], [], []
    for item in items:
        if isinstance(item, dict) and item.get("file"):
            concern: dict[str, Any] = {"file": str(item["file"]), "issue": _text(item)}
            if isinstance(item.get("line"), int):
                concern["line"] = item["line"]
            concern["suggestion"] = str(item.get("suggestion") or "")
            concerns.append(concern)
        else:
            messages.append(_text(item))
        if isinstance(item, dict) and item.get("url"):
            urls.append(str(item["url"]))
    return _object(
        scores=SCORES.get(worst, DEFAULT_SCORES),
        summary="\n\n".join(messages) or ("No findings reported." if not items else ""),
        quality=" ".join(urls),
        concerns=concerns,
    )
