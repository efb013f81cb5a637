"""The one definition of valid input (API.md "Validation").

The API, the web form and the management commands all validate through the forms here, so
every edge gives the same messages for the same mistake. Field names are API.md's camelCase.
Fields are strict about JSON types: a list where a string belongs is an error, not ``str()``.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils.text import slugify

from orchestration.errors import ValidationFailed
from orchestration.models import Priority, WorkItemType

if TYPE_CHECKING:
    from django_stubs_ext import StrPromise

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]*$")
SPEC_MAX = 100_000
DESCRIPTION_MAX = 50_000
METADATA_MAX_BYTES = 64 * 1024
BRANCH_SLUG_MAX = 30


def contains_nul(value: Any) -> bool:
    """True when a NUL byte hides anywhere in a JSON-like value (keys included).

    Walks with its own stack: however deep the nesting, no RecursionError.
    """
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return True
        elif isinstance(current, Mapping):
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, list | tuple):
            pending.extend(current)
    return False


def bounded_seconds(value: Any, *, default: float = 0.0, cap: float) -> float:
    """A finite number of seconds within [0, cap]; anything else becomes ``default``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return value if 0 <= value <= cap else default


def validate_branch(value: str) -> None:
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
        return value


class ErrorFirstForm(forms.Form):
    """Forms whose errors read ``{field: "first message"}`` (API.md ``details``)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The form over a parsed JSON body, where numbers and booleans must arrive as JSON
        numbers and booleans: a person at the web form or a shell types text, a program
        sending ``"5"`` has a bug worth a 400."""
        form = cls(data=data)
        for field in form.fields.values():
            if isinstance(field, StrictIntegerField | StrictBooleanField):
                field.json_only = True
        return form

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


REPO_VALIDATOR = RegexValidator(
    REPO_RE,
    "must be owner/name (owner starts with a letter or digit and may hold '-'; "
    "name holds letters, digits, '.', '_', '-')",
    code="pattern",
)
HTTP_URL_VALIDATOR = RegexValidator(r"^https?://", "must be an http(s) URL", code="pattern")


class WorkItemSubmitForm(ErrorFirstForm):
    """POST /api/work, the web form and ``whim submit``."""

    repo = StrictCharField(max_length=200, validators=[REPO_VALIDATOR], help_text="owner/name")
    spec = StrictCharField(required=False, max_length=SPEC_MAX, strip=False, widget=forms.Textarea)
    description = StrictCharField(
        required=False, max_length=DESCRIPTION_MAX, strip=False, widget=forms.Textarea
    )
    branch = StrictCharField(
        required=False,
        max_length=250,
        validators=[validate_branch],
        help_text="Leave empty to derive it from the spec's first heading.",
    )
    priority = StrictChoiceField(required=False, choices=Priority.choices, initial=Priority.MEDIUM)
    maxIterations = StrictIntegerField(required=False, min_value=1, max_value=200, initial=50)
    source = StrictCharField(required=False, max_length=50)
    sourceRef = StrictCharField(required=False, max_length=200)
    metadata = JSONObjectField(required=False, widget=forms.Textarea)
    idempotencyKey = StrictCharField(required=False, max_length=200)

    def clean_priority(self) -> str:
        return self.cleaned_data.get("priority") or Priority.MEDIUM

    def clean_metadata(self) -> dict[str, Any]:
        """The mock agent's keys, when present, are checked here like any other input."""
        meta: dict[str, Any] = self.cleaned_data.get("metadata") or {}
        if "mock" in meta and meta["mock"] not in ("success", "fail", "stuck"):
            raise ValidationError("mock must be success, fail or stuck")
        for key in ("mockSeconds", "mockStartSeconds"):
            if key in meta and bounded_seconds(meta[key], cap=600) != meta[key]:
                raise ValidationError(f"{key} must be a number of seconds from 0 to 600")
        if "mockFile" in meta and not (
            isinstance(meta["mockFile"], str) and 0 < len(meta["mockFile"]) <= 200
        ):
            raise ValidationError("mockFile must be a repo-relative path")
        if "mockLock" in meta and not isinstance(meta["mockLock"], bool):
            raise ValidationError("mockLock must be true or false")
        return meta

    def clean_maxIterations(self) -> int:
        value = self.cleaned_data.get("maxIterations")
        return 50 if value is None else value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        spec = data.get("spec") or ""
        description = data.get("description") or ""
        if "spec" in self.errors or "description" in self.errors:
            return data
        if bool(spec.strip()) == bool(description.strip()):
            self.add_error("spec", "give exactly one of spec or description")
        return data

    def submission(self) -> dict[str, Any]:
        """The cleaned input as keyword arguments for ``work_item_submit``."""
        d = self.cleaned_data
        return {
            "repo": d["repo"],
            "spec": d.get("spec") or "",
            "description": d.get("description") or "",
            "branch": d.get("branch") or "",
            "priority": d["priority"],
            "max_iterations": d["maxIterations"],
            "source": d.get("source") or "",
            "source_ref": d.get("sourceRef") or "",
            "metadata": d.get("metadata") or {},
            "idempotency_key": d.get("idempotencyKey") or None,
        }


class RequeueForm(ErrorFirstForm):
    """POST /api/work/<id>/requeue."""

    resetRetries = StrictBooleanField(required=False)


class KillForm(ErrorFirstForm):
    """POST /api/workers/<id>/kill."""

    reason = StrictCharField(required=False, max_length=1000)


QUEUE_STATUS_FILTERS = ("active", "queued", "failed", "completed", "generating", "cancelled", "all")


class QueueQueryForm(ErrorFirstForm):
    """GET /api/queue query string."""

    status = StrictChoiceField(required=False, choices=[(s, s) for s in QUEUE_STATUS_FILTERS])
    type = StrictChoiceField(required=False, choices=WorkItemType.choices)
    repo = StrictCharField(required=False, max_length=200)
    cursor = StrictCharField(required=False, max_length=200)
    limit = StrictIntegerField(required=False, min_value=1, max_value=200)


# --- Worker callbacks (API.md "Worker callbacks") ------------------------------------------

LOCK_PATH_MAX = 1024
LOCK_FILES_MAX = 1000


def normalise_lock_path(path: str) -> str:
    """A repo-relative, normalised path; refuses absolute paths, '..', NUL, > 1,024 chars."""
    if not path or len(path) > LOCK_PATH_MAX:
        raise ValidationError(f"each path must be 1 to {LOCK_PATH_MAX} characters")
    if "\x00" in path:
        raise ValidationError("Null characters are not allowed.")
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        raise ValidationError(f"{path!r} is absolute; paths are relative to the repository")
    if ".." in path.replace("\\", "/").split("/"):
        raise ValidationError(f"{path!r} contains '..'")
    normal = posixpath.normpath(path.replace("\\", "/"))
    if normal in (".", ""):
        raise ValidationError(f"{path!r} does not name a file")
    return normal


class PathListField(forms.Field):
    """A JSON list of repo-relative file paths, normalised and de-duplicated."""

    default_error_messages = MESSAGES

    def to_python(self, value: Any) -> list[str]:
        if value in (None, ""):
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError("must be a list of file paths", code="type")
        if len(value) > LOCK_FILES_MAX:
            raise ValidationError(f"must hold at most {LOCK_FILES_MAX} paths", code="max_length")
        return sorted({normalise_lock_path(v) for v in value})


class JSONListField(forms.Field):
    default_error_messages = MESSAGES

    def to_python(self, value: Any) -> list[Any]:
        if value in (None, ""):
            return []
        if not isinstance(value, list):
            raise ValidationError("must be a list", code="type")
        check_json_size(value)
        return value


class RegisterForm(ErrorFirstForm):
    workItemId = forms.UUIDField(error_messages={**MESSAGES, "invalid": "must be a UUID"})


INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


class HeartbeatForm(ErrorFirstForm):
    iteration = StrictIntegerField(min_value=0, max_value=1_000_000)
    status = StrictCharField(required=False, max_length=100)
    tokensIn = StrictIntegerField(required=False, min_value=0, max_value=INT8_MAX)
    tokensOut = StrictIntegerField(required=False, min_value=0, max_value=INT8_MAX)


class LockForm(ErrorFirstForm):
    repo = StrictCharField(max_length=200)
    # The metaclass moves declared fields off the class, so BaseForm.files is not shadowed.
    files = PathListField()  # type: ignore[assignment]


class CompleteForm(ErrorFirstForm):
    prUrl = StrictCharField(required=False, max_length=500, validators=[HTTP_URL_VALIDATOR])
    prNumber = StrictIntegerField(required=False, min_value=1, max_value=INT4_MAX)
    verificationEnabled = StrictBooleanField(required=False)
    verificationPassed = StrictBooleanField(required=False)
    review = JSONObjectField(required=False)
    metrics = JSONObjectField(required=False)
    learnings = JSONListField(required=False)
    commitSha = StrictCharField(
        required=False,
        max_length=64,
        validators=[RegexValidator(r"^[0-9a-f]{7,64}$", "must be a hex commit id", code="pattern")],
    )
    branch = StrictCharField(required=False, max_length=250, validators=[validate_branch])

    BIG_METRICS = ("tokensIn", "tokensOut", "duration")  # bigint columns; the rest are int
    METRIC_KEYS = (
        "tokensIn",
        "tokensOut",
        "duration",
        "filesModified",
        "testsRun",
        "testsPassed",
        "testsFailed",
    )

    def clean_metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.cleaned_data.get("metrics") or {}
        for key in self.METRIC_KEYS:
            value = metrics.get(key)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= (INT8_MAX if key in self.BIG_METRICS else INT4_MAX)
            ):
                raise ValidationError(f"{key} must be a finite number, not negative, in range")
        status = metrics.get("testStatus")
        if status is not None and not isinstance(status, str):
            raise ValidationError("testStatus must be a string")
        return metrics


class FailForm(ErrorFirstForm):
    error = StrictCharField(max_length=100_000)
    iteration = StrictIntegerField(required=False, min_value=0, max_value=1_000_000)
    stack = StrictCharField(required=False, max_length=100_000, strip=False)
    category = StrictCharField(
        required=False,
        max_length=40,
        validators=[
            RegexValidator(r"^[A-Z][A-Z0-9_]*$", "must be UPPER_SNAKE_CASE", code="pattern")
        ],
    )
    context = JSONObjectField(required=False)


class StuckForm(ErrorFirstForm):
    reason = StrictCharField(max_length=10_000)
    attempts = StrictIntegerField(required=False, min_value=0, max_value=1_000_000)


class GitHubDeliveryForm(ErrorFirstForm):
    """A GitHub webhook delivery (POST /webhooks/github): its headers and ``action``."""

    delivery = StrictCharField(
        max_length=100,
        validators=[RegexValidator(r"^[A-Za-z0-9-]+$", "must be a delivery id", code="pattern")],
    )
    event = StrictCharField(
        max_length=50,
        validators=[RegexValidator(r"^[a-z_]+$", "must be a GitHub event name", code="pattern")],
    )
    action = StrictCharField(required=False, max_length=50)


class GitHubReviewForm(ErrorFirstForm):
    """What Whim reads from a ``pull_request_review`` delivery (see ``review_fields``)."""

    repo = StrictCharField(max_length=200, validators=[REPO_VALIDATOR])
    prNumber = StrictIntegerField(min_value=1, max_value=INT4_MAX)
    reviewer = StrictCharField(required=False, max_length=100)  # a deleted account: null
    state = StrictCharField(max_length=50)
    body = StrictCharField(required=False, max_length=65_536, strip=False)  # GitHub's limit
    url = StrictCharField(required=False, max_length=500, validators=[HTTP_URL_VALIDATOR])

    def clean_reviewer(self) -> str:
        return self.cleaned_data.get("reviewer") or "ghost"  # GitHub's name for the deleted

    @staticmethod
    def review_fields(payload: dict[str, Any]) -> dict[str, Any]:
        """The form's fields picked out of GitHub's nested payload (missing → None)."""

        def dig(*keys: str) -> Any:
            value: Any = payload
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return value

        return {
            "repo": dig("repository", "full_name"),
            "prNumber": dig("pull_request", "number"),
            "reviewer": dig("review", "user", "login"),
            "state": dig("review", "state"),
            "body": dig("review", "body"),
            "url": dig("review", "html_url"),
        }
