"""The console's cost action: continue an item paused at its cost cap, with a raised cap.

Operators only (``roles.requires``); the same form and service as
``POST /api/work/<id>/continue`` and ``whim continue`` (STYLE.md §1). Kept beside ``web.py``,
which holds the other console views.
"""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from orchestration.errors import WhimError
from orchestration.forms.clients import ContinueForm
from orchestration.roles import OPERATE, requires
from orchestration.services.work_items import work_item_continue


@requires(OPERATE)
@require_POST
def work_continue(request: HttpRequest, pk: UUID) -> HttpResponse:
    form = ContinueForm(data={"maxCostUsd": request.POST.get("max_cost_usd", "").strip()})
    if not form.is_valid():
        messages.error(request, f"New cost cap: {form.error_details()['maxCostUsd']}.")
        return redirect("work-detail", pk=pk)
    reason = request.POST.get("reason", "").strip()[:1000]
    try:
        done = work_item_continue(
            work_item_id=pk,
            max_cost_usd=form.cleaned_data["maxCostUsd"],
            actor=f"user:{request.user.get_username()}",
            reason=reason,
        )
    except WhimError as exc:
        detail = "; ".join(str(v) for v in (exc.details or {}).values())
        messages.error(request, f"{exc.message}: {detail}" if detail else exc.message)
    else:
        messages.success(
            request, "Continued: queued again." if done else "It was already continued."
        )
    return redirect("work-detail", pk=pk)
