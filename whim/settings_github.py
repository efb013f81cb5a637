"""The GitHub loop's settings (issue 11): issue intake, spec generation, the review bot and
the outbox of GitHub calls. Star-imported by ``whim.settings``; each variable is in README.md's
configuration table with its default, and validated by ``orchestration.checks``.
"""

from __future__ import annotations

from typing import Any

import environ

env = environ.FileAwareEnv()

# --- Intake: labelled issues become work items (intake/) -----------------------------------
# owner/name of each watched repository, besides the Repository rows kept in the admin.
INTAKE_REPOS = env.list("INTAKE_REPOS", default=[])
# The label that asks Whim to take an issue, and the two it moves the issue through.
INTAKE_LABEL = env.str("INTAKE_LABEL", default="whim").strip()
INTAKE_PROCESSING_LABEL = env.str("INTAKE_PROCESSING_LABEL", default="whim:processing").strip()
INTAKE_DONE_LABEL = env.str("INTAKE_DONE_LABEL", default="whim:pr-ready").strip()
# GitHub logins whose issues (and labels) are taken; empty: the repository's collaborators.
INTAKE_ALLOWED_USERS = env.list("INTAKE_ALLOWED_USERS", default=[])
INTAKE_PRIORITY = env.str("INTAKE_PRIORITY", default="medium").strip().lower()
# Seconds between polls of every watched repository (catches what webhooks missed; 0: off).
INTAKE_POLL_INTERVAL = env.float("INTAKE_POLL_INTERVAL", default=300.0)

# --- Spec generation (generating → queued) -------------------------------------------------
# agent | template | command; "" picks agent when an agent is configured, else template.
SPEC_GENERATOR = env.str("SPEC_GENERATOR", default="").strip().lower()
SPEC_COMMAND = env.str("SPEC_COMMAND", default="").strip()  # command mode: stdin → stdout
SPEC_MAX_ATTEMPTS = env.int("SPEC_MAX_ATTEMPTS", default=3)
SPEC_MAX_BYTES = env.int("SPEC_MAX_BYTES", default=100_000)
SPEC_TIMEOUT = env.int("SPEC_TIMEOUT", default=600)  # seconds, command mode and agent runs

# --- The review bot (reviews/) -------------------------------------------------------------
REVIEW_BOT = env.bool("REVIEW_BOT", default=True)  # review PRs on watched repositories
REVIEW_DRAFTS = env.bool("REVIEW_DRAFTS", default=False)
REVIEW_CONCURRENCY_PER_REPO = env.int("REVIEW_CONCURRENCY_PER_REPO", default=1)
# Fix-up attempts a needs-work / misaligned review may queue on a Whim PR (0: off).
REVIEW_FIX_ROUNDS = env.int("REVIEW_FIX_ROUNDS", default=0)
REVIEW_CHECK_NAME = env.str("REVIEW_CHECK_NAME", default="Whim review").strip()
# The console's address as people reach it (https://whim.example.com): the check run's
# "details" link to the review job's page. "": no link.
WHIM_PUBLIC_URL = env.str("WHIM_PUBLIC_URL", default="").strip()

# --- The outbox of GitHub calls (intake/outbox.py) -----------------------------------------
GITHUB_ACTION_MAX_ATTEMPTS = env.int("GITHUB_ACTION_MAX_ATTEMPTS", default=10)
GITHUB_TIMEOUT = env.float("GITHUB_TIMEOUT", default=15.0)  # seconds per GitHub request

# Beat: the intake poll (a no-op when nothing is watched or the interval is 0).
GITHUB_BEAT_SCHEDULE: dict[str, dict[str, Any]] = (
    {
        "whim-intake-poll": {
            "task": "intake.poll",
            "schedule": INTAKE_POLL_INTERVAL,
            "options": {"expire_seconds": int(min(max(INTAKE_POLL_INTERVAL * 2, 30), 3600))},
        }
    }
    if INTAKE_POLL_INTERVAL > 0
    else {}
)
