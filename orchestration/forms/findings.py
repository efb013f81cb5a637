"""An attempt's self-review as ``complete`` reports it: the original Whim's ``{modelUsed,
findings: ReviewFindings}``.

It comes from the harness, which relays what a model wrote, so every string is bounded and
every known key's type is checked: a wrong type refuses the whole completion (API.md's error
shape, nothing written). What is stored is the normalised shape — known keys only, missing
lists and optional strings filled in — so every surface can render it without guessing.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from orchestration.forms.fields import (
    INT4_MAX,
    MESSAGES,
    NOT_UNICODE,
    contains_nul,
    contains_surrogate,
)

SPEC_ALIGNMENT_SCORES = ("aligned", "partial", "misaligned")
CODE_QUALITY_SCORES = ("good", "acceptable", "needs-work")
SUMMARY_MAX = 20_000
ITEM_TEXT_MAX = 5_000
LIST_MAX = 100
PATH_MAX = 1_024
MODEL_MAX = 100


def text_bounded(value: Any, where: str, *, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{where} must be a string")
    if len(value) > limit:
        raise ValidationError(f"{where} must be at most {limit} characters")
    return value


def json_object_of(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object")
    return value


def _texts(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(f"{where} must be a list of strings")
    if len(value) > LIST_MAX:
        raise ValidationError(f"{where} must hold at most {LIST_MAX} entries")
    return [text_bounded(v, f"each of {where}", limit=ITEM_TEXT_MAX) for v in value]


def _score(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(f"{where} must be one of {', '.join(allowed)}")
    return str(value)


def _concern(value: Any, where: str) -> dict[str, Any]:
    c = json_object_of(value, where)
    line = c.get("line")
    if line is not None and (
        isinstance(line, bool) or not isinstance(line, int) or not 0 <= line <= INT4_MAX
    ):
        raise ValidationError(f"{where}.line must be a whole number, not negative")
    concern: dict[str, Any] = {
        "file": text_bounded(c.get("file"), f"{where}.file", limit=PATH_MAX, required=False),
        "issue": text_bounded(c.get("issue"), f"{where}.issue", limit=ITEM_TEXT_MAX),
        "suggestion": text_bounded(
            c.get("suggestion"), f"{where}.suggestion", limit=ITEM_TEXT_MAX, required=False
        ),
    }
    if line is not None:
        concern["line"] = line
    return concern


def review_findings_clean(value: Any) -> dict[str, Any]:
    """ReviewFindings, normalised; ValidationError naming the first bad key."""
    f = json_object_of(value, "findings")
    spec = json_object_of(f.get("specAlignment"), "findings.specAlignment")
    quality = json_object_of(f.get("codeQuality"), "findings.codeQuality")
    concerns = quality.get("concerns")
    if concerns is not None and not isinstance(concerns, list):
        raise ValidationError("findings.codeQuality.concerns must be a list")
    if concerns and len(concerns) > LIST_MAX:
        raise ValidationError(f"findings.codeQuality.concerns must hold at most {LIST_MAX}")
    return {
        "specAlignment": {
            "score": _score(spec.get("score"), "specAlignment.score", SPEC_ALIGNMENT_SCORES),
            "summary": text_bounded(
                spec.get("summary"), "specAlignment.summary", limit=SUMMARY_MAX
            ),
            "gaps": _texts(spec.get("gaps"), "specAlignment.gaps"),
            "extras": _texts(spec.get("extras"), "specAlignment.extras"),
        },
        "codeQuality": {
            "score": _score(quality.get("score"), "codeQuality.score", CODE_QUALITY_SCORES),
            "summary": text_bounded(
                quality.get("summary"), "codeQuality.summary", limit=SUMMARY_MAX
            ),
            "concerns": [
                _concern(c, f"codeQuality.concerns[{i}]") for i, c in enumerate(concerns or [])
            ],
        },
        "overallSummary": text_bounded(
            f.get("overallSummary"), "overallSummary", limit=SUMMARY_MAX
        ),
    }


def text_tree_check(value: Any) -> None:
    if contains_nul(value):
        raise ValidationError("Null characters are not allowed.", code="null_characters")
    if contains_surrogate(value):
        raise ValidationError(NOT_UNICODE, code="surrogate")


def _text(limit: int, *, null: bool = False) -> dict[str, Any]:
    return {"type": ["string", "null"] if null else "string", "maxLength": limit}


def _texts_schema() -> dict[str, Any]:
    return {"type": ["array", "null"], "maxItems": LIST_MAX, "items": _text(ITEM_TEXT_MAX)}


# ReviewFindings as ``review_findings_clean`` accepts it (the OpenAPI document's schema).
FINDINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specAlignment", "codeQuality", "overallSummary"],
    "properties": {
        "specAlignment": {
            "type": "object",
            "required": ["score", "summary"],
            "properties": {
                "score": {"enum": list(SPEC_ALIGNMENT_SCORES)},
                "summary": _text(SUMMARY_MAX),
                "gaps": _texts_schema(),
                "extras": _texts_schema(),
            },
        },
        "codeQuality": {
            "type": "object",
            "required": ["score", "summary"],
            "properties": {
                "score": {"enum": list(CODE_QUALITY_SCORES)},
                "summary": _text(SUMMARY_MAX),
                "concerns": {
                    "type": ["array", "null"],
                    "maxItems": LIST_MAX,
                    "items": {
                        "type": "object",
                        "required": ["issue"],
                        "properties": {
                            "file": _text(PATH_MAX, null=True),
                            "line": {
                                "type": ["integer", "null"],
                                "minimum": 0,
                                "maximum": INT4_MAX,
                            },
                            "issue": _text(ITEM_TEXT_MAX),
                            "suggestion": _text(ITEM_TEXT_MAX, null=True),
                        },
                    },
                },
            },
        },
        "overallSummary": _text(SUMMARY_MAX),
    },
}


class ReviewField(forms.Field):
    """``review``: ``{modelUsed, findings: ReviewFindings}``; absent or null: no review."""

    default_error_messages = MESSAGES
    json_schema = {
        "type": ["object", "null"],
        "required": ["modelUsed", "findings"],
        "properties": {"modelUsed": _text(MODEL_MAX), "findings": FINDINGS_SCHEMA},
    }

    def to_python(self, value: Any) -> dict[str, Any] | None:
        if value is None or value == {}:
            return None
        review = json_object_of(value, "review")
        text_tree_check(review)
        return {
            "modelUsed": text_bounded(review.get("modelUsed"), "modelUsed", limit=MODEL_MAX),
            "findings": review_findings_clean(review.get("findings")),
        }
