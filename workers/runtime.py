"""The container runtime interface and its registry.

Implementations: ``docker`` (docker-py, hardened containers: ``workers/docker_runtime.py``),
``local`` (a subprocess with rlimits, not isolated: ``workers/local_runtime.py``) and ``fake``
(no process at all: a Celery task plays the mock agent: ``workers/fake_runtime.py``). Each
registers itself with ``@register``; ``WorkersConfig.ready()`` imports them, so this module
never imports its implementations.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import ClassVar, TypeVar

from django.conf import settings

from orchestration.api.serializers import work_item_json
from orchestration.forms.branches import protected_globs
from orchestration.models import AttemptKind, Worker, WorkItem, WorkItemType
from orchestration.registry import RuntimeInfo
from orchestration.services.costs import cost_cap_remaining, usd_text
from workers import github_app


@dataclasses.dataclass(frozen=True)
class ContainerState:
    """What a runtime knows of one container."""

    id: str
    status: str  # created | running | exited | dead | …
    exit_code: int | None = None
    oom_killed: bool = False
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    # How long a finished container ran, by the runtime's own clock (None: not known).
    ran_seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("exited", "dead")


# A workspace with less than this left is full: the agent is writing against its limit.
WORKSPACE_FULL_SLACK_BYTES = 1024 * 1024
# The label naming the node whose worker started a container: only that node reconciles it.
LABEL_NODE = "whim.node"


@dataclasses.dataclass(frozen=True)
class DiskUsage:
    """A running container's /workspace: its size and what is still free, in bytes."""

    size_bytes: int
    free_bytes: int

    @property
    def used_bytes(self) -> int:
        return max(self.size_bytes - self.free_bytes, 0)

    @property
    def full(self) -> bool:
        return self.free_bytes < WORKSPACE_FULL_SLACK_BYTES


class ContainerRuntime(abc.ABC):
    """Starts, stops, inspects and reads the logs of attempts' containers.

    Only ``start`` must be implemented; the rest default to "nothing to do / cannot tell".
    Every method tolerates a container that is already gone.
    """

    name: ClassVar[str]
    isolated: ClassVar[bool] = True
    # False when inspect() cannot see anything (fake): the observer then leaves workers alone.
    observable: ClassVar[bool] = True
    # Whether one start message may carry several attempts (started and marked in one
    # transaction). A container start takes about half a second, so each gets its own
    # message and a node's worker processes start them side by side.
    starts_in_batches: ClassVar[bool] = False

    @abc.abstractmethod
    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        """Start (or adopt) the attempt's container and return its id. Must be idempotent."""

    def stop(self, *, container_id: str, grace_seconds: int = 10) -> None:  # noqa: B027
        """Stop the container (SIGTERM, then SIGKILL after the grace period)."""

    def kill(self, *, container_id: str) -> None:  # noqa: B027
        """Kill the container at once."""

    def remove(self, *, container_id: str) -> None:  # noqa: B027
        """Remove a stopped container and its anonymous volumes."""

    def inspect(self, *, container_id: str) -> ContainerState | None:
        """The container's state, or None when it does not exist."""
        return None

    def list_labelled(self) -> list[ContainerState]:
        """Every container of this Whim instance (by label), in any state."""
        return []

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        """The last ``lines`` of output (bounded in bytes), or None when it cannot tell."""
        return None

    def workspace_usage(self, *, container_id: str) -> DiskUsage | None:
        """How full a running container's /workspace is, or None when it cannot tell."""
        return None

    def revive(self) -> int:
        """For a runtime whose "containers" cannot be observed: start again the runs that were
        lost (the containers sweep calls it); returns how many. Observable runtimes: 0."""
        return 0

    @classmethod
    def usable(cls) -> bool:
        """Whether this runtime can run here now (``WHIM_RUNTIME=auto`` picks the first)."""
        return True


_REGISTRY: dict[str, type[ContainerRuntime]] = {}
R = TypeVar("R", bound=type[ContainerRuntime])


def register(name: str) -> Callable[[R], R]:
    """Class decorator: make the runtime selectable as ``WHIM_RUNTIME=<name>``."""

    def wrap(cls: R) -> R:
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_runtime(name: str | None = None) -> ContainerRuntime:
    """The configured runtime (WHIM_RUNTIME; ``auto`` resolves once per process), one instance
    per process (a Docker client and its connection pool are reused, never shared over fork)."""
    key = resolved_runtime_name(name or settings.WHIM_RUNTIME)
    if key not in _REGISTRY:
        raise LookupError(f"unknown runtime {key!r}; known: {', '.join(available())}")
    return _instance(key, os.getpid())


@functools.cache
def _instance(key: str, pid: int) -> ContainerRuntime:
    return _REGISTRY[key]()


def runtime_info() -> RuntimeInfo:
    """The configured runtime's name and whether it isolates, without contacting it."""
    key = resolved_runtime_name(settings.WHIM_RUNTIME)
    cls = _REGISTRY.get(key)
    return {"name": key, "isolated": bool(cls and getattr(cls, "isolated", False))}


# ``WHIM_RUNTIME=auto``: the first of these that is registered and usable (local always is).
AUTO_ORDER = ("docker", "local")


@functools.cache
def _auto_runtime() -> str:
    for name in AUTO_ORDER:
        cls = _REGISTRY.get(name)
        if cls is not None and cls.usable():
            return name
    return "local"


def resolved_runtime_name(name: str) -> str:
    return _auto_runtime() if name == "auto" else name


def worker_environment(
    *, worker: Worker, work_item: WorkItem, token: str, callback_base: str
) -> dict[str, str]:
    """Everything a container (or local process) gets — and nothing more.

    Never SECRET_KEY, the database or the broker URL: only the job, its callback URL and
    token, the agent's settings, and the credentials named in WHIM_AGENT_ENV.
    """
    env = {
        "WORKER_ID": str(worker.pk),
        "WORKER_TOKEN": token,
        "WORK_ITEM": json.dumps(work_item_json(work_item)),
        "ORCHESTRATOR_URL": f"{callback_base}/w/{token}",
        "WHIM_AGENT": settings.WHIM_AGENT,
        "WHIM_GIT_BASE_URL": settings.WHIM_GIT_BASE_URL,
        "HEARTBEAT_INTERVAL": str(settings.HEARTBEAT_INTERVAL),
        "LOCK_WAIT_SECONDS": str(settings.LOCK_WAIT_SECONDS),
    }
    if settings.WHIM_AGENT_COMMAND:
        env["WHIM_AGENT_COMMAND"] = settings.WHIM_AGENT_COMMAND
    if settings.GITHUB_API_URL:
        env["GITHUB_API_URL"] = settings.GITHUB_API_URL
    for name in settings.WHIM_AGENT_ENV:
        value = os.environ.get(name)
        if value and name not in FORBIDDEN_ENV:
            env[name] = value
    # After the pass-through, so WHIM_AGENT_ENV cannot hand the harness a laxer policy, a
    # larger cost cap or another key than the settings say.
    for name in PIPELINE_ENV:
        env.pop(name, None)
    env.update(pipeline_environment(work_item))
    env["WHIM_PROTECTED_BRANCHES"] = ",".join(protected_globs())
    # The harness's mode follows the item, never a passed-through variable.
    env.pop("WORKER_MODE", None)
    env.pop("SPEC_TIMEOUT", None)
    if worker.kind == AttemptKind.SPEC:  # it writes the spec of a ``generating`` item
        env["WORKER_MODE"] = "spec"
        env["SPEC_TIMEOUT"] = str(settings.SPEC_TIMEOUT)
    elif work_item.type == WorkItemType.VERIFICATION:
        env["WORKER_MODE"] = "verification"
    elif work_item.type == WorkItemType.REVIEW:
        env["WORKER_MODE"] = "review"
    if github_app.app_configured() and not settings.WHIM_GIT_BASE_URL.startswith("file://"):
        # A token for this repository and this attempt, not the shared GITHUB_TOKEN; the
        # harness revokes it when the attempt ends. Only an attempt that pushes and opens the
        # pull request may write: a spec, review or verification attempt reads the repository
        # (the orchestrator posts what it reports), and a spec's agent reads an issue anyone
        # may have written, so its token can do nothing else.
        env["GITHUB_TOKEN"] = github_app.installation_token(
            work_item.repo,
            permissions=None if env.get("WORKER_MODE") is None else {"contents": "read"},
        )
        env["WHIM_GITHUB_TOKEN_REVOCABLE"] = "1"  # noqa: S105  (a flag, not a secret)
    return env


# What pipeline_environment decides, whatever WHIM_AGENT_ENV passes through.
PIPELINE_ENV = (
    "AGENT_IDLE_TIMEOUT",
    "TEST_TIMEOUT",
    "FIX_ITERATIONS",
    "WHIM_REVIEWER",
    "AI_REVIEW_MODEL",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "WHIM_COST_CAP_USD",
    "WHIM_TOKEN_PRICES",
)


def pipeline_environment(work_item: WorkItem) -> dict[str, str]:
    """The harness's pipeline knobs, the agents' keys (set ones only: the agent CLIs need
    them; the harness keeps them out of its log), and ``WHIM_COST_CAP_USD``: what this
    attempt may still spend (the item's cap - its cost so far), absent when it has no cap."""
    env = {
        "AGENT_IDLE_TIMEOUT": str(settings.AGENT_IDLE_TIMEOUT),
        "TEST_TIMEOUT": str(settings.TEST_TIMEOUT),
        "FIX_ITERATIONS": str(settings.FIX_ITERATIONS),
        "WHIM_REVIEWER": settings.WHIM_REVIEWER,
        "AI_REVIEW_MODEL": settings.AI_REVIEW_MODEL,
        "WHIM_TOKEN_PRICES": (
            f"{settings.TOKEN_PRICE_IN_PER_MILLION},{settings.TOKEN_PRICE_OUT_PER_MILLION}"
        ),
    }
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        if getattr(settings, name):
            env[name] = getattr(settings, name)
    remaining = cost_cap_remaining(work_item)
    if remaining is not None:
        env["WHIM_COST_CAP_USD"] = usd_text(remaining)
    return env


# Never handed to a worker, whatever WHIM_AGENT_ENV says.
FORBIDDEN_ENV = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "API_KEY",
        "CELERY_BROKER_URL",
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_APP_PRIVATE_KEY",
        "GITHUB_APP_PRIVATE_KEY_FILE",
    }
)

# What a container gets on its stdin, never in its configuration, which the Docker API shows
# (``docker inspect``) to whoever may use it: the callback credential and the agents' keys.
# Every WHIM_AGENT_ENV pass-through goes this way too (credentials, by what they are for).
SECRET_ENV = frozenset(
    {"WORKER_TOKEN", "ORCHESTRATOR_URL", "GITHUB_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"}
)


# Set in a container's environment: its secrets come on stdin (``harness.supervisor``).
SECRETS_ON_STDIN = "WHIM_SECRETS_ON_STDIN"


def split_secrets(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``env`` as what a container's configuration may show, and its secrets."""
    secret = SECRET_ENV | set(settings.WHIM_AGENT_ENV)
    public = {name: value for name, value in env.items() if name not in secret}
    return public, {name: value for name, value in env.items() if name in secret}
