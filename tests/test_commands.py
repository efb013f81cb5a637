"""``manage.py whim …`` and ``manage.py whim_setup``: JSON out, errors as JSON on stderr."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from orchestration.models import (
    ApiKey,
    Priority,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.services.apikeys import apikey_authenticate
from tests.factories import WorkerFactory, WorkItemFactory, running_item

pytestmark = pytest.mark.django_db

SPEC = "# Tidy the README\n\nPlease."
UNKNOWN = str(uuid.UUID(int=99))


@dataclass
class Run:
    code: int | str | None
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.err)
        return body


def whim(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    try:
        call_command("whim", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    return Run(code, out.getvalue(), err.getvalue())


def assert_refused(run: Run, code: int, error_code: str) -> dict[str, Any]:
    assert run.code == code, run
    assert run.out == ""
    body = run.error
    assert body["code"] == error_code
    assert isinstance(body["error"], str) and body["error"]
    return body


# --- submit ----------------------------------------------------------------------------------


def test_submit_creates_an_item_and_prints_its_id(capsys: Any) -> None:
    run = whim(
        "submit",
        "acme/widgets",
        "--spec",
        SPEC,
        "--priority",
        "high",
        "--max-iterations",
        "9",
        "--branch",
        "docs/readme",
        "--source",
        "ops",
        "--source-ref",
        "T-9",
        "--metadata",
        '{"mock": "stuck"}',
    )
    assert run.code == 0, run.err
    body = run.json
    assert body["status"] == "queued"
    assert body["created"] is True
    item = WorkItem.objects.get(pk=body["id"])
    assert (item.repo, item.spec, item.branch) == ("acme/widgets", SPEC, "docs/readme")
    assert (item.priority, item.max_iterations) == (Priority.HIGH, 9)
    assert (item.source, item.source_ref, item.metadata) == ("ops", "T-9", {"mock": "stuck"})
    assert item.events.get().actor == "cli"


def test_submit_with_a_description_starts_generating() -> None:
    run = whim("submit", "acme/widgets", "--description", "Make the tests faster")
    assert run.json["status"] == "generating"


def test_submit_reads_the_spec_from_a_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.md"
    spec_file.write_text("# From A File\n\nLine two.\n")
    run = whim("submit", "acme/widgets", "--spec-file", str(spec_file))
    assert run.code == 0, run.err
    item = WorkItem.objects.get(pk=run.json["id"])
    assert item.spec == "# From A File\n\nLine two.\n"
    assert item.branch == "from-a-file"


def test_submit_reads_the_spec_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("# Piped In\n\nbody"))
    run = whim("submit", "acme/widgets", "--spec-file", "-")
    assert run.code == 0, run.err
    assert WorkItem.objects.get(pk=run.json["id"]).spec == "# Piped In\n\nbody"


@pytest.mark.parametrize("kind", ["missing", "directory", "not_utf8"])
def test_submit_refuses_a_spec_file_that_cannot_be_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "spec.md"
    if kind == "directory":
        path.mkdir()
    elif kind == "not_utf8":
        path.write_bytes(b"# Title\n\xff\xfe\xfa")
    body = assert_refused(
        whim("submit", "acme/widgets", "--spec-file", str(path)), 2, "VALIDATION_ERROR"
    )
    assert "specFile" in body["details"]
    assert not WorkItem.objects.exists()


def test_submit_refuses_a_spec_file_over_the_limit(tmp_path: Path) -> None:
    spec_file = tmp_path / "big.md"
    spec_file.write_text("x" * 100_001)
    body = assert_refused(
        whim("submit", "acme/widgets", "--spec-file", str(spec_file)), 2, "VALIDATION_ERROR"
    )
    assert body["details"]["spec"] == "must be at most 100000 characters"
    assert not WorkItem.objects.exists()


def test_submit_refuses_bad_input_with_exit_2_and_writes_nothing() -> None:
    body = assert_refused(
        whim("submit", "acme", "--spec", SPEC, "--priority", "urgent"), 2, "VALIDATION_ERROR"
    )
    assert set(body["details"]) == {"repo", "priority"}
    assert not WorkItem.objects.exists()
    assert not WorkItemEvent.objects.exists()


def test_submit_with_the_same_idempotency_key_returns_the_first_item() -> None:
    first = whim("submit", "acme/widgets", "--spec", SPEC, "--idempotency-key", "k-1").json
    again = whim("submit", "acme/widgets", "--spec", "# Other", "--idempotency-key", "k-1").json
    assert again == {"id": first["id"], "status": "queued", "created": False}
    assert WorkItem.objects.count() == 1


def test_submit_refuses_when_the_queue_is_full_with_exit_1(settings: Any) -> None:
    settings.MAX_QUEUED = 1
    whim("submit", "acme/widgets", "--spec", SPEC)
    body = assert_refused(whim("submit", "acme/widgets", "--spec", SPEC), 1, "QUEUE_FULL")
    assert body["details"]["limit"] == 1
    assert WorkItem.objects.count() == 1


# --- status ----------------------------------------------------------------------------------


def test_status_without_an_id_prints_the_orchestrator_status() -> None:
    WorkItemFactory.create()
    body = whim("status").json
    assert set(body) >= {"status", "workers", "queue", "rateLimits"}
    assert body["queue"]["size"] == 1


def test_status_with_an_id_prints_the_work_item() -> None:
    item = WorkItemFactory.create()
    body = whim("status", str(item.pk)).json
    assert body["id"] == str(item.pk)
    assert body["repo"] == item.repo
    assert body["maxIterations"] == 50


@pytest.mark.parametrize("bad_id", [UNKNOWN, "not-a-uuid"])
def test_status_of_an_unknown_item_exits_1_with_not_found(bad_id: str) -> None:
    assert_refused(whim("status", bad_id), 1, "NOT_FOUND")


# --- queue -----------------------------------------------------------------------------------


def test_queue_lists_waiting_items_with_stats() -> None:
    queued = WorkItemFactory.create()
    done = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    body = whim("queue").json
    assert [i["id"] for i in body["items"]] == [str(queued.pk)]
    assert body["stats"]["total"] == 2
    everything = whim("queue", "--status", "all").json
    assert {i["id"] for i in everything["items"]} == {str(queued.pk), str(done.pk)}


def test_queue_filters_by_repo_and_pages_by_cursor() -> None:
    mine = {str(WorkItemFactory.create(repo="acme/mine").pk) for _ in range(3)}
    WorkItemFactory.create(repo="acme/theirs")
    first = whim("queue", "--repo", "acme/mine", "--limit", "2").json
    second = whim("queue", "--repo", "acme/mine", "--limit", "2", "--cursor", first["nextCursor"])
    seen = [i["id"] for i in first["items"]] + [i["id"] for i in second.json["items"]]
    assert sorted(seen) == sorted(mine)
    assert second.json["nextCursor"] is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--status", "bogus"), "status"),
        (("--type", "bogus"), "type"),
        (("--limit", "0"), "limit"),
        (("--cursor", "!!!"), "cursor"),
    ],
)
def test_queue_refuses_a_bad_filter_with_exit_2(args: tuple[str, ...], field: str) -> None:
    body = assert_refused(whim("queue", *args), 2, "VALIDATION_ERROR")
    assert field in body["details"]


# --- cancel, requeue ------------------------------------------------------------------------


def test_cancel_cancels_the_item() -> None:
    item = WorkItemFactory.create()
    assert whim("cancel", str(item.pk)).json == {"success": True}
    item.refresh_from_db()
    assert item.status == WorkItemStatus.CANCELLED
    assert item.events.get(kind="cancelled").actor == "cli"
    assert whim("cancel", str(item.pk)).json == {"success": True}


@pytest.mark.parametrize("bad_id", [UNKNOWN, "nope"])
def test_cancel_of_an_unknown_item_exits_1_with_not_found(bad_id: str) -> None:
    assert_refused(whim("cancel", bad_id), 1, "NOT_FOUND")


def test_cancel_of_a_completed_item_exits_1_with_invalid_state() -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.COMPLETED)
    assert_refused(whim("cancel", str(item.pk)), 1, "INVALID_STATE")
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.COMPLETED


def test_requeue_puts_a_failed_item_back() -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=2)
    body = whim("requeue", str(item.pk)).json
    assert (body["id"], body["status"], body["retryCount"]) == (str(item.pk), "queued", 2)


def test_requeue_with_reset_retries_zeroes_the_retry_count() -> None:
    item = WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=2)
    assert whim("requeue", str(item.pk), "--reset-retries").json["retryCount"] == 0
    assert WorkItem.objects.get(pk=item.pk).retry_count == 0


@pytest.mark.parametrize("bad_id", [UNKNOWN, "nope"])
def test_requeue_of_an_unknown_item_exits_1_with_not_found(bad_id: str) -> None:
    assert_refused(whim("requeue", bad_id), 1, "NOT_FOUND")


def test_requeue_of_a_running_item_exits_1_with_invalid_state() -> None:
    item, _ = running_item()
    assert_refused(whim("requeue", str(item.pk)), 1, "INVALID_STATE")


# --- workers, kill --------------------------------------------------------------------------


def test_workers_lists_workers_newest_first() -> None:
    older = WorkerFactory.create(status=WorkerStatus.COMPLETED)
    _, newer = running_item()
    body = whim("workers").json
    assert [w["id"] for w in body] == [str(newer.pk), str(older.pk)]
    assert body[0]["status"] == "running"
    assert body[0]["workItemId"] == str(newer.work_item_id)


def test_workers_with_none_prints_an_empty_list() -> None:
    assert whim("workers").json == []


def test_kill_stops_a_running_worker_and_retries_its_item(
    django_capture_on_commit_callbacks: Any,
) -> None:
    item, worker = running_item()
    with django_capture_on_commit_callbacks(execute=False):
        run = whim("kill", str(worker.pk), "--reason", "operator said so")
    assert run.json == {"success": True}
    worker.refresh_from_db()
    item.refresh_from_db()
    assert worker.status == WorkerStatus.KILLED
    assert "operator said so" in worker.error
    assert (item.status, item.retry_count) == (WorkItemStatus.QUEUED, 1)
    assert WorkItemEvent.objects.get(work_item=item, kind="retry_scheduled").actor == "cli"


def test_kill_with_no_retry_fails_the_item_as_a_manual_kill() -> None:
    item, worker = running_item()
    run = whim("kill", str(worker.pk), "--no-retry")
    assert run.json == {"success": True}
    item.refresh_from_db()
    assert (item.status, item.retry_count) == (WorkItemStatus.FAILED, 0)
    assert item.error == "killed: Manual kill"


def test_kill_with_a_reason_too_long_exits_2_like_the_api() -> None:
    _, worker = running_item()
    run = whim("kill", str(worker.pk), "--reason", "x" * 1001)
    assert_refused(run, 2, "VALIDATION_ERROR")
    assert "reason" in run.err
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.RUNNING


@pytest.mark.parametrize("bad_id", [UNKNOWN, "nope"])
def test_kill_of_an_unknown_worker_exits_1_with_not_found(bad_id: str) -> None:
    assert_refused(whim("kill", bad_id), 1, "NOT_FOUND")


def test_kill_of_a_finished_worker_exits_1_with_invalid_state() -> None:
    worker = WorkerFactory.create(status=WorkerStatus.COMPLETED)
    assert_refused(whim("kill", str(worker.pk)), 1, "INVALID_STATE")


# --- whim_setup ------------------------------------------------------------------------------


def setup() -> tuple[str, str]:
    out = io.StringIO()
    call_command("whim_setup", stdout=out)
    text = out.getvalue()
    key = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("API key"))
    return text, key


def test_whim_setup_creates_the_admin_once_and_a_fresh_key_each_run(client: Client) -> None:
    first_text, first_key = setup()
    assert "Admin login created: admin / " in first_text
    password = first_text.split("Admin login created: admin / ", 1)[1].splitlines()[0]
    assert client.login(username="admin", password=password)

    second_text, second_key = setup()
    assert "Admin login created" not in second_text
    assert "Admin login exists" in second_text

    users = get_user_model().objects.filter(is_superuser=True)
    assert list(users.values_list("username", flat=True)) == ["admin"]
    assert first_key != second_key
    assert apikey_authenticate(key=first_key) is None
    assert apikey_authenticate(key=second_key) == "api-key:make-run"
    runs = ApiKey.objects.filter(name="make-run").order_by("pk")
    assert [r.revoked_at is None for r in runs] == [False, True]


def test_whim_setup_leaves_other_keys_alone() -> None:
    call_command("whim_apikey", "create", "--name", "ci", stdout=io.StringIO())
    setup()
    setup()
    assert ApiKey.objects.get(name="ci").revoked_at is None


def test_whim_setup_keeps_an_existing_superuser() -> None:
    get_user_model().objects.create_superuser("root", "root@localhost", "pw-123456")
    text, _ = setup()
    assert "Admin login exists" in text
    assert not get_user_model().objects.filter(username="admin").exists()


def test_the_local_runtime_is_flagged_as_not_isolated_at_startup(settings: Any) -> None:
    from django.core.checks import run_checks

    settings.WHIM_RUNTIME = "local"
    warnings = [m for m in run_checks() if m.id == "orchestration.W002"]
    assert warnings and "NOT isolated" in warnings[0].msg


def test_the_command_line_keeps_warnings_off_a_scripts_stderr(settings: Any) -> None:
    settings.WHIM_RUNTIME = "local"  # W002, a warning
    out, err = io.StringIO(), io.StringIO()

    call_command("whim", "status", stdout=out, stderr=err, skip_checks=False)

    assert err.getvalue() == ""
    assert json.loads(out.getvalue())["status"] in ("healthy", "degraded", "error")


def test_the_command_line_still_stops_on_a_settings_error(settings: Any) -> None:
    from django.core.management.base import SystemCheckError

    settings.MAX_WORKERS = 0

    with pytest.raises(SystemCheckError, match="MAX_WORKERS"):
        call_command("whim", "status", stdout=io.StringIO(), skip_checks=False)


@pytest.mark.parametrize("command", ["whim", "whim_sweep"])
def test_a_sweep_by_hand_does_its_work_and_prints_what_it_did(command: str) -> None:
    from django.core.management.base import CommandError

    from orchestration.models import FileLock

    worker = WorkerFactory.create(status=WorkerStatus.KILLED)
    FileLock.objects.create(
        repo="acme/x", path="a.py", worker=worker, expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    args = ["sweep", "locks"] if command == "whim" else ["locks"]
    out = io.StringIO()

    call_command(command, *args, stdout=out)

    assert json.loads(out.getvalue()) == {"locks": {"deleted": 1}}
    assert not FileLock.objects.exists()
    everything = io.StringIO()
    call_command(command, *args[:-1], stdout=everything)  # no name: all of them
    assert set(json.loads(everything.getvalue())) == {
        "heartbeats",
        "stuck",
        "locks",
        "containers",
        "nodes",  # silent nodes marked lost (orchestration.services.nodes)
        "retention",
        "github",  # intake's outbox (registered by IntakeConfig.ready)
        "tallies",  # the page counts' deltas folded (orchestration.services.tallies)
        "beats",  # coalesced heartbeats written (orchestration.services.workers.beat_buffer)
    }
    with pytest.raises(CommandError, match="invalid choice"):
        call_command(command, *args[:-1], "nope", stdout=io.StringIO())
