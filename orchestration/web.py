"""Server-rendered pages: the submit form (login required, CSRF) and a work item page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from orchestration.errors import QueueFull
from orchestration.models import WorkItem
from orchestration.services.work_items import work_item_submit
from orchestration.validation import WorkItemSubmitForm


@login_required
@require_http_methods(["GET", "POST"])
def work_new(request: HttpRequest) -> HttpResponse:
    """The submit form: the same validation and service as POST /api/work."""
    form = WorkItemSubmitForm(data=request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                item, created = work_item_submit(
                    **form.submission(), actor=f"user:{request.user.get_username()}"
                )
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


@login_required
def work_detail(request: HttpRequest, pk: str) -> HttpResponse:
    item = get_object_or_404(WorkItem, pk=pk)
    return render(
        request,
        "orchestration/work_detail.html",
        {
            "item": item,
            "events": item.events.order_by("created_at", "id")[:500],
            "attempts": item.workers.order_by("created_at"),
        },
    )
