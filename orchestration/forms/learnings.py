"""Learnings as the worker callbacks carry them: ``complete``'s ``learnings: [{content,
spec}]`` (bounded, validated: a wrong type refuses the completion) and the query of
``GET /api/learnings``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from orchestration.forms.fields import (
    MESSAGES,
    REPO_VALIDATOR,
    ErrorFirstForm,
    StrictCharField,
    StrictIntegerField,
)
from orchestration.forms.findings import json_object_of, text_bounded, text_tree_check

LEARNINGS_MAX = 50
LEARNING_CONTENT_MAX = 10_000
LEARNING_SPEC_MAX = 100_000  # a spec's own bound: the original sends the item's spec


class LearningsField(forms.Field):
    """``learnings``: at most LEARNINGS_MAX ``{content, spec}`` objects, bounded strings."""

    default_error_messages = MESSAGES
    json_schema = {
        "type": ["array", "null"],
        "maxItems": LEARNINGS_MAX,
        "items": {
            "type": "object",
            "required": ["content"],
            "properties": {
                "content": {"type": "string", "minLength": 1, "maxLength": LEARNING_CONTENT_MAX},
                "spec": {"type": ["string", "null"], "maxLength": LEARNING_SPEC_MAX},
            },
        },
    }

    def to_python(self, value: Any) -> list[dict[str, str]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError("must be a list of {content, spec} objects", code="type")
        if len(value) > LEARNINGS_MAX:
            raise ValidationError(f"must hold at most {LEARNINGS_MAX} learnings", code="max_length")
        text_tree_check(value)
        learnings = []
        for i, entry in enumerate(value):
            e = json_object_of(entry, f"learnings[{i}]")
            content = text_bounded(
                e.get("content"), f"learnings[{i}].content", limit=LEARNING_CONTENT_MAX
            )
            if not content.strip():
                raise ValidationError(f"learnings[{i}].content must not be blank")
            spec = text_bounded(
                e.get("spec"), f"learnings[{i}].spec", limit=LEARNING_SPEC_MAX, required=False
            )
            learnings.append({"content": content, "spec": spec})
        return learnings


class LearningsQueryForm(ErrorFirstForm):
    """GET /api/learnings query string: ``repo`` (owner/name), ``limit`` (1..50)."""

    repo = StrictCharField(required=False, max_length=200, validators=[REPO_VALIDATOR])
    limit = StrictIntegerField(required=False, min_value=1, max_value=LEARNINGS_MAX)
