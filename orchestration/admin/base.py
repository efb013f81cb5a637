"""The admin's shared machinery: fast list pages and actions that ask why.

- List pages never run a full ``COUNT(*)``: ``show_full_result_count = False`` and a
  paginator that counts at most ``COUNT_CAP`` rows (an unfiltered table uses PostgreSQL's
  row estimate instead). Filters list fixed choices or recent values, never a DISTINCT scan.
- Every action calls the same service as the API, with the actor ``admin:<user>``, so each
  leaves an audit event; services are idempotent, so a double click (or two admins at once)
  has exactly one effect. Actions that change something need a permission (``operate`` for
  the work, ``change`` for API keys and schedules): Django neither offers nor runs them for
  anyone without it. ``with_reason`` asks why on an intermediate page, and
  ``apply_each`` runs the service per row and says what changed.

The per-model admins live beside this module (``work_items``, ``workers``, ``ledger``,
``schedules``); ``reviews.admin`` builds on the same base.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.functional import cached_property

from orchestration.roles import OPERATE
from orchestration.services.bulk import bulk_apply

# --- fast list pages -------------------------------------------------------------------------

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows (``SELECT COUNT(*) FROM (… LIMIT n)``).

    An unfiltered list on PostgreSQL shows the planner's row estimate instead, so page
    numbers stay meaningful on a huge table without scanning it.
    """

    # How the list's count reads when it is not exact: "about" (the planner's estimate) or
    # "at least" (the cap); "" for an exact count. The admin's pagination line shows it
    # (templates/admin/orchestration/pagination.html).
    count_note = ""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        capped = qs.order_by()[: COUNT_CAP + 1].count()
        if capped <= COUNT_CAP:
            return capped
        if not qs.query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [qs.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > COUNT_CAP:
                self.count_note = "about"
                return int(row[0])
        self.count_note = "at least"
        return COUNT_CAP


class FastListAdmin(admin.ModelAdmin):
    """List pages that stay fast at a million rows. The rows are the jobs: they change only
    through the actions (which call the services), never by editing or deleting the row."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 100

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        own = list(super().get_readonly_fields(request, obj))
        return own + [f.name for f in self.model._meta.fields if f.name not in own]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Actions declared with ``permissions=["operate"]`` (cancel, requeue, priority,
        kill, release) are offered, and run, only for the operator's permission."""
        return request.user.has_perm(OPERATE)


class RecentValuesFilter(admin.SimpleListFilter):
    """Values of ``field`` among the most recent rows (a DISTINCT over the whole table, which
    a plain field filter runs, is a scan)."""

    title = "repository"
    parameter_name = "repo"
    field = "repo"
    order_by = "-created_at"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        model = model_admin.model
        recent = model._default_manager.order_by(self.order_by).values_list(self.field, flat=True)
        values = sorted({r for r in recent[:2000] if r})
        return [(r, r) for r in values[:50]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


# --- actions: ask why, record who / what / why -----------------------------------------------


def admin_actor(request: HttpRequest) -> str:
    """The actor recorded on the events an admin action leaves: ``admin:<user>``."""
    return f"admin:{request.user.get_username()}"


# An action handles at most this many rows per click ("select all" of a million rows would
# otherwise run for minutes in one request); the message says to run it again for the rest.
# Read at call time, so a test can lower it on this module.
ACTION_MAX = 5000


def apply_each(
    request: HttpRequest, queryset: QuerySet[Any], verb: str, fn: Callable[[Any], bool]
) -> None:
    """Run the service ``fn(pk)`` on each selected row (at most ACTION_MAX, by id) through the
    shared bulk loop; say how many changed, were already so, or were refused (naming a few)."""
    ids = list(queryset.values_list("pk", flat=True)[: ACTION_MAX + 1])
    done = bulk_apply(ids=ids[:ACTION_MAX], apply=fn)
    if done.refusals:
        more = " …" if done.refused > len(done.refusals) else ""
        messages.warning(request, "Refused — " + "; ".join(done.refusals) + more)
    summary = (
        f"{verb}: {done.changed} changed, {done.unchanged} already so, {done.refused} refused."
    )
    if len(ids) > ACTION_MAX:
        summary += f" Only the first {ACTION_MAX} were handled; run it again for the rest."
    messages.info(request, summary)


class ReasonForm(forms.Form):
    """The one field of the intermediate page: why the action is taken (optional)."""

    reason = forms.CharField(max_length=1000, required=False, widget=forms.TextInput)


def with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    apply: Callable[[str], None] | None = None,
    form_class: type[ReasonForm] = ReasonForm,
    apply_data: Callable[[dict[str, Any]], None] | None = None,
) -> TemplateResponse | None:
    """An intermediate page asking for a reason; ``apply(reason)`` runs once it is posted.

    An action that needs more than a reason (a new cost cap) gives its own ``form_class``
    (a ReasonForm with more fields) and ``apply_data(cleaned_data)`` instead.
    "Select all N" (``select_across``) is carried as such, not as N hidden ids, so a
    selection of any size fits in one form post.
    """
    across = request.POST.get("select_across") == "1"
    if request.POST.get("apply") == "yes":
        form = form_class(request.POST)
        if form.is_valid():
            if apply_data is not None:
                apply_data({**form.cleaned_data, "reason": form.cleaned_data["reason"].strip()})
            elif apply is not None:
                apply(form.cleaned_data["reason"].strip())
            return None
    else:
        form = form_class()
    selected_count = queryset[: ACTION_MAX + 1].count()  # capped: never a full COUNT
    return TemplateResponse(
        request,
        "admin/orchestration/action_reason.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "objects": list(queryset[:100]),
            "count": min(selected_count, ACTION_MAX),
            "capped": selected_count > ACTION_MAX,
            "select_across": across,
            # With select_across, Django still wants one id to know an action was chosen.
            "selected": [
                str(pk) for pk in queryset.values_list("pk", flat=True)[: 1 if across else None]
            ],
            "action": action,
            "form": form,
            "opts": modeladmin.model._meta,
        },
    )
