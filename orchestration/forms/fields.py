"""The strict fields, their one wording of each mistake, and the base form (API.md "Validation").

Shared by every form in ``orchestration.forms`` and by ``reviews.forms``. Fields are strict about
JSON types: a list where a string belongs is an error, not ``str()``. Also the small checks on
plain JSON-like values that edges use outside a form (``contains_nul`` and
``contains_surrogate`` on request bodies, ``bounded_seconds`` on timings read from metadata).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from orchestration.errors import ValidationFailed
from orchestration.forms.repos import validate_repo

if TYPE_CHECKING:
    from django_stubs_ext import StrPromise

METADATA_MAX_BYTES = 64 * 1024
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
# The one wording for text that is not Unicode (a lone surrogate, bytes that are not UTF-8).
NOT_UNICODE = "must be valid Unicode text"


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...`` of a decoded JSON payload; None where a level is missing or not an
    object (the form then says what is wrong with the field)."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def contains_nul(value: Any) -> bool:
    """True when a NUL byte hides anywhere in a JSON-like value (keys included)."""
    return any("\x00" in text for text in _strings(value))


def contains_surrogate(value: Any) -> bool:
    """True when a lone UTF-16 surrogate hides anywhere in a JSON-like value (keys included).

    JSON's ``"\\ud800"`` escape, UTF-8-encoded surrogates in a JSON body (``json`` decodes
    them with ``surrogatepass``) and undecodable command-line bytes (``surrogateescape``) all
    arrive as one; no database, log or response can encode it.
    """
    return any(_SURROGATE.search(text) for text in _strings(value))


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value, keys included.

    Walks with its own stack: however deep the nesting, no RecursionError.
    """
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, Mapping):
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, list | tuple):
            pending.extend(current)


def bounded_seconds(value: Any, *, default: float = 0.0, cap: float) -> float:
    """A finite number of seconds within [0, cap]; anything else becomes ``default``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return value if 0 <= value <= cap else default


# The one wording of each mistake, shared by every field (API.md ``details``).
MESSAGES: dict[str, str | StrPromise] = {
    "required": "is required",
    "max_length": "must be at most %(limit_value)d characters",
    "min_value": "must be at least %(limit_value)s",
    "max_value": "must be at most %(limit_value)s",
    "invalid": "is not valid",
}


class StrictCharField(forms.CharField):
    """A CharField that refuses non-string JSON values instead of stringifying them."""

    default_error_messages = MESSAGES

    def to_python(self, value: Any) -> str:
        if value is not None and not isinstance(value, str):
            raise ValidationError("must be a string", code="type")
        if value is not None and contains_surrogate(value):
            raise ValidationError(NOT_UNICODE, code="surrogate")
        return str(super().to_python(value))


class StrictIntegerField(forms.IntegerField):
    """An IntegerField that refuses booleans and fractional numbers (and text, in JSON)."""

    default_error_messages = MESSAGES | {"invalid": "must be a whole number"}
    json_only = False  # set by ErrorFirstForm.from_json

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValidationError("must be a whole number", code="type")
        if self.json_only and isinstance(value, str):
            raise ValidationError("must be a whole number", code="type")
        if value is not None and not isinstance(value, str | int | float):
            raise ValidationError("must be a whole number", code="type")
        result: int | None = super().to_python(value)
        return result


class StrictBooleanField(forms.Field):
    """A boolean that is really a boolean (JSON true/false; 'true'/'false' from a form)."""

    default_error_messages = MESSAGES
    json_only = False  # set by ErrorFirstForm.from_json

    def to_python(self, value: Any) -> bool | None:
        if value is None or (value == "" and not self.json_only):
            return None
        if isinstance(value, bool):
            return value
        if self.json_only:
            raise ValidationError("must be true or false", code="type")
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "1", "0"):
            return value.lower() in ("true", "on", "1")
        raise ValidationError("must be true or false", code="type")


class StrictChoiceField(forms.ChoiceField):
    default_error_messages = MESSAGES

    def __init__(self, *, choices: Any, **kwargs: Any) -> None:
        super().__init__(choices=choices, **kwargs)
        values = [str(c[0]) for c in self.choices]  # type: ignore[index,union-attr]
        self.error_messages["invalid_choice"] = "must be one of: " + ", ".join(values)


def dollars(value: Any, *, cap: float, setting: str = "", text_ok: bool = False) -> Decimal:
    """A number of US dollars, finite, from 0 to ``cap``, as a Decimal of six places; else
    ValidationError. JSON numbers only, unless ``text_ok`` (a form field or a command's
    argument, where people type text). ``setting`` names the bound in the message."""
    if text_ok and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValidationError("must be a number of dollars", code="type") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("must be a number of dollars", code="type")
    if not math.isfinite(value) or value < 0:
        raise ValidationError("must be a finite number of dollars, at least 0", code="min_value")
    if value > cap:
        named = f" ({setting})" if setting else ""
        raise ValidationError(f"must be at most {cap:g}{named}", code="max_value")
    return Decimal(str(value)).quantize(Decimal("0.000001"))


class DollarsField(forms.Field):
    """A number of US dollars (``dollars``); ``cap`` is read when the form is cleaned, so a
    changed setting applies at once."""

    default_error_messages = MESSAGES
    json_only = False  # set by ErrorFirstForm.from_json

    def __init__(self, *, cap: Callable[[], float], setting: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cap, self.setting = cap, setting

    def to_python(self, value: Any) -> Decimal | None:
        if value is None or (value == "" and not self.json_only):
            return None
        return dollars(value, cap=self.cap(), setting=self.setting, text_ok=not self.json_only)


def check_json_size(value: Any) -> None:
    """At most METADATA_MAX_BYTES as JSON (and not nested too deeply to write out)."""
    try:
        size = len(json.dumps(value))
    except RecursionError:
        raise ValidationError("is nested too deeply", code="nesting") from None
    if size > METADATA_MAX_BYTES:
        raise ValidationError(
            f"must be at most {METADATA_MAX_BYTES} bytes as JSON", code="max_length"
        )


class JSONObjectField(forms.Field):
    """A JSON object, given as an object (API) or as JSON text (form, command)."""

    default_error_messages = MESSAGES
    json_schema = {
        "type": ["object", "null"],
        "description": f"A JSON object of at most {METADATA_MAX_BYTES} bytes as JSON, no NUL.",
    }

    def to_python(self, value: Any) -> dict[str, Any]:
        if value in (None, ""):
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError) as exc:
                raise ValidationError("must be a JSON object", code="json") from exc
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object", code="type")
        check_json_size(value)
        if contains_nul(value):
            raise ValidationError("Null characters are not allowed.", code="null_characters")
        if contains_surrogate(value):
            raise ValidationError(NOT_UNICODE, code="surrogate")
        return value


class _SharedFields(dict[str, forms.Field]):
    """Fields no form changes: a form's ``copy.deepcopy`` of them is a shallow copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, forms.Field]:
        return dict(self)


class ErrorFirstForm(forms.Form):
    """Forms whose errors read ``{field: "first message"}`` (API.md ``details``)."""

    _shared_json_fields: _SharedFields  # each class's own (``from_json``)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The form over a parsed JSON body, where numbers and booleans must arrive as JSON
        numbers and booleans: a person at the web form or a shell types text, a program
        sending ``"5"`` has a bug worth a 400.

        Its fields are the class's JSON variant, made once and shared by every such form
        (nothing changes a field per request), instead of Django's deep copy per form: the
        hottest callbacks (heartbeats) pay for validation, not for copying."""
        form = cls.__new__(cls)
        form.__dict__["base_fields"] = cls._json_fields()  # what its __init__ copies
        cls.__init__(form, data=data)
        return form

    @classmethod
    def _json_fields(cls) -> dict[str, forms.Field]:
        shared: _SharedFields | None = cls.__dict__.get("_shared_json_fields")
        if shared is None:
            shared = _SharedFields(copy.deepcopy(cls.base_fields))
            for field in shared.values():
                if isinstance(field, StrictIntegerField | StrictBooleanField | DollarsField):
                    field.json_only = True
            cls._shared_json_fields = shared
        return shared

    def validated(self) -> dict[str, Any]:
        """The cleaned data, or ValidationFailed (API.md's 400, with ``details``)."""
        if not self.is_valid():
            raise ValidationFailed("Invalid request", details=self.error_details())
        return self.cleaned_data

    def error_details(self) -> dict[str, str]:
        return {
            ("request" if field == "__all__" else field): str(errors[0])
            for field, errors in self.errors.items()
        }


# GitHub's owner/name rules (``orchestration.forms.repos``), under the name the forms use.
REPO_VALIDATOR = validate_repo
HTTP_URL_VALIDATOR = RegexValidator(r"^https?://", "must be an http(s) URL", code="pattern")
