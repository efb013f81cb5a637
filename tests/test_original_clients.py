"""The original Whim's clients, replayed call for call against our views (issue 14 §2).

Every request here is one the original TypeScript code makes, with the method, route and body
fields taken from its source (the mirror of skylarbarrera/whim):

- the terminal client, ``packages/cli``: ``dashboard`` polls ``GET /api/status``,
  ``GET /api/workers`` and ``GET /api/queue`` (commands/dashboard.tsx), its log view
  ``GET /api/workers/<id>/logs`` (commands/logs.tsx); ``status`` reads ``GET /api/status``
  (index.tsx). It sends no key and no header at all (hooks/useApi.ts: a bare ``fetch(url)``);
- the worker, ``packages/worker/src/client.ts`` (OrchestratorClient): heartbeat, lockFile,
  unlockFile, complete, completeVerification, fail, stuck, getLearnings, all against its
  ``ORCHESTRATOR_URL`` base with only ``Content-Type: application/json``. Ours hands a
  container ``ORCHESTRATOR_URL=http://host:port/w/<token>``, so the token rides in the path.

Each answer is checked for the fields those clients read, with the types of
``packages/shared/src/types.ts`` (a TS ``Date`` is an ISO 8601 string on the wire). The
worker's ``request<void>`` still parses every answer as JSON, so every callback must answer a
JSON body. Where our meanings differ, README "Original Whim compatibility" says so.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client

from orchestration.models import (
    Priority,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemStatus,
    WorkItemType,
)
from orchestration.services.dispatch import worker_token
from orchestration.services.learnings import learnings_record
from tests.factories import WorkItemFactory, running_attempt

pytestmark = pytest.mark.django_db

ISO = "iso"  # a timestamp string Python's fromisoformat reads, with an offset
OPTIONAL = type(None)

# packages/shared/src/types.ts, field by field.
ORIGINAL_STATUSES = {
    "generating",
    "queued",
    "assigned",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
}
ORIGINAL_WORKER_STATUSES = {"starting", "running", "completed", "failed", "stuck", "killed"}
ORIGINAL_PRIORITIES = {"low", "medium", "high", "critical"}
WORK_ITEM: dict[str, Any] = {
    "id": str,
    "repo": str,
    "branch": (str, OPTIONAL),
    "spec": (str, OPTIONAL),
    "description": (str, OPTIONAL),
    "type": {"execution", "verification"},
    "priority": ORIGINAL_PRIORITIES,
    "status": ORIGINAL_STATUSES,
    "workerId": (str, OPTIONAL),
    "iteration": int,
    "maxIterations": int,
    "retryCount": int,
    "nextRetryAt": (ISO, OPTIONAL),
    "prUrl": (str, OPTIONAL),
    "prNumber": (int, OPTIONAL),
    "parentWorkItemId": (str, OPTIONAL),
    "verificationPassed": (bool, OPTIONAL),
    "source": (str, OPTIONAL),
    "sourceRef": (str, OPTIONAL),
    "createdAt": ISO,
    "updatedAt": ISO,
    "completedAt": (ISO, OPTIONAL),
    "error": (str, OPTIONAL),
    "metadata": dict,
}
WORKER: dict[str, Any] = {
    "id": str,
    "workItemId": str,
    "status": ORIGINAL_WORKER_STATUSES,
    "iteration": int,
    "lastHeartbeat": (ISO, OPTIONAL),  # a Date in types.ts; null before a first heartbeat
    "startedAt": (ISO, OPTIONAL),
    "completedAt": (ISO, OPTIONAL),
    "containerId": (str, OPTIONAL),
    "error": (str, OPTIONAL),
}
STATUS: dict[str, Any] = {  # dashboard.tsx StatusResponse, index.tsx's status command
    "status": {"healthy", "degraded", "error"},
    "workers": {"active": int, "maxWorkers": int},
    "queue": {"size": int, "oldest": (ISO, OPTIONAL)},
    "rateLimits": {
        "iterationsToday": int,
        "dailyBudget": int,
        "lastSpawn": (ISO, OPTIONAL),
        "cooldownSeconds": int,
    },
    "metrics": {
        "activeWorkers": int,
        "queuedItems": int,
        "completedToday": int,
        "failedToday": int,
    },
}
LEARNING: dict[str, Any] = {
    "id": str,
    "repo": str,
    "spec": str,
    "content": str,
    "embedding": (list, OPTIONAL),
    "createdAt": ISO,
    "workItemId": (str, OPTIONAL),
}


def _is(value: Any, kind: Any) -> bool:
    if kind == ISO:
        if not isinstance(value, str):
            return False
        return dt.datetime.fromisoformat(value).tzinfo is not None
    if isinstance(kind, set):
        return value in kind
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def assert_shape(value: Any, shape: dict[str, Any], where: str = "") -> None:
    """Every field ``shape`` names is present with its type (extra fields are allowed: the
    original clients ignore what they do not read)."""
    assert isinstance(value, dict), f"{where or 'answer'} is not an object: {value!r}"
    for field, kind in shape.items():
        path = f"{where}.{field}" if where else field
        assert field in value, f"{path} is missing from {sorted(value)}"
        if isinstance(kind, dict):
            assert_shape(value[field], kind, path)
            continue
        kinds = kind if isinstance(kind, tuple) else (kind,)
        assert any(_is(value[field], k) for k in kinds), f"{path} = {value[field]!r}"


# --- the terminal client (packages/cli), keyless from loopback ------------------------------


@pytest.fixture
def cli(client: Client, settings: Any) -> Client:
    """The original client: no key, no header, from 127.0.0.1, single-machine mode."""
    settings.EMBEDDED_MODE = True
    settings.API_KEY = ""
    return client


@pytest.fixture
def busy() -> dict[str, Any]:
    """Two running attempts, a queued item, a finished one and a verification waiting."""
    running = [running_attempt(use_gate=False, repo=f"acme/app{n}") for n in range(2)]
    queued = WorkItemFactory.create(priority=Priority.HIGH)
    WorkItemFactory.create(status=WorkItemStatus.COMPLETED, completed_at=dt.datetime.now(dt.UTC))
    verification = WorkItemFactory.create(type=WorkItemType.VERIFICATION)
    return {"running": running, "queued": queued, "verification": verification}


def test_the_status_command_gets_every_field_it_prints(cli: Client, busy: Any) -> None:
    resp = cli.get("/api/status")

    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert_shape(body, STATUS)
    # index.tsx's line, as it would print it.
    m = body["metrics"]
    line = (
        f"Whim: {body['status']} | Workers: {m['activeWorkers']} | Queue: {m['queuedItems']} "
        f"| Today: {m['completedToday']} completed, {m['failedToday']} failed"
    )
    assert line == "Whim: healthy | Workers: 2 | Queue: 2 | Today: 1 completed, 0 failed"


def test_the_dashboard_polls_status_workers_and_queue_and_joins_them(
    cli: Client, busy: Any
) -> None:
    status = cli.get("/api/status")
    workers = cli.get("/api/workers")
    queue = cli.get("/api/queue")

    assert [r.status_code for r in (status, workers, queue)] == [200, 200, 200]
    assert_shape(status.json(), STATUS)
    assert isinstance(workers.json(), list)  # useApi<Worker[]>: a bare array
    for n, worker in enumerate(workers.json()):
        assert_shape(worker, WORKER, f"workers[{n}]")
    body = queue.json()
    assert_shape(body, {"stats": {"total": int, "byStatus": dict, "byPriority": dict}})
    assert set(body["stats"]["byStatus"]) >= ORIGINAL_STATUSES
    assert set(body["stats"]["byPriority"]) == ORIGINAL_PRIORITIES
    assert all(_is(v, int) for v in body["stats"]["byStatus"].values())
    for n, item in enumerate(body["items"]):
        assert_shape(item, WORK_ITEM, f"items[{n}]")
    # The WORKERS panel finds each running worker's repo and branch in the queue's items
    # (otherwise it shows "unknown @ unknown"); the QUEUE panel shows the queued ones.
    items = {i["id"]: i for i in body["items"]}
    for item, worker in busy["running"]:
        listed = next(w for w in workers.json() if w["id"] == str(worker.pk))
        joined = items[listed["workItemId"]]
        assert (joined["repo"], joined["branch"]) == (item.repo, item.branch)
        assert isinstance(joined["maxIterations"], int)  # the progress bar divides by it
    waiting = [i["id"] for i in body["items"] if i["status"] in ("queued", "assigned")]
    assert str(busy["queued"].pk) in waiting


def test_the_log_view_gets_a_worker_id_and_a_list_of_lines(cli: Client, busy: Any) -> None:
    _item, worker = busy["running"][0]

    resp = cli.get(f"/api/workers/{worker.pk}/logs")

    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["workerId"] == str(worker.pk)
    assert isinstance(body["logs"], list)
    assert all(isinstance(line, str) for line in body["logs"])


def test_an_error_answer_is_not_ok_so_the_client_shows_it(cli: Client) -> None:
    """useApi treats any non-2xx as an error and shows ``HTTP <status>``; a missing worker
    must be a 4xx, not a 200 with an empty body."""
    assert cli.get("/api/workers/00000000-0000-0000-0000-000000000000/logs").status_code == 404


# --- the worker (packages/worker/src/client.ts), token in its base URL ----------------------


class OriginalWorker:
    """OrchestratorClient, call for call: the base URL we hand a container, only the
    Content-Type header, bodies as JSON.stringify writes them (undefined fields dropped)."""

    def __init__(self, client: Client, worker: Worker, repo: str) -> None:
        self.client = client
        self.base = f"/w/{worker_token(worker.pk)}"
        self.worker_id = str(worker.pk)
        self.repo = repo

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}{path}"
        if method == "GET":
            resp = self.client.get(url)
        else:
            payload = {k: v for k, v in (body or {}).items() if v is not None}
            resp = self.client.post(url, json.dumps(payload), content_type="application/json")
        assert 200 <= resp.status_code < 300, (path, resp.status_code, resp.content)
        return resp.json()  # request<T> parses every answer, even request<void>'s

    def heartbeat(self, iteration: int, status: str, tokens: tuple[int, int]) -> Any:
        body = {"iteration": iteration, "status": status}
        body.update(tokensIn=tokens[0], tokensOut=tokens[1])
        return self._request("POST", f"/api/worker/{self.worker_id}/heartbeat", body)

    def lock_file(self, files: list[str]) -> Any:
        body = {"repo": self.repo, "files": files}
        return self._request("POST", f"/api/worker/{self.worker_id}/lock", body)

    def unlock_file(self, files: list[str]) -> Any:
        body = {"repo": self.repo, "files": files}
        return self._request("POST", f"/api/worker/{self.worker_id}/unlock", body)

    def complete(self, **body: Any) -> Any:
        return self._request("POST", f"/api/worker/{self.worker_id}/complete", body)

    def fail(self, error: str, iteration: int, **options: Any) -> Any:
        body = {"error": error, "iteration": iteration, **options}
        return self._request("POST", f"/api/worker/{self.worker_id}/fail", body)

    def stuck(self, reason: str, attempts: int) -> Any:
        body = {"reason": reason, "attempts": attempts}
        return self._request("POST", f"/api/worker/{self.worker_id}/stuck", body)

    def get_learnings(self, repo: str) -> Any:
        return self._request("GET", f"/api/learnings?repo={quote(repo, safe='')}")


FINDINGS = {
    "specAlignment": {"score": "aligned", "summary": "does it", "gaps": [], "extras": []},
    "codeQuality": {
        "score": "good",
        "summary": "tidy",
        "concerns": [{"file": "src/a.ts", "line": 3, "issue": "x", "suggestion": "y"}],
    },
    "overallSummary": "fine",
}


def test_an_execution_run_as_the_original_worker_makes_it(client: Client) -> None:
    earlier = WorkItemFactory.create(repo="acme/widget", status=WorkItemStatus.COMPLETED)
    learnings_record(work_item=earlier, learnings=[{"content": "use make test", "spec": "# Old"}])
    item, worker = running_attempt(use_gate=False, repo="acme/widget")
    w = OriginalWorker(client, worker, item.repo)

    learnings = w.get_learnings(item.repo)  # learnings.ts, before the loop
    assert isinstance(learnings, list) and learnings
    for n, learning in enumerate(learnings):
        assert_shape(learning, LEARNING, f"learnings[{n}]")
    assert w.heartbeat(1, "running", (10, 5)) == {"success": True}  # ralph.ts, per iteration
    answer = w.lock_file(["src/index.ts"])  # ralph.ts, on a write
    assert answer["acquired"] is True  # WorkerLockResponse {acquired, conflictingWorker?}
    assert isinstance(w.unlock_file(["src/index.ts"]), dict)
    done = w.complete(  # index.ts: complete(prUrl, metrics, learnings, prNumber, review, v)
        prUrl="https://github.com/acme/widget/pull/7",
        prNumber=7,
        review={"modelUsed": "claude-sonnet-4-20250514", "findings": FINDINGS},
        metrics={
            "tokensIn": 1000,
            "tokensOut": 200,
            "duration": 5000,
            "filesModified": 1,
            "testsRun": 3,
            "testsPassed": 3,
            "testsFailed": 0,
            "testStatus": "passed",
        },
        learnings=[{"content": "the tests need a database", "spec": item.spec}],
        verificationEnabled=False,
    )

    assert isinstance(done, dict)
    item.refresh_from_db()
    assert (item.status, item.pr_number) == (WorkItemStatus.COMPLETED, 7)


def test_the_original_workers_lock_answer_names_the_holder(client: Client) -> None:
    first_item, first = running_attempt(use_gate=False, repo="acme/widget")
    _second_item, second = running_attempt(use_gate=False, repo="acme/widget")
    OriginalWorker(client, first, first_item.repo).lock_file(["src/a.ts"])

    answer = OriginalWorker(client, second, first_item.repo).lock_file(["src/a.ts"])

    assert answer["acquired"] is False
    assert answer["conflictingWorker"] == str(first.pk)


@pytest.mark.parametrize(
    "category",
    [
        "EXECUTION_ERROR",
        "TIMEOUT",
        "RESOURCE_ERROR",
        "NETWORK_ERROR",
        "VALIDATION_ERROR",
        "INTERNAL_ERROR",
        "UNKNOWN",
    ],
)
def test_every_failure_category_of_the_original_worker_is_taken(
    client: Client, category: str
) -> None:
    item, worker = running_attempt(use_gate=False)
    w = OriginalWorker(client, worker, item.repo)

    answer = w.fail("Ralph failed: boom", 4, category=category, context={"file": "a.ts"})

    assert isinstance(answer, dict)
    item.refresh_from_db()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.FAILED
    assert item.status in (WorkItemStatus.QUEUED, WorkItemStatus.FAILED)
    assert "boom" in item.error


def test_stuck_as_the_original_worker_sends_it(client: Client) -> None:
    item, worker = running_attempt(use_gate=False)

    answer = OriginalWorker(client, worker, item.repo).stuck("Simulated stuck", 3)

    assert isinstance(answer, dict)
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.STUCK


def test_a_verification_run_as_the_original_worker_reports_its_verdict(client: Client) -> None:
    parent = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    item, worker = running_attempt(
        use_gate=False, type=WorkItemType.VERIFICATION, parent_work_item=parent
    )

    answer = OriginalWorker(client, worker, item.repo).complete(verificationPassed=True)

    assert isinstance(answer, dict)
    item.refresh_from_db()
    assert (item.status, item.verification_passed) == (WorkItemStatus.COMPLETED, True)
    assert WorkItem.objects.get(pk=parent.pk).verification_passed is True
