"""Forms for worker callbacks: what a worker's harness reports (API.md "Worker callbacks").

Register, heartbeat, lock, complete, fail and stuck, and the normalisation of the repo-relative
paths a worker locks (``normalise_lock_path``).
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from orchestration.forms.branches import validate_branch
from orchestration.forms.fields import (
    HTTP_URL_VALIDATOR,
    INT4_MAX,
    INT8_MAX,
    MESSAGES,
    REPO_VALIDATOR,
    DollarsField,
    ErrorFirstForm,
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    dollars,
)
from orchestration.forms.findings import ReviewField
from orchestration.forms.learnings import LearningsField

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
    json_schema = {
        "type": "array",
        "maxItems": LOCK_FILES_MAX,
        "items": {"type": "string", "minLength": 1, "maxLength": LOCK_PATH_MAX},
        "description": "Repo-relative paths: not absolute, no '..', no NUL.",
    }

    def to_python(self, value: Any) -> list[str]:
        if value in (None, ""):
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError("must be a list of file paths", code="type")
        if len(value) > LOCK_FILES_MAX:
            raise ValidationError(f"must hold at most {LOCK_FILES_MAX} paths", code="max_length")
        return sorted({normalise_lock_path(v) for v in value})


DIFF_FILES_MAX = 1000
DIFF_RANGES_MAX = 200


class DiffLinesField(forms.Field):
    """``diffLines`` (a review job): ``{path: [[start, end], ...]}``, the new-side lines of the
    pull request's diff, where line comments may go. At most 1,000 files of 200 ranges each;
    paths as the lock paths are (repo-relative, no '..'), ranges ordered 1 ≤ start ≤ end."""

    default_error_messages = MESSAGES
    json_schema = {
        "type": ["object", "null"],
        "maxProperties": DIFF_FILES_MAX,
        "additionalProperties": {
            "type": "array",
            "maxItems": DIFF_RANGES_MAX,
            "items": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": INT4_MAX},
                "minItems": 2,
                "maxItems": 2,
            },
        },
        "description": "{path: [[start, end], ...]}, 1 <= start <= end.",
    }

    def to_python(self, value: Any) -> dict[str, list[list[int]]] | None:
        if value in (None, {}):
            return None
        if not isinstance(value, dict):
            raise ValidationError("must be an object of file paths to line ranges", code="type")
        if len(value) > DIFF_FILES_MAX:
            raise ValidationError(f"must hold at most {DIFF_FILES_MAX} files", code="max_length")
        lines: dict[str, list[list[int]]] = {}
        for path, ranges in value.items():
            where = normalise_lock_path(path)
            if not isinstance(ranges, list) or len(ranges) > DIFF_RANGES_MAX:
                raise ValidationError(
                    f"{where}: must be a list of at most {DIFF_RANGES_MAX} [start, end] ranges"
                )
            for pair in ranges:
                if not (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(isinstance(n, int) and not isinstance(n, bool) for n in pair)
                    and 1 <= pair[0] <= pair[1] <= INT4_MAX
                ):
                    raise ValidationError(
                        f"{where}: each range must be [start, end], 1 ≤ start ≤ end"
                    )
            lines[where] = [list(pair) for pair in ranges]
        return lines


class RegisterForm(ErrorFirstForm):
    workItemId = forms.UUIDField(error_messages={**MESSAGES, "invalid": "must be a UUID"})


COST_SETTING = "MAX_COST_PER_ATTEMPT_USD"


def metric_cap(key: str) -> tuple[int, str]:
    """The most a worker may report for one metric, and the setting that says so (read at
    call time, so a changed setting applies at once)."""
    if key in ("tokensIn", "tokensOut"):
        return settings.MAX_TOKENS_PER_ATTEMPT, "MAX_TOKENS_PER_ATTEMPT"
    if key == "duration":
        return settings.MAX_ATTEMPT_DURATION_MS, "MAX_ATTEMPT_DURATION_MS"
    return settings.MAX_METRIC_COUNT, "MAX_METRIC_COUNT"


def check_tokens(value: int | None, key: str) -> int | None:
    """A token count within the attempt's bound (the form's range check came first)."""
    cap, name = metric_cap(key)
    if value is not None and value > cap:
        raise ValidationError(f"must be at most {cap} ({name})", code="max_value")
    return value


# A full commit id (SHA-1, or SHA-256 for repositories that use it).
FULL_COMMIT_VALIDATOR = RegexValidator(
    r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$", "must be a full hex commit id", code="pattern"
)


class HeartbeatForm(ErrorFirstForm):
    iteration = StrictIntegerField(min_value=0, max_value=1_000_000)
    status = StrictCharField(required=False, max_length=100)
    # The pushed commit this attempt checked out and continues from (a retry resuming).
    resumedFrom = StrictCharField(required=False, max_length=64, validators=[FULL_COMMIT_VALIDATOR])
    tokensIn = StrictIntegerField(required=False, min_value=0, max_value=INT8_MAX)
    tokensOut = StrictIntegerField(required=False, min_value=0, max_value=INT8_MAX)
    costUsd = DollarsField(
        required=False, cap=lambda: settings.MAX_COST_PER_ATTEMPT_USD, setting=COST_SETTING
    )
    model = StrictCharField(required=False, max_length=100)

    def clean_tokensIn(self) -> int | None:
        return check_tokens(self.cleaned_data.get("tokensIn"), "tokensIn")

    def clean_tokensOut(self) -> int | None:
        return check_tokens(self.cleaned_data.get("tokensOut"), "tokensOut")


class LockForm(ErrorFirstForm):
    repo = StrictCharField(max_length=200, validators=[REPO_VALIDATOR])
    # The metaclass moves declared fields off the class, so BaseForm.files is not shadowed.
    files = PathListField()  # type: ignore[assignment]
    # lock only: true asks for the original Whim's semantics (take the free paths, list both).
    partial = StrictBooleanField(required=False)


class CompleteForm(ErrorFirstForm):
    prUrl = StrictCharField(required=False, max_length=500, validators=[HTTP_URL_VALIDATOR])
    prNumber = StrictIntegerField(required=False, min_value=1, max_value=INT4_MAX)
    verificationEnabled = StrictBooleanField(required=False)
    verificationPassed = StrictBooleanField(required=False)
    review = ReviewField(required=False)
    metrics = JSONObjectField(required=False)
    learnings = LearningsField(required=False)
    commitSha = StrictCharField(
        required=False,
        max_length=64,
        validators=[RegexValidator(r"^[0-9a-f]{7,64}$", "must be a hex commit id", code="pattern")],
    )
    branch = StrictCharField(required=False, max_length=250, validators=[validate_branch])
    model = StrictCharField(required=False, max_length=100)
    warning = StrictCharField(required=False, max_length=2000)
    # A spec attempt's result (SPEC_GENERATOR=agent): Markdown, at most SPEC_MAX_BYTES.
    spec = StrictCharField(required=False, strip=False)
    diffLines = DiffLinesField(required=False)  # a review job's diff lines

    BIG_METRICS = ("tokensIn", "tokensOut", "duration")  # bigint columns; the rest are int
    METRIC_KEYS = (
        "tokensIn",
        "tokensOut",
        "duration",
        "filesModified",
        "testsRun",
        "testsPassed",
        "testsFailed",
        "iterations",
    )
    TEST_STATUSES = ("passed", "failed", "timeout", "skipped", "error")

    def clean_spec(self) -> str | None:
        """None when not reported, or null (the form gives "" for an absent field)."""
        if self.data.get("spec") is None:
            return None
        spec: str = self.cleaned_data.get("spec") or ""
        size = len(spec.encode("utf-8", errors="replace"))
        if size > settings.SPEC_MAX_BYTES:
            raise ValidationError(
                f"must be at most {settings.SPEC_MAX_BYTES} bytes (SPEC_MAX_BYTES), not {size}",
                code="max_length",
            )
        return spec

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
            cap, name = metric_cap(key)
            if value is not None and value > cap:
                raise ValidationError(f"{key} must be at most {cap} ({name})")
        status = metrics.get("testStatus")
        if status is not None and status not in self.TEST_STATUSES:
            raise ValidationError(f"testStatus must be one of {', '.join(self.TEST_STATUSES)}")
        if metrics.get("costUsd") is not None:
            # Checked, and kept a JSON number (metrics may be stored as JSON); the ledger
            # reads it as dollars (services.costs.usd).
            try:
                dollars(
                    metrics["costUsd"], cap=settings.MAX_COST_PER_ATTEMPT_USD, setting=COST_SETTING
                )
            except ValidationError as exc:
                raise ValidationError(f"costUsd {exc.messages[0]}") from None
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
