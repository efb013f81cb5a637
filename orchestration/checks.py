"""Startup validation of settings (Django system checks, ids orchestration.E0xx)."""

from __future__ import annotations

import math
import os
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from orchestration.choices import WorkerEgress
from orchestration.forms.repos import repo_error
from orchestration.models import Priority
from orchestration.nudge import broker_reachable
from orchestration.registry import runtime, sweeps


def _at_least(name: str, minimum: float, check_id: str) -> list[CheckMessage]:
    value = getattr(settings, name)
    if value < minimum:
        return [Error(f"{name} must be at least {minimum} (it is {value}).", id=check_id)]
    return []


@register()
def check_limits(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    errors += _at_least("MAX_WORKERS", 1, "orchestration.E002")
    errors += _at_least("DAILY_BUDGET", 0, "orchestration.E003")
    errors += _at_least("COOLDOWN_SECONDS", 0, "orchestration.E004")
    errors += _at_least("STALE_THRESHOLD", 1, "orchestration.E005")
    errors += _at_least("LOOP_INTERVAL", 0.1, "orchestration.E006")
    errors += _at_least("MAX_RETRIES", 0, "orchestration.E007")
    errors += _at_least("VERIFICATION_MAX_RETRIES", 0, "orchestration.E070")
    errors += _at_least("MAX_QUEUED", 1, "orchestration.E008")
    errors += _at_least("MAX_QUEUED_PER_REPO", 1, "orchestration.E009")
    errors += _at_least("ASSIGNED_TIMEOUT", 1, "orchestration.E010")
    errors += _at_least("PROGRESS_TIMEOUT", 1, "orchestration.E014")
    errors += _at_least("WORKER_TIMEOUT", 1, "orchestration.E015")
    errors += _at_least("START_RENUDGE_SECONDS", 1, "orchestration.E016")
    errors += _at_least("RETENTION_DAYS", 1, "orchestration.E017")
    errors += _at_least("LOG_RETENTION_DAYS", 1, "orchestration.E018")
    errors += _at_least("QUARANTINE_AFTER", 1, "orchestration.E019")
    errors += _at_least("HEARTBEAT_GRACE", 0, "orchestration.E020")
    errors += _at_least("LOGIN_FAILURES_PER_USER", 0, "orchestration.E040")
    errors += _at_least("LOGIN_FAILURES_PER_ADDRESS", 0, "orchestration.E041")
    errors += _at_least("LOGIN_FAILURE_WINDOW_SECONDS", 1, "orchestration.E042")
    errors += _at_least("LOGIN_LOCKOUT_SECONDS", 1, "orchestration.E043")
    if settings.LOCK_TTL <= settings.HEARTBEAT_INTERVAL:
        errors.append(
            Error(
                f"LOCK_TTL ({settings.LOCK_TTL}s) must be longer than HEARTBEAT_INTERVAL "
                f"({settings.HEARTBEAT_INTERVAL}s), or leases lapse between heartbeats.",
                id="orchestration.E021",
            )
        )
    if settings.STALE_THRESHOLD + settings.HEARTBEAT_GRACE <= settings.HEARTBEAT_INTERVAL:
        errors.append(
            Error(
                "STALE_THRESHOLD + HEARTBEAT_GRACE must be longer than HEARTBEAT_INTERVAL, or "
                "every worker is declared lost between two heartbeats.",
                id="orchestration.E022",
            )
        )
    if settings.START_RENUDGE_SECONDS >= settings.ASSIGNED_TIMEOUT:
        errors.append(
            Warning(
                f"START_RENUDGE_SECONDS ({settings.START_RENUDGE_SECONDS}s) is not shorter than "
                f"ASSIGNED_TIMEOUT ({settings.ASSIGNED_TIMEOUT}s): a lost start message is "
                "never sent again; the attempt times out and is retried instead.",
                id="orchestration.W003",
            )
        )
    if settings.WHIM_AGENT not in ("claude", "codex", "command", "mock"):
        errors.append(
            Error(
                f"WHIM_AGENT {settings.WHIM_AGENT!r} is not one of claude, codex, command, mock.",
                id="orchestration.E023",
            )
        )
    elif settings.WHIM_AGENT == "command" and not settings.WHIM_AGENT_COMMAND.strip():
        errors.append(
            Error(
                "WHIM_AGENT=command needs WHIM_AGENT_COMMAND (a shell command).",
                id="orchestration.E024",
            )
        )
    if settings.WHIM_CALLBACK_PORT == settings.PORT or not 0 < settings.WHIM_CALLBACK_PORT < 65536:
        errors.append(
            Error(
                f"WHIM_CALLBACK_PORT ({settings.WHIM_CALLBACK_PORT}) must be a port other than "
                f"PORT ({settings.PORT}): it serves worker callbacks only, to containers.",
                id="orchestration.E050",
            )
        )
    if settings.WORKER_EGRESS not in WorkerEgress.values:
        errors.append(
            Error(
                f"WORKER_EGRESS {settings.WORKER_EGRESS!r} is not one of none, allowlist, open.",
                id="orchestration.E051",
            )
        )
    if not settings.RETRY_DELAYS or any(d < 0 for d in settings.RETRY_DELAYS):
        errors.append(
            Error(
                "RETRY_DELAYS must be a comma-separated list of seconds, none negative "
                f"(it is {settings.RETRY_DELAYS}).",
                id="orchestration.E011",
            )
        )
    try:
        ZoneInfo(settings.WHIM_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(
            Error(
                f"WHIM_TIMEZONE {settings.WHIM_TIMEZONE!r} is not a known IANA time zone "
                "(for example UTC or Europe/Berlin).",
                id="orchestration.E012",
            )
        )
    available = runtime().available()
    if settings.WHIM_RUNTIME != "auto" and settings.WHIM_RUNTIME not in available:
        errors.append(
            Error(
                f"WHIM_RUNTIME {settings.WHIM_RUNTIME!r} is not available here; choose one of "
                f"auto, {', '.join(available)}.",
                id="orchestration.E013",
            )
        )
    if settings.WHIM_RUNTIME == "local":
        errors.append(
            Warning(
                "WHIM_RUNTIME=local: agents run as processes on this machine, NOT isolated "
                "in containers. Use docker wherever a Docker engine is available.",
                id="orchestration.W002",
            )
        )
    if settings.EMBEDDED_MODE and not settings.DEBUG:
        errors.append(
            Warning(
                "Single-machine mode: no DATABASE_URL/REDIS_URL, so SQLite and a filesystem broker "
                "are in use. Fine for one machine; set both for production.",
                id="orchestration.W001",
            )
        )
    return errors


SIZE_RE = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size_bytes(value: object) -> int | None:
    """``"2g"``, ``"512m"``, ``"1048576"`` as bytes (Docker's and tmpfs's spelling, binary
    units); None for anything else (a percentage, a typo)."""
    match = SIZE_RE.match(str(value))
    if match is None:
        return None
    return int(match[1]) * SIZE_UNITS[match[2].lower()]


@register()
def check_worker_resources(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Sizes of a worker container parse, and its tmpfs mounts leave the agent memory: tmpfs
    pages are charged to the container's memory (WORKER_MEMORY, no swap), so a workspace as
    big as the memory lets a full disk OOM-kill the attempt instead of failing a write."""
    messages: list[CheckMessage] = []
    sizes = {
        name: size_bytes(getattr(settings, name))
        for name in ("WORKER_MEMORY", "WORKER_WORKSPACE_SIZE", "WORKER_TMPFS_SIZE")
    }
    for name, size in sizes.items():
        if not size:
            messages.append(
                Error(
                    f"{name} {getattr(settings, name)!r} is not a size such as 512m or 2g.",
                    id="orchestration.E030",
                )
            )
    memory, workspace = sizes["WORKER_MEMORY"], sizes["WORKER_WORKSPACE_SIZE"]
    if memory and workspace and workspace + (sizes["WORKER_TMPFS_SIZE"] or 0) >= memory:
        messages.append(
            Warning(
                f"WORKER_WORKSPACE_SIZE ({settings.WORKER_WORKSPACE_SIZE}) plus /tmp "
                f"({settings.WORKER_TMPFS_SIZE}) is not smaller than WORKER_MEMORY "
                f"({settings.WORKER_MEMORY}): both tmpfs mounts count against the container's "
                "memory, so a full workspace leaves the agent none.",
                id="orchestration.W010",
                hint="Raise WORKER_MEMORY or lower WORKER_WORKSPACE_SIZE.",
            )
        )
    for name in ("MAX_TOKENS_PER_HEARTBEAT", "MAX_TOKENS_PER_ATTEMPT", "MAX_METRIC_COUNT"):
        messages += _at_least(name, 1, "orchestration.E031")
    messages += _at_least("MAX_ATTEMPT_DURATION_MS", 1000, "orchestration.E031")
    messages += _at_least("COMMIT_CHECK_TIMEOUT", 1, "orchestration.E031")
    return messages


@register()
def check_pipeline(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Money limits and the harness's knobs (whim/settings_pipeline.py)."""
    errors: list[CheckMessage] = []
    for name, check_id in (
        ("DAILY_COST_BUDGET", "orchestration.E060"),
        ("ITEM_COST_CAP", "orchestration.E061"),
        ("TOKEN_PRICE_IN_PER_MILLION", "orchestration.E062"),
        ("TOKEN_PRICE_OUT_PER_MILLION", "orchestration.E062"),
    ):
        value = getattr(settings, name)
        if not math.isfinite(value) or value < 0:
            errors.append(
                Error(f"{name} must be a finite number of dollars, at least 0.", id=check_id)
            )
    if not (
        math.isfinite(settings.MAX_COST_PER_ATTEMPT_USD) and settings.MAX_COST_PER_ATTEMPT_USD > 0
    ):
        errors.append(
            Error(
                "MAX_COST_PER_ATTEMPT_USD must be a finite number of dollars above 0.",
                id="orchestration.E063",
            )
        )
    errors += _at_least("AGENT_IDLE_TIMEOUT", 1, "orchestration.E064")
    errors += _at_least("TEST_TIMEOUT", 1, "orchestration.E065")
    if not 0 <= settings.FIX_ITERATIONS <= MAX_FIX_ITERATIONS:
        errors.append(
            Error(
                f"FIX_ITERATIONS must be from 0 to {MAX_FIX_ITERATIONS} "
                f"(it is {settings.FIX_ITERATIONS}).",
                id="orchestration.E066",
            )
        )
    if settings.WHIM_REVIEWER not in REVIEWERS:
        errors.append(
            Error(
                f"WHIM_REVIEWER {settings.WHIM_REVIEWER!r} is not one of {', '.join(REVIEWERS)}.",
                id="orchestration.E067",
            )
        )
    if settings.ANTHROPIC_BASE_URL and not re.match(r"^https?://", settings.ANTHROPIC_BASE_URL):
        errors.append(Error("ANTHROPIC_BASE_URL must be an http(s) URL.", id="orchestration.E068"))
    return errors


# The harness's reviewers (WHIM_REVIEWER): the agent's CLI, Anthropic's API, or none; and the
# most fix iterations it accepts (harness/config.py refuses more as CONFIG_ERROR).
REVIEWERS = ("agent", "anthropic", "none")
MAX_FIX_ITERATIONS = 20


@register()
def check_agent_path_dir(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """WHIM_AGENT_PATH_DIR, when set, is an existing absolute directory: the docker runtime
    binds it into every worker container (a missing one fails every start)."""
    value = str(settings.WHIM_AGENT_PATH_DIR or "").strip()
    if not value:
        return []
    if not os.path.isabs(value):
        problem = "is not an absolute path"
    elif not os.path.isdir(value):
        problem = "is not an existing directory"
    else:
        return []
    return [
        Error(
            f"WHIM_AGENT_PATH_DIR {value!r} {problem}.",
            id="orchestration.E071",
            hint="Set it to the absolute path of a directory of agent executables, or leave "
            "it empty.",
        )
    ]


@register()
def check_sweep_schedule(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Every registered sweep has a beat period (SWEEP_PERIODS) and every period a sweep."""
    registered, scheduled = set(sweeps()), set(settings.SWEEP_PERIODS)
    messages: list[CheckMessage] = []
    if registered - scheduled:
        messages.append(
            Warning(
                f"Sweeps without a period in SWEEP_PERIODS never run on their own: "
                f"{', '.join(sorted(registered - scheduled))}.",
                id="orchestration.W004",
            )
        )
    if scheduled - registered:
        messages.append(
            Warning(
                f"SWEEP_PERIODS names sweeps no installed app registers: "
                f"{', '.join(sorted(scheduled - registered))} (beat will run them as no-ops "
                "that fail).",
                id="orchestration.W004",
            )
        )
    return messages


@register()
def check_intake(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Issue intake's settings (whim/settings_github.py): INTAKE_PRIORITY is a priority (else
    every intake item would quietly be medium), each INTAKE_REPOS entry an ``owner/name``."""
    errors: list[CheckMessage] = []
    if str(settings.INTAKE_PRIORITY).strip().lower() not in Priority.values:
        errors.append(
            Error(
                f"INTAKE_PRIORITY {settings.INTAKE_PRIORITY!r} is not one of "
                f"{', '.join(Priority.values)}.",
                id="orchestration.E072",
            )
        )
    for name in settings.INTAKE_REPOS:
        problem = repo_error(str(name).strip())
        if problem and str(name).strip():
            errors.append(
                Error(
                    f"INTAKE_REPOS entry {str(name)[:200]!r} is not a repository: {problem}.",
                    id="orchestration.E073",
                )
            )
    return errors


@register()
def check_log_format(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """LOG_FORMAT is plain or json (a typo would otherwise log plain without a word)."""
    if settings.LOG_FORMAT in ("plain", "json"):
        return []
    return [
        Error(
            f"LOG_FORMAT {str(settings.LOG_FORMAT)[:50]!r} is not plain or json.",
            id="orchestration.E074",
        )
    ]


@register(deploy=True)
def check_broker(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: the broker answers."""
    if broker_reachable():
        return []
    return [
        Error(
            "The Celery broker (REDIS_URL) is unreachable.",
            id="orchestration.E001",
            hint="Start Redis or fix REDIS_URL.",
        )
    ]


@register()
def check_heartbeat_coalescing(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Coalesced heartbeats reach the database by the "beats" sweep: a beat buffered just after
    a pass is written a period later, so a live attempt must never look stale or its leases
    lapse in that time (issue 12's staleness rule)."""
    if not settings.HEARTBEAT_COALESCE:
        return []
    flush = settings.SWEEP_PERIODS["beats"]
    errors: list[CheckMessage] = []
    lag = flush + settings.HEARTBEAT_INTERVAL + settings.SWEEP_PERIODS["heartbeats"]
    if lag >= settings.STALE_THRESHOLD:
        errors.append(
            Error(
                f"SWEEP_BEATS_EVERY ({flush}s) + HEARTBEAT_INTERVAL "
                f"({settings.HEARTBEAT_INTERVAL}s) + SWEEP_HEARTBEATS_EVERY "
                f"({settings.SWEEP_PERIODS['heartbeats']}s) must be less than STALE_THRESHOLD "
                f"({settings.STALE_THRESHOLD}s), or a live attempt's coalesced heartbeats reach "
                "the database too late and it is taken for lost. Shorten SWEEP_BEATS_EVERY, "
                "or set HEARTBEAT_COALESCE=false.",
                id="orchestration.E090",
            )
        )
    if flush + settings.HEARTBEAT_INTERVAL >= settings.LOCK_TTL:
        errors.append(
            Error(
                f"LOCK_TTL ({settings.LOCK_TTL}s) must be longer than SWEEP_BEATS_EVERY "
                f"({flush}s) + HEARTBEAT_INTERVAL ({settings.HEARTBEAT_INTERVAL}s), or a live "
                "attempt's leases lapse before its coalesced heartbeats renew them.",
                id="orchestration.E091",
            )
        )
    return errors
