"""The console's fleet page: ``/nodes/`` lists the nodes (Docker hosts) with their state,
capacity, running attempts, labels and last heartbeat; operators drain and resume them.

Draining asks for a confirmation first (as the queue's bulk actions do); resuming is safe and
acts at once. The same services as ``POST /api/nodes/<name>/drain|resume`` and
``whim node drain|resume`` (STYLE.md §1). Kept beside ``web.py``, which holds the other pages.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from orchestration.clock import db_now
from orchestration.errors import WhimError
from orchestration.forms.node_name import node_name_parsed
from orchestration.roles import OPERATE, requires
from orchestration.selectors import nodes_overview
from orchestration.services.nodes import node_drain, node_resume


@login_required
@require_GET
def nodes_page(request: HttpRequest) -> HttpResponse:
    now = db_now()
    rows = [
        {
            **row,
            "heartbeat_age": (now - row["last_heartbeat"]).total_seconds()
            if row["last_heartbeat"]
            else None,
        }
        for row in nodes_overview()
    ]
    return render(request, "orchestration/nodes.html", {"nodes": rows})


@requires(OPERATE)
@require_POST
def node_action(request: HttpRequest, name: str, verb: str) -> HttpResponse:
    """``verb`` is drain or resume (the URLconf has one route for each)."""
    actor = f"user:{request.user.get_username()}"
    try:
        name = node_name_parsed(name)
        if verb == "drain" and request.POST.get("confirm") != "yes":
            row = next((r for r in nodes_overview() if r["name"] == name), None)
            if row is None:
                messages.error(request, f"No node is called {name}.")
                return redirect("nodes")
            return render(request, "orchestration/nodes_confirm.html", {"node": row})
        node = (node_drain if verb == "drain" else node_resume)(name=name, actor=actor)
    except WhimError as exc:
        messages.error(request, exc.message)
    else:
        done = "draining: it takes no new attempts" if verb == "drain" else "active again"
        messages.success(request, f"Node {node.name} is {done}.")
    return redirect("nodes")
