"""The request forms as JSON Schema: the OpenAPI document's request bodies and query
parameters are read off the forms that validate them (``orchestration.forms``), so the two
cannot drift apart.

Each field kind maps to a schema: a string with its ``max_length`` (and the pattern of a
``RegexValidator``), an integer with its ``min_value``/``max_value``, a choice as an ``enum``,
a boolean, a UUID, dollars with their cap. A field that validates a structure of its own
(a review, learnings, lock paths, a JSON object) carries that structure as ``json_schema``
beside its ``to_python``. An optional field may also be sent as ``null``.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.validators import RegexValidator

from orchestration.forms.branches import validate_branch, validate_unprotected
from orchestration.forms.fields import (
    DollarsField,
    ErrorFirstForm,
    StrictBooleanField,
    StrictChoiceField,
    StrictIntegerField,
)
from orchestration.forms.repos import REPO_PATTERN, REPO_RE, validate_repo

# Validators that are functions, not RegexValidators: what the schema can say of each.
_FUNCTION_RULES: dict[str, dict[str, str]] = {
    # ECMA-262 has no ``(?P<name>``: the same pattern with plain groups.
    validate_repo.__name__: {
        "pattern": re.sub(r"\(\?P<\w+>", "(", REPO_RE.pattern),
        "description": REPO_PATTERN,
    },
    validate_branch.__name__: {
        "description": "a git branch: starts with a letter or digit, then letters, digits, "
        "'/', '_', '.', '-'; no '..', no trailing '/' or '.lock'"
    },
    validate_unprotected.__name__: {"description": "not a protected branch (PROTECTED_BRANCHES)"},
}


def field_schema(field: forms.Field, cleaned_by: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The JSON Schema of one form field's accepted JSON value (``cleaned_by``: validators
    the form's ``clean_<field>`` applies besides the field's own)."""
    schema: dict[str, Any]
    custom = getattr(field, "json_schema", None)
    if custom is not None:
        return dict(custom)
    if isinstance(field, StrictChoiceField):
        values: list[Any] = [str(c[0]) for c in field.choices]  # type: ignore[index,union-attr]
        schema = {"type": "string", "enum": values}
    elif isinstance(field, StrictIntegerField):
        schema = {"type": "integer"}
        if field.min_value is not None:
            schema["minimum"] = field.min_value
        if field.max_value is not None:
            schema["maximum"] = field.max_value
    elif isinstance(field, StrictBooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, DollarsField):
        schema = {"type": "number", "minimum": 0, "maximum": field.cap()}
    elif isinstance(field, forms.UUIDField):
        schema = {"type": "string", "format": "uuid"}
    elif isinstance(field, forms.CharField):
        schema = {"type": "string"}
        if field.max_length is not None:
            schema["maxLength"] = int(field.max_length)
        if field.required:
            schema["minLength"] = 1
        schema.update(_validator_rules([*field.validators, *cleaned_by]))
    else:
        raise TypeError(f"no JSON Schema for {type(field).__name__}: give it a json_schema")
    if not field.required and "enum" not in schema:
        schema["type"] = [schema["type"], "null"]
    elif not field.required:
        schema["enum"] = [*schema["enum"], None]
        schema["type"] = ["string", "null"]
    if field.help_text:
        words = [str(field.help_text), schema.get("description", "")]
        schema["description"] = ": ".join(w for w in words if w)
    return schema


def _validator_rules(validators: list[Any]) -> dict[str, Any]:
    """``pattern`` and ``description`` from the field's validators (the first pattern wins:
    JSON Schema has one; the rest are said in words)."""
    rules: dict[str, Any] = {}
    words: list[str] = []
    for validator in validators:
        if isinstance(validator, RegexValidator) and not validator.inverse_match:
            rules.setdefault("pattern", re.compile(validator.regex).pattern)
            words.append(str(validator.message))
        elif callable(validator) and getattr(validator, "__name__", "") in _FUNCTION_RULES:
            rule = _FUNCTION_RULES[validator.__name__]
            if "pattern" in rule:
                rules.setdefault("pattern", rule["pattern"])
            words.append(rule["description"])
    if words:
        rules["description"] = "; ".join(words)
    return rules


def form_schema(form_class: type[ErrorFirstForm]) -> dict[str, Any]:
    """The JSON Schema of a request body the form validates."""
    fields = form_class.base_fields
    cleaned_by = getattr(form_class, "CLEANED_BY", {})
    properties = {name: field_schema(f, cleaned_by.get(name, ())) for name, f in fields.items()}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [name for name, field in fields.items() if field.required]
    if required:
        schema["required"] = required
    if form_class.__doc__:
        schema["description"] = " ".join(form_class.__doc__.split())
    return schema


def query_parameters(form_class: type[ErrorFirstForm]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for a form that validates a query string (where every value
    arrives as text, so the optional ``null`` is dropped)."""
    params = []
    for name, field in form_class.base_fields.items():
        schema = field_schema(field)
        if isinstance(schema.get("type"), list):
            schema["type"] = schema["type"][0]
        if "enum" in schema:
            schema["enum"] = [v for v in schema["enum"] if v is not None]
        params.append({"name": name, "in": "query", "required": field.required, "schema": schema})
    return params


class _Recorder(dict[str, Any]):
    """A stand-in payload that remembers the key path each lookup took (see ``picked_body``)."""

    def __init__(self, path: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.path = path

    def get(self, key: str, default: Any = None) -> Any:
        return _Recorder((*self.path, key))


def picked_body(form_class: type[ErrorFirstForm], picker: Any) -> dict[str, Any]:
    """The JSON Schema of a nested payload a ``picker`` (payload -> the form's fields) reads:
    each field's schema placed at the key path the picker looks it up by."""
    picked = picker(_Recorder())
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    fields = form_schema(form_class)["properties"]
    for name, recorder in picked.items():
        node = schema
        *parents, leaf = recorder.path
        for key in parents:
            node = node["properties"].setdefault(key, {"type": "object", "properties": {}})
        node["properties"][leaf] = fields[name]
    return schema
