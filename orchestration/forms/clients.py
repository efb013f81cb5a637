"""Forms for clients: what people and programs send (API.md "Work items", "Queue").

POST /api/work, the web form and ``whim submit`` (``WorkItemSubmitForm``); requeue, continue
and kill; the GET /api/queue query (``QueueQueryForm``) and its status filters; the ids the
queue page's bulk actions send (``parse_uuid_list``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django import forms
from django.core.exceptions import ValidationError

from orchestration.fleet import MAX_NODE_LABELS, NODE_LABEL_RE
from orchestration.forms.branches import (
    derive_branch,
    protected_message,
    protected_rule,
    validate_branch,
    validate_unprotected,
)
from orchestration.forms.fields import (
    REPO_VALIDATOR,
    DollarsField,
    ErrorFirstForm,
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
    bounded_seconds,
    dollars,
)
from orchestration.models import QUEUE_STATUS_NAMES, Priority, WorkItemType

SPEC_MAX = 100_000
# The most an item's cost cap (metadata maxCostUsd, a continue) may say, in USD: a bound on
# input, not a policy (DAILY_COST_BUDGET is the policy).
MAX_COST_CAP_USD = 1_000_000.0
DESCRIPTION_MAX = 50_000


class WorkItemSubmitForm(ErrorFirstForm):
    """POST /api/work, the web form and ``whim submit``."""

    repo = StrictCharField(max_length=200, help_text="owner/name")
    spec = StrictCharField(required=False, max_length=SPEC_MAX, strip=False, widget=forms.Textarea)
    description = StrictCharField(
        required=False, max_length=DESCRIPTION_MAX, strip=False, widget=forms.Textarea
    )
    branch = StrictCharField(
        required=False,
        max_length=250,
        validators=[validate_branch, validate_unprotected],
        help_text="Leave empty to derive it from the spec's first heading.",
    )
    priority = StrictChoiceField(required=False, choices=Priority.choices, initial=Priority.MEDIUM)
    maxIterations = StrictIntegerField(required=False, min_value=1, max_value=200, initial=50)
    source = StrictCharField(required=False, max_length=50)
    sourceRef = StrictCharField(required=False, max_length=200)
    metadata = JSONObjectField(required=False, widget=forms.Textarea)
    idempotencyKey = StrictCharField(required=False, max_length=200)
    # Validators a ``clean_<field>`` applies after the field's own checks (the OpenAPI
    # document reads them too: orchestration.api.openapi_forms).
    CLEANED_BY = {"repo": (REPO_VALIDATOR,)}

    def clean_repo(self) -> str:
        """GitHub's rules, once the length bound has passed (so an over-long repo is told
        that, and not which of owner or name is too long)."""
        repo: str = self.cleaned_data["repo"]
        for validator in self.CLEANED_BY["repo"]:
            validator(repo)
        return repo

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
        if "nodeLabels" in meta:  # the labels a node must offer to run it (services.placement)
            labels = meta["nodeLabels"]
            if not (
                isinstance(labels, list)
                and len(labels) <= MAX_NODE_LABELS
                and all(isinstance(x, str) and NODE_LABEL_RE.fullmatch(x) for x in labels)
            ):
                raise ValidationError(
                    f"nodeLabels must be a list of at most {MAX_NODE_LABELS} labels, each "
                    "[a-z0-9][a-z0-9_.-]{0,62}"
                )
        if "maxCostUsd" in meta:  # the item's cost cap (services.costs; 0: none)
            try:
                dollars(meta["maxCostUsd"], cap=MAX_COST_CAP_USD)
            except ValidationError as exc:
                raise ValidationError(f"maxCostUsd {exc.messages[0]}") from None
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
        elif spec.strip() and not data.get("branch") and "branch" not in self.errors:
            # The branch derived from the spec avoids protected names; only a glob covering
            # every fallback (``*``) is left, and then the submitter must name a branch.
            derived = derive_branch(spec)
            rule = protected_rule(derived)
            if rule is not None:
                self.add_error("branch", protected_message(derived, rule))
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


class ContinueForm(ErrorFirstForm):
    """POST /api/work/<id>/continue (also the console's field and ``whim continue``)."""

    maxCostUsd = DollarsField(cap=lambda: MAX_COST_CAP_USD)


class RequeueForm(ErrorFirstForm):
    """POST /api/work/<id>/requeue."""

    resetRetries = StrictBooleanField(required=False)


class KillForm(ErrorFirstForm):
    """POST /api/workers/<id>/kill."""

    reason = StrictCharField(required=False, max_length=1000)
    # As the original Whim: a killed attempt's item is retried with backoff unless false.
    retry = StrictBooleanField(required=False)


class QueueQueryForm(ErrorFirstForm):
    """GET /api/queue query string."""

    status = StrictChoiceField(required=False, choices=[(s, s) for s in QUEUE_STATUS_NAMES])
    type = StrictChoiceField(required=False, choices=WorkItemType.choices)
    repo = StrictCharField(required=False, max_length=200)
    cursor = StrictCharField(required=False, max_length=200)
    limit = StrictIntegerField(required=False, min_value=1, max_value=200)


def parse_uuid_list(values: list[str], *, limit: int) -> list[UUID]:
    """The well-formed UUIDs among ``values`` (at most ``limit``), malformed ones dropped.

    The queue page's checkboxes send these; a tampered value selects nothing rather than
    failing the whole bulk action.
    """
    out: list[UUID] = []
    for value in values[:limit]:
        try:
            out.append(UUID(value))
        except ValueError:
            continue
    return out
