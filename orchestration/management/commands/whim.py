"""The operator's command line: ``manage.py whim <subcommand>`` (also the ``whim`` script).

Subcommands print API.md's JSON shapes, so scripts can read them; errors go to stderr in
API.md's error shape with exit status 2 (bad input) or 1 (refused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core import checks
from django.core.management.base import BaseCommand, CommandParser, SystemCheckError

from orchestration.api.nodes import node_answer, node_json
from orchestration.api.queries import queue_page
from orchestration.api.serializers import work_item_detail_json, work_item_json, worker_json
from orchestration.errors import ValidationFailed, WhimError
from orchestration.forms.clients import ContinueForm, KillForm, WorkItemSubmitForm
from orchestration.forms.node_name import node_name_parsed
from orchestration.models import Worker
from orchestration.nudge import broker_reachable
from orchestration.registry import sweeps
from orchestration.selectors import nodes_overview, status_summary
from orchestration.services import nodes, work_items, workers
from orchestration.services.sweeps import sweep_run

ACTOR = "cli"


class Command(BaseCommand):
    help = (
        "Submit and manage Whim work: submit, status, queue, cancel, requeue, continue, workers, "
        "kill, sweep, nodes, node drain|resume."
    )

    def check(self, *args: Any, **kwargs: Any) -> None:
        """A settings error stops the command as usual; warnings (single-machine mode, the
        local runtime) are the server's startup banner, not noise on every script's stderr."""
        errors = [m for m in checks.run_checks() if m.is_serious() and not m.is_silenced()]
        if errors:
            raise SystemCheckError("\n".join(str(e) for e in errors))

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        submit = sub.add_parser("submit", help="submit a work item")
        submit.add_argument("repo", help="owner/name")
        group = submit.add_mutually_exclusive_group()
        group.add_argument("--spec", help="the spec text")
        group.add_argument("--spec-file", help="read the spec from this file ('-' for stdin)")
        # Not in the group: "exactly one of spec or description" is the shared form's rule,
        # so the command refuses both with the same message and error shape as the API.
        submit.add_argument("--description", help="a description to generate the spec from")
        submit.add_argument("--branch")
        submit.add_argument("--priority", help="low, medium, high or critical")
        submit.add_argument("--max-iterations")
        submit.add_argument("--source")
        submit.add_argument("--source-ref")
        submit.add_argument("--metadata", help="a JSON object")
        submit.add_argument("--idempotency-key")
        show = sub.add_parser("status", help="orchestrator status, or one work item's")
        show.add_argument("id", nargs="?")
        q = sub.add_parser("queue", help="list work items")
        q.add_argument(
            "--status", help="active|queued|failed|completed|generating|cancelled|paused|all"
        )
        q.add_argument("--type")
        q.add_argument("--repo")
        q.add_argument("--cursor")
        q.add_argument("--limit")
        cancel = sub.add_parser("cancel", help="cancel a work item")
        cancel.add_argument("id")
        requeue = sub.add_parser("requeue", help="requeue a finished work item")
        requeue.add_argument("id")
        requeue.add_argument("--reset-retries", action="store_true")
        cont = sub.add_parser("continue", help="continue a paused work item with a raised cost cap")
        cont.add_argument("id")
        cont.add_argument(
            "--max-cost-usd", required=True, help="the new cap over all attempts (0: no cap)"
        )
        sub.add_parser("workers", help="list workers, newest first")
        sweep = sub.add_parser("sweep", help="run a supervision sweep now (default: all)")
        sweep.add_argument("name", nargs="?", default="all", choices=[*sweeps(), "all"])
        kill = sub.add_parser("kill", help="kill a worker; its item is retried unless --no-retry")
        kill.add_argument("id")
        kill.add_argument("--reason", default="")
        kill.add_argument("--no-retry", action="store_true", help="fail the item instead")
        sub.add_parser("nodes", help="list the nodes (Docker hosts) and their state")
        node = sub.add_parser("node", help="drain or resume a node")
        node.add_argument("verb", choices=["drain", "resume"])
        node.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = getattr(self, f"do_{options['action']}")(options)
        except WhimError as exc:
            body: dict[str, Any] = {"error": exc.message, "code": exc.code}
            if exc.details:
                body["details"] = exc.details
            self.stderr.write(json.dumps(body, indent=2))
            sys.exit(2 if isinstance(exc, ValidationFailed) else 1)
        self.stdout.write(json.dumps(result, indent=2, default=str))

    def do_submit(self, o: dict[str, Any]) -> dict[str, Any]:
        spec = o.get("spec")
        if o.get("spec_file"):
            path = o["spec_file"]
            try:
                spec = sys.stdin.read() if path == "-" else Path(path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValidationFailed(
                    "Invalid request", details={"specFile": f"cannot be read: {reason}"}
                ) from None
        data = {
            "repo": o["repo"],
            "spec": spec,
            "description": o.get("description"),
            "branch": o.get("branch"),
            "priority": o.get("priority"),
            "maxIterations": o.get("max_iterations"),
            "source": o.get("source"),
            "sourceRef": o.get("source_ref"),
            "metadata": o.get("metadata"),
            "idempotencyKey": o.get("idempotency_key"),
        }
        form = WorkItemSubmitForm(data={k: v for k, v in data.items() if v is not None})
        form.validated()
        item, created = work_items.work_item_submit(**form.submission(), actor=ACTOR)
        return {"id": str(item.pk), "status": item.status, "created": created}

    def do_status(self, o: dict[str, Any]) -> dict[str, Any]:
        if o.get("id"):
            return work_item_detail_json(work_items.work_item_get(work_item_id=o["id"]))
        return status_summary(broker_ok=broker_reachable())

    def do_queue(self, o: dict[str, Any]) -> dict[str, Any]:
        keys = ("status", "type", "repo", "cursor", "limit")
        return queue_page({k: o[k] for k in keys if o.get(k) is not None})

    def do_cancel(self, o: dict[str, Any]) -> dict[str, Any]:
        item = work_items.work_item_get(work_item_id=o["id"])
        work_items.work_item_cancel(work_item_id=item.pk, actor=ACTOR)
        return {"success": True}

    def do_requeue(self, o: dict[str, Any]) -> dict[str, Any]:
        item = work_items.work_item_get(work_item_id=o["id"])
        work_items.work_item_requeue(
            work_item_id=item.pk, reset_retries=o["reset_retries"], actor=ACTOR
        )
        item.refresh_from_db()
        return work_item_json(item)

    def do_continue(self, o: dict[str, Any]) -> dict[str, Any]:
        data = ContinueForm(data={"maxCostUsd": o["max_cost_usd"]}).validated()
        item = work_items.work_item_get(work_item_id=o["id"])
        work_items.work_item_continue(
            work_item_id=item.pk, max_cost_usd=data["maxCostUsd"], actor=ACTOR
        )
        item.refresh_from_db()
        return work_item_json(item)

    def do_workers(self, o: dict[str, Any]) -> list[dict[str, Any]]:
        return [worker_json(w) for w in Worker.objects.order_by("-created_at")[:200]]

    def do_sweep(self, o: dict[str, Any]) -> dict[str, Any]:
        return sweep_run(name=o["name"])

    def do_kill(self, o: dict[str, Any]) -> dict[str, Any]:
        form = KillForm(
            data={"reason": o["reason"], **({"retry": "false"} if o["no_retry"] else {})}
        )
        workers.worker_kill(worker_id=o["id"], actor=ACTOR, **form.kill_options())
        return {"success": True}

    def do_nodes(self, o: dict[str, Any]) -> list[dict[str, Any]]:
        return [node_json(row) for row in nodes_overview()]

    def do_node(self, o: dict[str, Any]) -> dict[str, Any]:
        """The same services, and the same answer, as ``POST /api/nodes/<name>/<verb>``."""
        act = nodes.node_drain if o["verb"] == "drain" else nodes.node_resume
        return node_answer(act(name=node_name_parsed(o["name"]), actor=ACTOR).name)
