"""File locks through the worker callback routes: all or nothing, leases, path rules, races.

``POST /api/worker/<id>/lock`` answers ``{acquired, conflictingWorker?, blockedFiles?}``;
``/unlock`` frees only the caller's own leases. A lease that expired, or whose holder is no
longer active, no longer blocks anyone.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test import Client

from orchestration.clock import db_now
from orchestration.models import FileLock, Worker, WorkerStatus, WorkItem
from orchestration.services.dispatch import worker_token
from orchestration.services.workers import worker_kill
from tests.factories import running_attempt
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

REPO = "acme/shared"


# --- helpers -------------------------------------------------------------------------------


def running(repo: str = REPO) -> Worker:
    """A ``running`` worker on a new ``in_progress`` item in ``repo`` (claimed, then started)."""
    return running_attempt(repo=repo)[1]


def post(client: Client, worker: Worker, route: str, body: Any) -> Any:
    return client.post(
        f"/api/worker/{worker.pk}/{route}",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {worker_token(worker.pk)}"},
    )


def lock(client: Client, worker: Worker, *files: str, repo: str = REPO) -> dict[str, Any]:
    resp = post(client, worker, "lock", {"repo": repo, "files": list(files)})
    assert resp.status_code == 200, resp.content
    body: dict[str, Any] = resp.json()
    return body


def unlock(client: Client, worker: Worker, *files: str, repo: str = REPO) -> Any:
    return post(client, worker, "unlock", {"repo": repo, "files": list(files)})


def held() -> dict[str, Any]:
    """path → holder id, for every lock row in REPO."""
    return dict(FileLock.objects.filter(repo=REPO).values_list("path", "worker_id"))


def all_rows() -> list[tuple[Any, ...]]:
    return sorted(FileLock.objects.values_list("repo", "path", "worker_id", "expires_at"))


# --- acquire -------------------------------------------------------------------------------


def test_a_worker_locks_every_file_it_asks_for(client: Client, settings: Any) -> None:
    settings.LOCK_TTL = 600
    a = running()
    start = db_now()

    assert lock(client, a, "src/a.py", "src/b.py") == {"acquired": True}

    end = db_now()
    assert held() == {"src/a.py": a.pk, "src/b.py": a.pk}
    ttl = dt.timedelta(seconds=600)
    for row in FileLock.objects.all():
        assert start + ttl <= row.expires_at <= end + ttl


def test_a_lock_is_all_or_nothing(client: Client) -> None:
    a, b = running(), running()
    assert lock(client, a, "a", "b") == {"acquired": True}

    answer = lock(client, b, "b", "c")

    assert answer == {"acquired": False, "conflictingWorker": str(a.pk), "blockedFiles": ["b"]}
    assert held() == {"a": a.pk, "b": a.pk}
    assert not FileLock.objects.filter(worker=b).exists()


def test_a_refusal_names_every_blocked_file(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "x", "y", "z")

    answer = lock(client, b, "z", "w", "x")

    assert answer["acquired"] is False
    assert answer["blockedFiles"] == ["x", "z"]
    assert not FileLock.objects.filter(worker=b).exists()


def test_relocking_your_own_file_succeeds_and_renews_the_lease(
    client: Client, settings: Any
) -> None:
    settings.LOCK_TTL = 600
    a = running()
    lock(client, a, "a", "b")
    FileLock.objects.filter(worker=a).update(expires_at=db_now() + dt.timedelta(seconds=3))
    start = db_now()

    assert lock(client, a, "a", "c") == {"acquired": True}

    end = db_now()
    rows = {row.path: row for row in FileLock.objects.filter(worker=a)}
    assert set(rows) == {"a", "b", "c"}
    ttl = dt.timedelta(seconds=600)
    assert start + ttl <= rows["a"].expires_at <= end + ttl
    assert start + ttl <= rows["c"].expires_at <= end + ttl
    # Only the paths named in this call are renewed by it (the heartbeat renews the rest).
    assert rows["b"].expires_at < start + dt.timedelta(seconds=10)
    assert FileLock.objects.count() == 3


def test_unlock_frees_only_the_callers_own_locks(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "a")
    lock(client, b, "c", "d")

    resp = unlock(client, b, "a", "c")

    assert resp.status_code == 200, resp.content
    assert resp.json() == {"success": True}
    assert held() == {"a": a.pk, "d": b.pk}


def test_a_freed_file_can_be_locked_by_another_worker(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "a")
    assert lock(client, b, "a")["acquired"] is False

    assert unlock(client, a, "a").status_code == 200

    assert lock(client, b, "a") == {"acquired": True}
    assert held() == {"a": b.pk}


def test_an_expired_lease_no_longer_blocks(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "a", "b")
    FileLock.objects.filter(path="a").update(expires_at=db_now() - dt.timedelta(seconds=1))

    assert lock(client, b, "a") == {"acquired": True}

    assert held() == {"a": b.pk, "b": a.pk}


def test_a_lease_that_has_not_expired_still_blocks(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "a")
    FileLock.objects.filter(path="a").update(expires_at=db_now() + dt.timedelta(seconds=30))

    assert lock(client, b, "a")["acquired"] is False


@pytest.mark.parametrize(
    "status", [WorkerStatus.FAILED, WorkerStatus.KILLED, WorkerStatus.COMPLETED]
)
def test_a_lease_held_by_a_worker_no_longer_active_no_longer_blocks(
    client: Client, status: str
) -> None:
    a, b = running(), running()
    lock(client, a, "a")
    # A row left behind (the transitions free locks; the sweep may not have run yet).
    Worker.objects.filter(pk=a.pk).update(status=status)

    assert lock(client, b, "a") == {"acquired": True}

    assert held() == {"a": b.pk}


def test_locks_in_another_repo_do_not_conflict(client: Client) -> None:
    a, b = running("acme/one"), running("acme/two")

    assert lock(client, a, "a", repo="acme/one") == {"acquired": True}
    assert lock(client, b, "a", repo="acme/two") == {"acquired": True}


# --- path rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        pytest.param(["/etc/passwd"], id="absolute"),
        pytest.param(["C:\\win\\x"], id="absolute_windows"),
        pytest.param(["src/../../etc"], id="dotdot_segment"),
        pytest.param([".."], id="dotdot"),
        pytest.param(["ok.py", "a\\..\\b"], id="dotdot_backslash"),
        pytest.param(["a\x00b"], id="nul"),
        pytest.param(["a" * 1025], id="too_long"),
        pytest.param([""], id="empty_path"),
        pytest.param(["."], id="dot"),
        pytest.param("a.py", id="not_a_list"),
        pytest.param({"a": 1}, id="object"),
        pytest.param(["a.py", 3], id="non_string_member"),
        pytest.param([["a.py"]], id="nested_list"),
        pytest.param(None, id="missing"),
        pytest.param([f"f{i}" for i in range(1001)], id="too_many"),
    ],
)
@pytest.mark.parametrize("route", ["lock", "unlock"])
def test_a_bad_path_list_is_refused_naming_files(client: Client, route: str, files: Any) -> None:
    a = running()
    lock(client, a, "keep")
    before = all_rows()
    body: dict[str, Any] = {"repo": REPO}
    if files is not None:
        body["files"] = files

    resp = post(client, a, route, body)

    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert "files" in details, details
    assert all_rows() == before


def test_a_path_of_exactly_1024_characters_is_accepted(client: Client) -> None:
    a = running()
    path = "d/" + "a" * 1022

    assert lock(client, a, path) == {"acquired": True}
    assert held() == {path: a.pk}


def test_paths_are_normalised_before_they_are_compared(client: Client) -> None:
    a, b = running(), running()
    assert lock(client, a, "./a//b") == {"acquired": True}
    assert held() == {"a/b": a.pk}

    answer = lock(client, b, "a/b")

    assert answer == {"acquired": False, "conflictingWorker": str(a.pk), "blockedFiles": ["a/b"]}


def test_unlock_of_a_normalised_path_frees_it(client: Client) -> None:
    a = running()
    lock(client, a, "a/b")

    assert unlock(client, a, "./a/./b").status_code == 200

    assert held() == {}


def test_the_same_path_twice_in_one_call_is_one_lock(client: Client) -> None:
    a = running()

    assert lock(client, a, "a/b", "./a/b", "a//b") == {"acquired": True}

    assert held() == {"a/b": a.pk}


@pytest.mark.parametrize("route", ["lock", "unlock"])
def test_a_repo_other_than_the_workers_is_refused(client: Client, route: str) -> None:
    a = running()
    lock(client, a, "a")
    before = all_rows()

    resp = post(client, a, route, {"repo": "acme/other", "files": ["a"]})

    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert "repo" in details
    assert all_rows() == before


@pytest.mark.parametrize("repo", [None, 5, ["acme/shared"]], ids=["missing", "number", "list"])
def test_a_missing_or_mistyped_repo_is_refused(client: Client, repo: Any) -> None:
    a = running()
    body: dict[str, Any] = {"files": ["a"]}
    if repo is not None:
        body["repo"] = repo

    details = assert_error(post(client, a, "lock", body), 400, "VALIDATION_ERROR")["details"]

    assert "repo" in details
    assert not FileLock.objects.exists()


# --- fencing -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["lock", "unlock"])
def test_a_killed_worker_can_neither_lock_nor_unlock(client: Client, route: str) -> None:
    a, b = running(), running()
    lock(client, b, "b")
    assert worker_kill(worker_id=a.pk, reason="operator")
    before = all_rows()

    resp = post(client, a, route, {"repo": REPO, "files": ["a", "b"]})

    assert_error(resp, 409, "INVALID_STATE")
    assert all_rows() == before
    assert not FileLock.objects.filter(worker=a).exists()


def test_a_killed_workers_locks_are_freed(client: Client) -> None:
    a, b = running(), running()
    lock(client, a, "a")

    assert worker_kill(worker_id=a.pk, reason="operator")

    assert held() == {}
    assert lock(client, b, "a") == {"acquired": True}


# --- the race ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ten_workers_racing_for_the_same_files_leave_exactly_one_holder() -> None:
    files = ["src/app.py", "src/models.py", "README.md"]
    with mock.patch("orchestration.nudge.send"):
        contenders = [running() for _ in range(10)]
    assert WorkItem.objects.filter(repo=REPO, status="in_progress").count() == 10
    barrier = threading.Barrier(len(contenders))
    answers: dict[Any, Any] = {}
    errors: list[BaseException] = []

    def contend(worker: Worker) -> None:
        try:
            client = Client()
            barrier.wait(timeout=30)
            resp = post(client, worker, "lock", {"repo": REPO, "files": files})
            answers[worker.pk] = (resp.status_code, resp.json())
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
    assert len(answers) == 10
    assert {status for status, _ in answers.values()} == {200}
    winners = [pk for pk, (_, body) in answers.items() if body["acquired"] is True]
    assert len(winners) == 1, answers
    (winner,) = winners
    for pk, (_, body) in answers.items():
        if pk != winner:
            assert body["acquired"] is False, body
            assert body["conflictingWorker"] == str(winner), body
            assert body["blockedFiles"] == sorted(files), body
    assert FileLock.objects.count() == 3
    assert held() == dict.fromkeys(files, winner)
