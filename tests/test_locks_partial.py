"""File locks with the original Whim's partial semantics, asked for with ``{"partial": true}``.

The original orchestrator takes every free path and lists the rest as blocked; ours stays all
or nothing unless the caller asks. Answer: ``{acquired, acquiredFiles, blockedFiles,
conflictingWorker?}`` where ``acquired`` is true only when nothing was blocked.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test import Client

from orchestration.choices import EventKind
from orchestration.models import FileLock, Worker, WorkItemEvent
from orchestration.services.dispatch import worker_token
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

REPO = "acme/shared"


def running() -> Worker:
    return running_attempt(repo=REPO)[1]


def lock(client: Client, worker: Worker, *files: str, **extra: Any) -> Any:
    return client.post(
        f"/api/worker/{worker.pk}/lock",
        json.dumps({"repo": REPO, "files": list(files), **extra}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {worker_token(worker.pk)}"},
    )


def held() -> dict[str, Any]:
    return dict(FileLock.objects.filter(repo=REPO).values_list("path", "worker_id"))


def test_partial_takes_the_free_paths_and_lists_the_blocked(client: Client) -> None:
    a, b = running(), running()
    assert lock(client, a, "b", "d").json() == {"acquired": True}

    resp = lock(client, b, "a", "b", "c", "d", partial=True)

    assert resp.status_code == 200
    assert resp.json() == {
        "acquired": False,
        "acquiredFiles": ["a", "c"],
        "blockedFiles": ["b", "d"],
        "conflictingWorker": str(a.pk),
    }
    assert held() == {"a": b.pk, "b": a.pk, "c": b.pk, "d": a.pk}
    kinds = list(
        WorkItemEvent.objects.filter(worker=b)
        .filter(kind__in=[EventKind.LOCKS_ACQUIRED, EventKind.LOCK_BLOCKED])
        .values_list("kind", "data__files")
    )
    assert sorted(kinds) == sorted(
        [(EventKind.LOCKS_ACQUIRED, ["a", "c"]), (EventKind.LOCK_BLOCKED, ["b", "d"])]
    )


def test_partial_with_nothing_blocked_is_acquired_and_includes_own_paths(client: Client) -> None:
    a = running()
    lock(client, a, "x")

    body = lock(client, a, "x", "y", partial=True).json()

    assert body == {"acquired": True, "acquiredFiles": ["x", "y"], "blockedFiles": []}
    assert held() == {"x": a.pk, "y": a.pk}


def test_all_or_nothing_stays_the_default(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "b")

    for extra in ({}, {"partial": False}):
        body = lock(client, b, "a", "b", **extra).json()
        assert body == {"acquired": False, "conflictingWorker": str(a.pk), "blockedFiles": ["b"]}
    assert held() == {"b": a.pk}


def test_partial_must_be_a_boolean(client: Client) -> None:
    a = running()
    assert_error(lock(client, a, "x", partial="yes"), 400, "VALIDATION_ERROR", details=["partial"])
    assert held() == {}


@pytest.mark.django_db(transaction=True)
def test_partial_racers_split_the_paths_without_sharing_any() -> None:
    files = [f"src/{n}.py" for n in range(6)]
    with mock.patch("orchestration.nudge.send"):
        contenders = [running() for _ in range(6)]
    barrier = threading.Barrier(len(contenders))
    answers: dict[Any, Any] = {}
    errors: list[BaseException] = []

    def contend(worker: Worker) -> None:
        try:
            client = Client()
            barrier.wait(timeout=30)
            order = files[::-1] if worker.pk.int % 2 else files
            answers[worker.pk] = lock(client, worker, *order, partial=True).json()
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=contend, args=(w,)) for w in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert len(answers) == 6
    taken = [path for body in answers.values() for path in body["acquiredFiles"]]
    assert sorted(taken) == sorted(files)  # every path to exactly one worker
    rows = held()
    for pk, body in answers.items():
        assert {p for p, holder in rows.items() if holder == pk} == set(body["acquiredFiles"])
        assert sorted(body["acquiredFiles"] + body["blockedFiles"]) == sorted(files)
