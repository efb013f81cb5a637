"""The nodes admin: every Docker host's row, read-only, with the drain and resume actions
(the same services as the console's ``/nodes/`` page, the API and ``whim node``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from orchestration.admin.base import FastListAdmin, admin_actor, apply_each
from orchestration.fleet import node_running
from orchestration.models import Node
from orchestration.services.nodes import node_drain, node_resume


@admin.register(Node)
class NodeAdmin(FastListAdmin):
    list_display = (
        "name",
        "state",
        "running",
        "capacity",
        "labels",
        "runtime",
        "last_heartbeat",
        "state_changed_at",
    )
    list_filter = ("state",)
    search_fields = ("name",)
    ordering = ("name",)
    actions = ("drain", "resume")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Node]:
        return super().get_queryset(request).annotate(running=node_running())

    @admin.display(description="running")
    def running(self, obj: Any) -> int:
        return int(obj.running)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a node's worker registers it

    def _apply(self, request: HttpRequest, queryset: QuerySet[Node], verb: str) -> None:
        act = node_drain if verb == "Drain" else node_resume
        actor = admin_actor(request)

        def one(name: Any) -> bool:
            before = Node.objects.get(pk=name).state
            return act(name=name, actor=actor).state != before

        apply_each(request, queryset, verb, one)

    @admin.action(description="Drain selected nodes (no new attempts)", permissions=["operate"])
    def drain(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        self._apply(request, queryset, "Drain")

    @admin.action(description="Resume selected nodes", permissions=["operate"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        self._apply(request, queryset, "Resume")
