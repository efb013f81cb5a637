"""GET /api/learnings: what earlier attempts learned about a repository, as the original
Whim answers it (a JSON list of Learning objects, newest first, at most 50).

Two kinds of caller:

- a worker, by its token (in the callback base ``/w/<token>/api/learnings`` or as
  ``Authorization: Bearer <token>``): only while its attempt is active (409 after), and only
  for its own item's repository (another repo: 403; no ``repo``: its own);
- a client, by API key like the other client routes: any repository, or every one's.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from orchestration.api.base import bearer_token, client_identity, json_answer, method_refused
from orchestration.api.responses import error_response
from orchestration.api.serializers import iso
from orchestration.api.worker_views import worker_authenticate
from orchestration.errors import Fenced
from orchestration.forms.learnings import LearningsQueryForm
from orchestration.models import Learning, Worker
from orchestration.services.learnings import LEARNINGS_LIST_MAX, learnings_list


def learning_json(row: Learning) -> dict[str, Any]:
    """The original Whim's Learning object (no embeddings here: always null)."""
    return {
        "id": str(row.pk),  # a string, as the original's Learning.id
        "repo": row.repo,
        "spec": row.spec,
        "content": row.content,
        "embedding": None,
        "createdAt": iso(row.created_at),
        "workItemId": str(row.work_item_id) if row.work_item_id else None,
    }


@csrf_exempt
def learnings(request: HttpRequest, token: str | None = None) -> HttpResponse:
    if refused := method_refused(request, ("GET",)):
        return refused
    worker: Worker | None = None
    if token is None and client_identity(request) is not None:
        pass  # a client: any repository
    else:
        presented = token if token is not None else bearer_token(request)
        worker = worker_authenticate(presented) if presented else None
        if worker is None:
            return error_response(
                401, "UNAUTHORIZED", "A valid API key or worker token is required"
            )
    return json_answer(lambda: _answer(request, worker))


def _answer(request: HttpRequest, worker: Worker | None) -> HttpResponse | list[dict[str, Any]]:
    query = LearningsQueryForm(data=request.GET).validated()
    repo: str | None = query.get("repo") or None
    if worker is not None:
        if not worker.is_active:
            raise Fenced(f"Worker is {worker.status}; it is no longer the active attempt")
        own = worker.work_item.repo
        if repo is not None and repo != own:
            return error_response(
                403, "FORBIDDEN", "A worker may read only its own repository's learnings"
            )
        repo = own
    rows = learnings_list(repo=repo, limit=query.get("limit") or LEARNINGS_LIST_MAX)
    return [learning_json(r) for r in rows]
