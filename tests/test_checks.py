"""Startup validation (orchestration/checks.py): each bad setting gives its own check id and a
message that names the setting; the defaults give no error."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import Error, run_checks

from orchestration.checks import check_limits


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
        ("WORKER_EGRESS", "closed", "orchestration.E031"),
        ("WHIM_CALLBACK_PORT", 0, "orchestration.E030"),
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

    assert "orchestration.E030" in ids(check_limits(None))


def test_a_renudge_no_sooner_than_the_start_timeout_is_a_warning(settings: Any) -> None:
    settings.START_RENUDGE_SECONDS, settings.ASSIGNED_TIMEOUT = 300, 300

    [warning] = [m for m in check_limits(None) if m.id == "orchestration.W003"]

    assert not isinstance(warning, Error)
    assert "START_RENUDGE_SECONDS" in warning.msg and "ASSIGNED_TIMEOUT" in warning.msg
