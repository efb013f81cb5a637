"""The operator's console: server-rendered pages (login required, CSRF) with htmx for live parts.

Every logged-in user reads every page; submitting and acting (cancel, requeue, kill, bulk)
need the operator's permissions (``roles.requires``: anyone else gets a 403 page).

Views parse input and call the same services as the API (STYLE.md §1); read-side queries live
in ``selectors`` and ``pages``. An htmx request (``HX-Request``) gets only the fragment it
polls, so the live parts are the same template code as the full page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from orchestration.errors import QueueFull, ValidationFailed, WhimError
from orchestration.forms import clients  # the submit, queue query and kill forms the API uses
from orchestration.forms.branches import derive_branch, validate_branch, validate_unprotected
from orchestration.models import QUEUE_STATUS_NAMES, WorkItem
from orchestration.nudge import broker_reachable
from orchestration.pages import console, explain
from orchestration.registry import runtime
from orchestration.roles import OPERATE, SUBMIT, requires
from orchestration.selectors import queue_filter, queue_list
from orchestration.services.bulk import WorkItemAction, work_item_act, work_items_bulk
from orchestration.services.costs import item_cost_cap
from orchestration.services.work_items import work_item_cancel, work_item_submit
from orchestration.services.workers import worker_kill

# A bulk action acts on at most this many items per confirmation (bounded everything).
BULK_MAX = 5000
TIMELINE_MAX = 500
LOG_LINES = 200


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


def _is_htmx(request: HttpRequest) -> bool:
    return bool(HtmxDetails(request))


def _page_or_fragment(
    request: HttpRequest, page: str, fragment: str, context: Mapping[str, Any]
) -> HttpResponse:
    """The whole page, or only the part htmx polls; caches keep the two apart."""
    response = render(request, fragment if _is_htmx(request) else page, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


# --- dashboard -------------------------------------------------------------------------------


@login_required
@require_GET
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """Workers, queue, budget, today's results, cost and 24-hour charts; polled every 10 s."""
    context = console.dashboard_summary(broker_ok=broker_reachable())
    return _page_or_fragment(
        request, "orchestration/dashboard.html", "orchestration/_dashboard_panel.html", context
    )


# --- submit ----------------------------------------------------------------------------------


@requires(SUBMIT)
@require_http_methods(["GET", "POST"])
def work_new(request: HttpRequest) -> HttpResponse:
    """The submit form: the same validation and service as POST /api/work."""
    form = clients.WorkItemSubmitForm(data=request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                item, created = work_item_submit(**form.submission(), actor=_actor(request))
            except QueueFull as exc:
                form.add_error(None, exc.message)
                status = 429
            else:
                if created:
                    messages.success(request, f"Work item {item.pk} submitted.")
                else:
                    messages.info(request, "That idempotency key was used before: here it is.")
                return redirect("work-detail", pk=item.pk)
        else:
            status = 400
    return render(request, "orchestration/work_new.html", {"form": form}, status=status)


@requires(SUBMIT)
@require_POST
def branch_preview(request: HttpRequest) -> HttpResponse:
    """htmx: the branch the item will get, as the operator types (spec or branch field)."""
    branch = request.POST.get("branch", "").strip()
    spec = request.POST.get("spec", "")[:200_000]
    description = request.POST.get("description", "")[:200_000]
    context: dict[str, Any] = {"branch": "", "how": "", "error": ""}
    if branch:
        try:
            if len(branch) > 250:
                raise ValidationFailed("must be at most 250 characters")
            validate_branch(branch)
            validate_unprotected(branch)
        except Exception as exc:
            message = getattr(exc, "messages", None) or [str(exc)]
            context["error"] = f"branch {message[0]}"
        else:
            context.update(branch=branch, how="as given")
    elif spec.strip():
        context.update(branch=derive_branch(spec), how="derived from the spec's first heading")
    elif description.strip():
        context["how"] = "derived once the spec has been generated from the description"
    else:
        context["how"] = "derived from the spec's first heading once you write one"
    return render(request, "orchestration/_branch_preview.html", context)


# --- queue -----------------------------------------------------------------------------------


def _queue_filters(data: Any) -> dict[str, str]:
    return {k: str(data.get(k) or "") for k in ("status", "type", "repo")}


@login_required
@require_GET
def queue_page(request: HttpRequest) -> HttpResponse:
    """Filterable (query string), cursor-paginated list with bulk cancel / requeue."""
    form = clients.QueueQueryForm(data=request.GET)
    context: dict[str, Any] = {
        "filters": _queue_filters(request.GET),
        "status_choices": QUEUE_STATUS_NAMES,
        "type_choices": [c[0] for c in WorkItem._meta.get_field("type").choices or []],
        "error": "",
        "items": [],
        "stats": None,
        "next_url": "",
    }
    if not form.is_valid():
        context["error"] = "; ".join(f"{k} {v}" for k, v in form.error_details().items())
        return render(request, "orchestration/queue.html", context, status=400)
    data = form.cleaned_data
    filters = {k: data.get(k) or "" for k in ("status", "type", "repo")}
    try:
        page = queue_list(**filters, cursor=data.get("cursor") or "", limit=data.get("limit") or 50)
    except ValidationFailed as exc:
        context["error"] = "; ".join(f"{k} {v}" for k, v in (exc.details or {}).items())
        return render(request, "orchestration/queue.html", context, status=400)
    query = {k: v for k, v in filters.items() if v}
    if data.get("limit"):
        query["limit"] = str(data["limit"])
    context.update(
        items=page["items"],
        stats=page["stats"],
        next_url=(
            f"?{urlencode({**query, 'cursor': page['nextCursor']})}" if page["nextCursor"] else ""
        ),
        first_url=f"?{urlencode(query)}",
        paged=bool(data.get("cursor")),
        filter_query=urlencode(query),
    )
    return render(request, "orchestration/queue.html", context)


def _bulk_targets(
    request: HttpRequest, action: str, scope: str, asof: dt.datetime | None
) -> tuple[list[UUID], int, dt.datetime | None]:
    """The ids a bulk action would act on (at most BULK_MAX), how many are eligible, and the
    newest one's ``created_at``.

    "Everything matching" is bounded by ``asof``, the newest item the confirmation counted
    (read from the column itself, so no second clock is involved): an item submitted after
    the operator saw the count is not swept in.
    """
    eligible = WorkItem.UNFINISHED if action == WorkItemAction.CANCEL else WorkItem.REQUEUEABLE
    if scope == "matching":
        filters = _queue_filters(request.POST)
        form = clients.QueueQueryForm(data=filters)
        if not form.is_valid():
            raise ValidationFailed("; ".join(form.error_details().values()))
        qs = queue_filter(**{k: form.cleaned_data.get(k) or "" for k in filters})
        if asof is not None:
            qs = qs.filter(created_at__lte=asof)
    else:
        ids = clients.parse_uuid_list(request.POST.getlist("ids"), limit=BULK_MAX)
        qs = WorkItem.objects.filter(pk__in=ids)
    qs = qs.filter(status__in=eligible)
    counted = qs.aggregate(total=Count("pk"), newest=Max("created_at"))
    targets = list(qs.order_by("created_at", "pk").values_list("pk", flat=True)[:BULK_MAX])
    return targets, counted["total"], counted["newest"]


def _aware_datetime(value: str) -> dt.datetime | None:
    try:
        parsed = parse_datetime(value)
    except ValueError:  # well-formed but impossible (month 13)
        return None
    return parsed if parsed is not None and not timezone.is_naive(parsed) else None


@requires(OPERATE)
@require_POST
def queue_bulk(request: HttpRequest) -> HttpResponse:
    """Bulk cancel / requeue: first a confirmation with the count, then the services, one by
    one. A repeat (double click, second tab) changes nothing: each service is idempotent."""
    action = request.POST.get("action", "")
    scope = request.POST.get("scope", "selected")
    if "op" in request.POST:  # the queue page's buttons say both at once: "cancel:matching"
        action, _, scope = request.POST["op"].partition(":")
    filters = _queue_filters(request.POST)
    back = f"{reverse('queue')}?{urlencode({k: v for k, v in filters.items() if v})}"
    if action not in WorkItemAction.values or scope not in ("selected", "matching"):
        messages.error(request, "Unknown bulk action.")
        return HttpResponseRedirect(back)
    confirmed = request.POST.get("confirm") == "yes"
    asof = None
    if confirmed and scope == "matching":
        asof = _aware_datetime(request.POST.get("asof", ""))
        if asof is None:
            messages.error(request, "The confirmation is incomplete; start the bulk action again.")
            return HttpResponseRedirect(back)
    try:
        targets, total, newest = _bulk_targets(request, action, scope, asof)
    except ValidationFailed as exc:
        messages.error(request, f"Bad filter: {exc.message}")
        return HttpResponseRedirect(back)
    if not confirmed:
        return render(
            request,
            "orchestration/queue_confirm.html",
            {
                "action": action,
                "action_label": WorkItemAction(action).label,
                "scope": scope,
                "filters": filters,
                "total": total,
                "capped": total > BULK_MAX,
                "bulk_max": BULK_MAX,
                "ids": [str(pk) for pk in targets] if scope == "selected" else [],
                "asof": newest.isoformat() if newest else "",
                "sample": WorkItem.objects.filter(pk__in=targets[:10]).order_by("created_at"),
                "back": back,
            },
        )
    actor = _actor(request)
    reason = f"cancelled in bulk by {actor}" if action == WorkItemAction.CANCEL else ""
    done = work_items_bulk(action=action, work_item_ids=targets, actor=actor, reason=reason)
    messages.success(
        request,
        f"{WorkItemAction(action).label}: {done.changed} changed, {done.unchanged} already done,"
        f" {done.refused} refused.",
    )
    return HttpResponseRedirect(back)


# --- one work item -----------------------------------------------------------------------------


def _work_live_context(request: HttpRequest, pk: UUID) -> dict[str, Any]:
    item, attempts = console.item_and_attempts(pk)
    if item is None:
        raise Http404("No such work item")
    events_qs = item.events.select_related(None).order_by("-created_at", "-id")
    events = list(events_qs[: TIMELINE_MAX + 1])
    more = len(events) > TIMELINE_MAX
    events = list(reversed(events[:TIMELINE_MAX]))
    return {
        "item": item,
        "why": explain.why_not_running(item, events, all_events=not more),
        "attempts": attempts,
        "events": events,
        "events_more": more,
        **console.item_outcome(item, attempts),
        "full": request.GET.get("full", ""),
        "live": not item.is_terminal,
        "cost_cap": item_cost_cap(item),
        # intake's outbox rows by the reverse relation (orchestration never imports intake).
        "github_actions": list(item.github_actions.order_by("created_at")[:50]),
    }


@login_required
@require_GET
def work_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    """Status, why it is not running, attempts, result, reviews, timeline and the log tail."""
    context = _work_live_context(request, pk)
    return _page_or_fragment(
        request, "orchestration/work_detail.html", "orchestration/_work_live.html", context
    )


@login_required
@require_GET
def work_log(request: HttpRequest, pk: UUID) -> HttpResponse:
    """htmx: the log tail of the item's current (or last) attempt, ANSI stripped."""
    item = get_object_or_404(WorkItem, pk=pk)
    worker = item.workers.order_by("-created_at").first()  # its current attempt is its newest
    lines, source = runtime().worker_logs(worker, lines=LOG_LINES) if worker else ([], "")
    return render(
        request,
        "orchestration/_work_log.html",
        {
            "item": item,
            "worker": worker,
            "log": "\n".join(lines),
            "source": source,
            # Keep polling while the item can still start or run an attempt.
            "live": not item.is_terminal,
        },
    )


@requires(OPERATE)
@require_POST
def work_cancel(request: HttpRequest, pk: UUID) -> HttpResponse:
    reason = request.POST.get("reason", "").strip()[:1000]
    try:
        done = work_item_cancel(work_item_id=pk, actor=_actor(request), reason=reason)
    except WhimError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Cancelled." if done else "It was already cancelled.")
    return redirect("work-detail", pk=pk)


@requires(OPERATE)
@require_POST
def work_requeue(request: HttpRequest, pk: UUID) -> HttpResponse:
    reset = request.POST.get("reset_retries") in ("1", "on", "true")
    action = WorkItemAction.REQUEUE_RESET if reset else WorkItemAction.REQUEUE
    try:
        requeued = work_item_act(action=action, work_item_id=pk, actor=_actor(request))
    except WhimError as exc:
        messages.error(request, exc.message)
        return redirect("work-detail", pk=pk)
    if requeued:
        messages.success(request, "Requeued.")
    else:  # a second click: the first one already requeued it
        messages.info(request, "It is already queued.")
    return redirect("work-detail", pk=pk)


# --- workers and locks -------------------------------------------------------------------------


@login_required
@require_GET
def workers_page(request: HttpRequest) -> HttpResponse:
    """Active workers (heartbeat age, iteration, progress) and recent ones; polled every 3 s."""
    context = {
        **console.workers_live(),
        "stale_threshold": settings.STALE_THRESHOLD,
    }
    return _page_or_fragment(
        request, "orchestration/workers.html", "orchestration/_workers_table.html", context
    )


@requires(OPERATE)
@require_POST
def worker_kill_view(request: HttpRequest, pk: UUID) -> HttpResponse:
    try:  # "Kill" retries the item, "Kill and fail" sends retry=false: KillForm, as the API
        kill = clients.KillForm(data=request.POST).kill_options()
        done = worker_kill(worker_id=pk, actor=_actor(request), **kill)
    except WhimError as exc:
        messages.error(request, "; ".join([exc.message, *(exc.details or {}).values()]))
    else:
        then = "is retried unless out of retries" if kill["retry"] else "failed"
        said = f"Worker {pk} killed; its item {then}." if done else "It was already killed."
        messages.success(request, said)
    return redirect("workers")


@login_required
@require_GET
def locks_page(request: HttpRequest) -> HttpResponse:
    """Who holds which files, since when, until when."""
    return render(request, "orchestration/locks.html", console.locks_list())
