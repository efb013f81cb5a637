"""Whim's vocabularies: the kinds of event on an item's timeline and the failure categories
an attempt ends with, each named once, with the sets the retry decision reads.

Bottom of the dependency graph (Django only): models, services, the admin and the runtime
all read it. Statuses stay on their models (``WorkItemStatus``, ``WorkerStatus``).

Every member equals the string stored in the database, so rows written before these names
existed, and tests comparing with plain strings, still match.
"""

from __future__ import annotations

from enum import property as enum_property

from django.db import models


class Spelled(models.TextChoices):
    """Choices labelled with their stored value: the admin shows ``attempt_failed`` and
    ``RESOURCE_ERROR`` as they are written on the rows, not a title-cased paraphrase."""

    @enum_property
    def label(self) -> str:
        return str(self.value)


class EventKind(Spelled):
    """What a ``WorkItemEvent`` records (its ``kind``)."""

    # The item's own life.
    SUBMITTED = "submitted"  # created by a client, or a verification item by a completion
    SPEC_GENERATED = "spec_generated"  # generating → queued: the spec was written
    # No spec after SPEC_MAX_ATTEMPTS tries (or a permanent failure): generating → failed.
    SPEC_FAILED = "spec_failed"
    CLAIMED = "claimed"  # queued → assigned: the claim created an attempt
    STARTED = "started"  # assigned → in_progress: the attempt's container is up
    COMPLETED = "completed"  # the attempt completed the item
    RETRY_SCHEDULED = "retry_scheduled"  # an attempt ended; the item waits for its backoff
    FAILED = "failed"  # an attempt ended and no retry is left (or allowed)
    CANCELLED = "cancelled"  # an operator or client cancelled the item
    REQUEUED = "requeued"  # a finished item put back in the queue (resets the quarantine count)
    RECOVERED = "recovered"  # active without a live attempt: back to the queue by the sweep
    PRIORITY_CHANGED = "priority_changed"  # an operator changed the priority
    # An attempt checked out the branch an earlier attempt pushed (its first heartbeat said so).
    RESUMED = "resumed"
    # A verification item reported its verdict: recorded on the item it verifies.
    VERIFIED = "verified"
    # The attempt stopped at its cost cap (fail COST_CAP): the item waits for an operator.
    PAUSED = "paused"
    CONTINUED = "continued"  # an operator continued a paused item with a raised cost cap
    # A completion's partial success ("pull request could not be opened: …"), kept on record.
    WARNING = "warning"

    # File locks taken, refused or freed by hand.
    LOCKS_ACQUIRED = "locks_acquired"
    LOCK_BLOCKED = "lock_blocked"  # another worker holds a path: why the attempt waits
    LOCK_RELEASED = "lock_released"  # an operator freed a lock

    # A superseded attempt ended (the item is no longer its to move): one per worker ending.
    ATTEMPT_FAILED = "attempt_failed"
    ATTEMPT_STUCK = "attempt_stuck"
    ATTEMPT_LOST = "attempt_lost"
    ATTEMPT_KILLED = "attempt_killed"

    # The runtime could not stop or remove a container (at most one per ten minutes).
    CONTAINER_CLEANUP_FAILED = "container_cleanup_failed"
    # The node running the attempt fell silent for NODE_TIMEOUT: the attempt was failed there
    # (NODE_LOST) to run elsewhere; the node cannot complete it if it comes back.
    NODE_LOST = "node_lost"
    # Someone reviewed the item's pull request on GitHub (reviews' webhook).
    GITHUB_REVIEW = "github_review"
    # A worker's complete was refused: its commit is not on the pushed branch (or missing).
    COMMIT_REFUSED = "commit_refused"
    # A call on GitHub that the item asked for (a label, a comment, a review) failed for good:
    # GitHub refused it, or GITHUB_ACTION_MAX_ATTEMPTS ran out (intake/outbox.py).
    GITHUB_ACTION_FAILED = "github_action_failed"


class ErrorCategory(Spelled):
    """Why an attempt ended other than by completing (``error_category`` on the worker and
    its item). Grouped by the set each belongs to; the line beside each says what it means
    and why it is there.

    A worker may also report a category of its own (the fail callback accepts any
    UPPER_SNAKE_CASE name, as the original Whim's workers send them): one not named here is
    retryable and not counted for quarantine, like the last group below.
    """

    # --- infrastructure: retried, and counted for quarantine. The machinery under the
    # attempt failed, not the agent; an item that keeps killing its attempts this way is a
    # crash loop that no retry fixes, so QUARANTINE_AFTER of them fail it.
    RESOURCE_ERROR = "RESOURCE_ERROR"  # container OOM-killed: the item may be too big to run
    CONTAINER_LOST = "CONTAINER_LOST"  # a running worker's container vanished
    CRASHED = "CRASHED"  # the container died (non-zero exit or a signal) mid-attempt
    HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"  # silent past STALE_THRESHOLD + HEARTBEAT_GRACE
    START_TIMEOUT = "START_TIMEOUT"  # no container came up within ASSIGNED_TIMEOUT
    START_ERROR = "START_ERROR"  # the runtime refused to start the container
    TERMINATED = "TERMINATED"  # the harness got SIGTERM/SIGINT (a host or container stop)
    NODE_LOST = "NODE_LOST"  # the attempt's node fell silent for NODE_TIMEOUT (a dead host)

    # --- permanent: never retried. The same input would fail the same way again.
    VALIDATION_ERROR = "VALIDATION_ERROR"  # a worker reports the work item itself is invalid
    # Bad environment, unknown agent, missing binary; also a work item whose repo or branch
    # breaks the name rules (one stored before they existed): the harness reads the item as
    # part of its environment, and no retry changes a stored name.
    CONFIG_ERROR = "CONFIG_ERROR"
    CONTAINER_ERROR = "CONTAINER_ERROR"  # image/entrypoint broken: exited before registering
    PERMANENT = "PERMANENT"  # a worker says outright that no retry can help
    # The harness refused to push to a protected branch (WHIM_PROTECTED_BRANCHES) or to the
    # repository's default branch. Permanent: the branch is part of the item, so every retry
    # would be refused the same way; the item needs another branch (a new submit).
    POLICY_ERROR = "POLICY_ERROR"

    # --- retryable, not infrastructure: the attempt's own failure. Retried up to MAX_RETRIES
    # (that bound, not quarantine, stops a hopeless item); quarantine stays for crash loops.
    AGENT_ERROR = "AGENT_ERROR"  # the agent failed (the default): a fresh run may not
    STUCK = "STUCK"  # the agent reported it cannot progress: a fresh start may
    # The stuck sweep: alive and heartbeating but no iteration or tokens for PROGRESS_TIMEOUT.
    # Kept out of infrastructure: the machinery works (heartbeats arrive); the agent stalls.
    NO_PROGRESS = "NO_PROGRESS"
    # The container exited 0 without reporting complete. Kept out of infrastructure: the
    # container ran to a clean exit; what is missing is the harness's report, an attempt
    # failure that a retry can repair and that says nothing about the host.
    NO_RESULT = "NO_RESULT"
    # Ran past WORKER_TIMEOUT and was killed. Kept out of infrastructure: the container was
    # healthy, only slow; quarantine is for attempts that die, not ones that run long.
    TIMEOUT = "TIMEOUT"
    # The agent finished without changing any file. Retryable: agents are not deterministic
    # and another run may do the work; not infrastructure: nothing under it failed.
    NO_CHANGES = "NO_CHANGES"
    # The branch is pushed but GitHub would not open the pull request. Retryable: GitHub's
    # refusals and outages pass, and the pushed branch is a checkpoint the retry resumes
    # from; not infrastructure: it is GitHub's answer, not Whim's machinery dying.
    PR_ERROR = "PR_ERROR"
    CALLBACK_ERROR = "CALLBACK_ERROR"  # the orchestrator refused or was unreachable: passes
    CLONE_ERROR = "CLONE_ERROR"  # clone or checkout failed: a network or remote blip passes
    LOCK_ERROR = "LOCK_ERROR"  # the lock answer made no sense to the harness
    COMMIT_ERROR = "COMMIT_ERROR"  # git add / commit failed in the workspace
    PUSH_ERROR = "PUSH_ERROR"  # push rejected or failed: a fresh clone may push
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a harness bug (stack attached): retried, bounded

    # --- held for an operator: neither retried nor failed, not counted for quarantine.
    # The per-item cost cap was reached at an iteration boundary, with the work so far pushed.
    # Retrying would spend past the cap an operator set, failing would throw away paid-for
    # work: the item is ``paused`` until someone continues it with a raised cap.
    COST_CAP = "COST_CAP"

    # --- outcomes written by Whim itself, never passed to the retry decision (a worker that
    # reported one would get the default: retryable, not counted).
    QUARANTINED = "QUARANTINED"  # the verdict on a crash loop: the item is failed
    CANCELLED = "CANCELLED"  # the item was cancelled; its running attempt killed with it
    # An operator killed the attempt. Not the task's fault, so not permanent: the kill says
    # whether the item is retried (the API's kill, as the original Whim's, by default) or
    # fails (``retry: false``; the console's, admin's and CLI's kill).
    KILLED = "KILLED"


# Counted for quarantine (see the infrastructure group above).
INFRASTRUCTURE_CATEGORIES: frozenset[str] = frozenset(
    {
        ErrorCategory.RESOURCE_ERROR,
        ErrorCategory.CONTAINER_LOST,
        ErrorCategory.CRASHED,
        ErrorCategory.HEARTBEAT_TIMEOUT,
        ErrorCategory.START_TIMEOUT,
        ErrorCategory.START_ERROR,
        ErrorCategory.TERMINATED,
        ErrorCategory.NODE_LOST,
    }
)

# Never retried (see the permanent group above).
PERMANENT_CATEGORIES: frozenset[str] = frozenset(
    {
        ErrorCategory.VALIDATION_ERROR,
        ErrorCategory.CONFIG_ERROR,
        ErrorCategory.CONTAINER_ERROR,
        ErrorCategory.PERMANENT,
        ErrorCategory.POLICY_ERROR,
    }
)

# Neither retried nor failed: the item is paused for an operator (see the held group above).
HELD_CATEGORIES: frozenset[str] = frozenset({ErrorCategory.COST_CAP})

# Everything not permanent or held is retried (infrastructure included, until quarantine); the
# retry decision tests ``not in PERMANENT_CATEGORIES`` (after the held check) so a worker's own
# category is retried too.
RETRYABLE_CATEGORIES: frozenset[str] = (
    frozenset(ErrorCategory) - PERMANENT_CATEGORIES - HELD_CATEGORIES
)


class WorkerEgress(models.TextChoices):
    """What a worker container may reach beyond the callback listener (``WORKER_EGRESS``;
    workers/firewall.py). Link-local addresses are blocked in every mode."""

    NONE = "none", "none"  # nothing (Docker's embedded DNS still answers lookups)
    ALLOWLIST = "allowlist", "allowlist"  # the addresses of WORKER_EGRESS_ALLOW only
    OPEN = "open", "open"  # anything Docker routes: the explicit opt-out
