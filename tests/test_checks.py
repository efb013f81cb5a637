"""Startup validation (orchestration/checks.py): each bad setting gives its own check id and a
message that names the setting; the defaults give no error."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.core.checks import Error, run_checks

from orchestration.checks import (
    check_intake,
    check_limits,
    check_worker_resources,
    size_bytes,
)
from orchestration.checks_database import check_client_side_binding


def ids(messages: list[Any]) -> set[str]:
    return {m.id for m in messages}


def test_the_defaults_pass_every_check() -> None:
    assert not [m for m in run_checks() if isinstance(m, Error)]


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("MAX_WORKERS", 0, "orchestration.E002"),
        ("DAILY_BUDGET", -1, "orchestration.E003"),
        ("COOLDOWN_SECONDS", -1, "orchestration.E004"),
        ("STALE_THRESHOLD", 0, "orchestration.E005"),
        ("LOOP_INTERVAL", 0.0, "orchestration.E006"),
        ("MAX_RETRIES", -1, "orchestration.E007"),
        ("VERIFICATION_MAX_RETRIES", -1, "orchestration.E070"),
        ("MAX_QUEUED", 0, "orchestration.E008"),
        ("MAX_QUEUED_PER_REPO", 0, "orchestration.E009"),
        ("ASSIGNED_TIMEOUT", 0, "orchestration.E010"),
        ("RETRY_DELAYS", [60, -5], "orchestration.E011"),
        ("RETRY_DELAYS", [], "orchestration.E011"),
        ("WHIM_TIMEZONE", "Mars/Olympus", "orchestration.E012"),
        ("WHIM_RUNTIME", "kubernetes", "orchestration.E013"),
        ("PROGRESS_TIMEOUT", 0, "orchestration.E014"),
        ("WORKER_TIMEOUT", 0, "orchestration.E015"),
        ("START_RENUDGE_SECONDS", 0, "orchestration.E016"),
        ("RETENTION_DAYS", 0, "orchestration.E017"),
        ("LOG_RETENTION_DAYS", 0, "orchestration.E018"),
        ("QUARANTINE_AFTER", 0, "orchestration.E019"),
        ("HEARTBEAT_GRACE", -1, "orchestration.E020"),
        ("LOCK_TTL", 5, "orchestration.E021"),
        ("WHIM_AGENT", "gpt", "orchestration.E023"),
        ("WORKER_EGRESS", "closed", "orchestration.E051"),
        ("WHIM_CALLBACK_PORT", 0, "orchestration.E050"),
    ],
)
def test_a_bad_setting_is_an_error_that_names_it(
    settings: Any, name: str, value: Any, check_id: str
) -> None:
    settings.HEARTBEAT_INTERVAL = 10.0
    setattr(settings, name, value)

    errors = [m for m in check_limits(None) if m.id == check_id]

    assert len(errors) == 1 and isinstance(errors[0], Error)
    assert name in errors[0].msg


def test_heartbeats_slower_than_the_stale_threshold_are_an_error(settings: Any) -> None:
    settings.HEARTBEAT_INTERVAL, settings.STALE_THRESHOLD, settings.HEARTBEAT_GRACE = 60, 30, 10

    assert "orchestration.E022" in ids(check_limits(None))


def test_the_command_agent_needs_its_command(settings: Any) -> None:
    settings.WHIM_AGENT, settings.WHIM_AGENT_COMMAND = "command", "  "

    assert "orchestration.E024" in ids(check_limits(None))


def test_the_callback_listener_must_not_share_the_web_port(settings: Any) -> None:
    settings.WHIM_CALLBACK_PORT = settings.PORT

    assert "orchestration.E050" in ids(check_limits(None))


def test_a_renudge_no_sooner_than_the_start_timeout_is_a_warning(settings: Any) -> None:
    settings.START_RENUDGE_SECONDS, settings.ASSIGNED_TIMEOUT = 300, 300

    [warning] = [m for m in check_limits(None) if m.id == "orchestration.W003"]

    assert not isinstance(warning, Error)
    assert "START_RENUDGE_SECONDS" in warning.msg and "ASSIGNED_TIMEOUT" in warning.msg


# --- worker resources (issue 9: bounded disk, bounded claims) -------------------------------


def test_the_default_sizes_leave_the_agent_memory_beside_its_workspace() -> None:
    assert not ids(check_worker_resources(None)) & {"orchestration.W010", "orchestration.E030"}


@pytest.mark.parametrize(
    ("memory", "workspace", "tmp"),
    [("2g", "2g", "64m"), ("1g", "2g", "64m"), ("2560m", "2g", "512m")],
)
def test_a_workspace_that_fills_the_memory_is_a_warning(
    settings: Any, memory: str, workspace: str, tmp: str
) -> None:
    settings.WORKER_MEMORY, settings.WORKER_WORKSPACE_SIZE = memory, workspace
    settings.WORKER_TMPFS_SIZE = tmp

    [warning] = [m for m in check_worker_resources(None) if m.id == "orchestration.W010"]

    assert not isinstance(warning, Error)
    assert "WORKER_WORKSPACE_SIZE" in warning.msg and "WORKER_MEMORY" in warning.msg


@pytest.mark.parametrize("name", ["WORKER_MEMORY", "WORKER_WORKSPACE_SIZE", "WORKER_TMPFS_SIZE"])
@pytest.mark.parametrize("value", ["50%", "2 gigs", "", "0"])
def test_a_size_that_does_not_parse_is_an_error(settings: Any, name: str, value: str) -> None:
    setattr(settings, name, value)

    errors = [m for m in check_worker_resources(None) if m.id == "orchestration.E030"]

    assert errors and name in errors[0].msg


@pytest.mark.parametrize(
    "name",
    [
        "MAX_TOKENS_PER_HEARTBEAT",
        "MAX_TOKENS_PER_ATTEMPT",
        "MAX_METRIC_COUNT",
        "MAX_ATTEMPT_DURATION_MS",
        "COMMIT_CHECK_TIMEOUT",
    ],
)
def test_a_bound_below_one_is_an_error(settings: Any, name: str) -> None:
    setattr(settings, name, 0)

    errors = [m for m in check_worker_resources(None) if m.id == "orchestration.E031"]

    assert errors and name in errors[0].msg


def test_sizes_read_as_docker_and_tmpfs_read_them() -> None:
    assert size_bytes("2g") == 2 * 1024**3
    assert size_bytes("512m") == 512 * 1024**2
    assert size_bytes("64M") == 64 * 1024**2
    assert size_bytes("1048576") == 1048576
    assert size_bytes("10%") is None


@pytest.mark.parametrize("value", ["urgent", "", "med"])
def test_an_intake_priority_that_is_not_a_priority_is_an_error(settings: Any, value: str) -> None:
    settings.INTAKE_PRIORITY = value

    errors = [m for m in check_intake(None) if m.id == "orchestration.E072"]

    assert len(errors) == 1 and "INTAKE_PRIORITY" in errors[0].msg


@pytest.mark.parametrize("entry", ["widgets", "acme/widgets/extra", "acme/x.git", "-acme/x"])
def test_an_intake_repos_entry_that_is_not_owner_name_is_an_error(
    settings: Any, entry: str
) -> None:
    settings.INTAKE_REPOS = ["acme/widgets", entry, ""]

    errors = [m for m in check_intake(None) if m.id == "orchestration.E073"]

    assert len(errors) == 1 and "INTAKE_REPOS" in errors[0].msg and entry in errors[0].msg


def test_good_intake_settings_pass(settings: Any) -> None:
    settings.INTAKE_PRIORITY, settings.INTAKE_REPOS = "High", ["acme/widgets", " acme/w.x "]

    assert check_intake(None) == []


def test_server_side_binding_is_an_error_the_claim_names(settings: Any) -> None:
    default = settings.DATABASES["default"]
    options = {**(default.get("OPTIONS") or {}), "server_side_binding": True}
    # In place, for this check only: overriding DATABASES would reconfigure the connections.
    with mock.patch.dict(default, {"OPTIONS": options}):
        assert [e.id for e in check_client_side_binding(None)] == ["orchestration.E092"]
        options["server_side_binding"] = False
        assert check_client_side_binding(None) == []
