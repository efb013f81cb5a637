"""The points where the container runtime plugs into the core.

``orchestration`` never imports ``workers`` (DESIGN.md §10): the ``workers`` app registers
its parts here from its AppConfig's ``ready()`` — the container sweep, and the runtime
provider that status pages, system checks and log views ask. The core asks the registry and
works (with nothing to show) when no runtime is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypedDict

from django.conf import settings

from orchestration.models import Worker, WorkItemEvent
from orchestration.text import strip_ansi

KEPT_ON_ROW = "kept on the worker row"

SweepFn = Callable[[], dict[str, int]]
# Told every event that moves an item, inside the transaction that moved it: it may write rows
# (an outbox), never call out; raising rolls the move back.
ItemMovedHook = Callable[[WorkItemEvent], None]


class RuntimeInfo(TypedDict):
    """The configured runtime's name and whether it isolates agents in containers."""

    name: str
    isolated: bool


class RuntimeProvider(Protocol):
    """What the core may ask of the runtime without knowing which one it is."""

    def info(self) -> RuntimeInfo:
        """The configured runtime, without contacting it."""
        ...

    def available(self) -> list[str]:
        """The runtime names this installation can use."""
        ...

    def worker_logs(self, worker: Worker, *, lines: int) -> tuple[list[str], str]:
        """The attempt's last ``lines`` of output (ANSI stripped) and where they came from."""
        ...


class _NoRuntime:
    """The provider until one registers: nothing runs, so nothing to show but the row."""

    def info(self) -> RuntimeInfo:
        return {"name": "none", "isolated": False}

    def available(self) -> list[str]:
        return []

    def worker_logs(self, worker: Worker, *, lines: int) -> tuple[list[str], str]:
        return [strip_ansi(ln) for ln in worker.log_tail.splitlines()[-lines:]], KEPT_ON_ROW


class GitHubCredentials(Protocol):
    """A token that reads one repository on GitHub (the runtime's GitHub App, when set up)."""

    def available(self) -> bool: ...

    def token(self, repo: str) -> str: ...


_sweeps: dict[str, SweepFn] = {}
_github: list[GitHubCredentials] = []
_runtime: list[RuntimeProvider] = [_NoRuntime()]
_item_moved: dict[str, ItemMovedHook] = {}


def sweep_register(name: str, sweep: SweepFn) -> None:
    """Add (or replace) a supervision sweep; beat runs it every ``SWEEP_PERIODS[name]``."""
    _sweeps[name] = sweep


def sweeps() -> dict[str, SweepFn]:
    """Every registered sweep by name, in registration order."""
    return dict(_sweeps)


def runtime_register(provider: RuntimeProvider) -> None:
    _runtime[0] = provider


def runtime() -> RuntimeProvider:
    return _runtime[0]


def github_credentials_register(credentials: GitHubCredentials) -> None:
    _github[:] = [credentials]


def github_token(repo: str) -> str:
    """A token to read ``repo`` on GitHub: one the runtime mints for it (a GitHub App), else
    ``GITHUB_TOKEN``; "" when there is neither."""
    for credentials in _github:
        if credentials.available():
            return credentials.token(repo)
    return str(settings.GITHUB_TOKEN)


def github_readable() -> bool:
    """Whether ``github_token`` can give a token at all."""
    return any(c.available() for c in _github) or bool(settings.GITHUB_TOKEN)


def item_moved_register(name: str, hook: ItemMovedHook) -> None:
    """Add (or replace, by name) a hook told every event that moves an item."""
    _item_moved[name] = hook


def item_moved_hooks() -> list[ItemMovedHook]:
    return list(_item_moved.values())
