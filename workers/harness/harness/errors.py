"""What can go wrong, classified at the boundary where it happens.

A ``HarnessError`` carries the category the fail callback reports, so the orchestrator can
decide whether a retry makes sense (a clone error might, a config error will not).
"""

from __future__ import annotations


class Category:
    """Failure categories sent as ``category`` in the fail callback (a subset of the
    orchestrator's ``orchestration.choices.ErrorCategory``, which decides their retry)."""

    CONFIG_ERROR = "CONFIG_ERROR"  # bad or missing environment, unknown agent, missing binary
    VALIDATION_ERROR = "VALIDATION_ERROR"  # the work item cannot be worked (no description)
    CALLBACK_ERROR = "CALLBACK_ERROR"  # the orchestrator refused or could not be reached
    CLONE_ERROR = "CLONE_ERROR"  # clone or branch checkout failed
    AGENT_ERROR = "AGENT_ERROR"  # the agent failed (non-zero exit, mock fail mode)
    NO_CHANGES = "NO_CHANGES"  # the agent finished without changing anything
    LOCK_ERROR = "LOCK_ERROR"  # the lock answer made no sense
    COMMIT_ERROR = "COMMIT_ERROR"  # git add / commit failed
    PUSH_ERROR = "PUSH_ERROR"  # push rejected or failed
    PR_ERROR = "PR_ERROR"  # the branch is pushed but the pull request could not be opened
    # Refused to push to a protected branch or the repository's default branch: permanent.
    POLICY_ERROR = "POLICY_ERROR"
    TERMINATED = "TERMINATED"  # SIGTERM / SIGINT before the attempt finished
    RESOURCE_ERROR = "RESOURCE_ERROR"  # the agent was OOM-killed (exit 137 and oom_kill rose)
    # The per-item cost cap was reached at an iteration boundary; the work so far is pushed.
    COST_CAP = "COST_CAP"
    TIMEOUT = "TIMEOUT"  # a spec attempt's agent ran past SPEC_TIMEOUT
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug in the harness: the stack is sent too


# The harness's own copy of the names it reports: it runs inside the container on the
# standard library alone, so it cannot import the orchestrator's ``ErrorCategory``. Every
# name must be a member of that (tests/test_vocabularies.py fails when the two drift).
CATEGORIES: tuple[str, ...] = tuple(
    value for name, value in vars(Category).items() if name.isupper()
)


class HarnessError(Exception):
    """An expected failure with its category; the message must hold no secret."""

    category: str = Category.INTERNAL_ERROR

    def __init__(self, message: str, *, category: str | None = None) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category


class ConfigError(HarnessError):
    category = Category.CONFIG_ERROR


class PolicyError(HarnessError):
    """The item's branch is one the harness never pushes to (protected, or the default)."""

    category = Category.POLICY_ERROR


class AgentError(HarnessError):
    category = Category.AGENT_ERROR


class Terminated(HarnessError):
    category = Category.TERMINATED


class CostCapReached(HarnessError):
    """The attempt spent its WHIM_COST_CAP_USD: stopped at an iteration boundary, work pushed;
    the orchestrator pauses the item until an operator raises the cap."""

    category = Category.COST_CAP


class AgentStuck(Exception):
    """The agent gave up without failing: the harness reports ``stuck {reason, attempts}``."""

    def __init__(self, reason: str, *, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class Fenced(Exception):
    """The orchestrator answered 409: this worker is no longer the active one. Stop now."""


class CallbackError(Exception):
    """A callback failed for good: a 4xx other than 409, or retries ran out."""

    def __init__(
        self, message: str, *, status: int | None = None, fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields  # the fields a 400's ``details`` names (API.md's error shape)
