"""Shared fixtures. Queue semantics, locks and limits run on PostgreSQL, never SQLite."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test import Client

from bench import procs as bench_procs
from orchestration.nudge import TaskName
from orchestration.roles import OPERATOR
from orchestration.services.apikeys import apikey_create
from tests.helpers import (
    STAFF_NAME,
    STAFF_PASSWORD,
    USER_NAME,
    USER_PASSWORD,
    VIEWER_NAME,
    VIEWER_PASSWORD,
    give_role,
    logged_in_client,
    set_retry_policy,
    task_mocks,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.docker_stack", "tests.docker_nodes_support", "tests.intake_support"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("DATABASE_URL"):
        raise pytest.UsageError(
            "The tests need PostgreSQL and Redis: run `make test` (it starts both), or set "
            "DATABASE_URL and REDIS_URL."
        )


@pytest.fixture(autouse=True)
def _no_dispatch_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dispatch nudges are coalesced (orchestration.nudge): an earlier test's pending flag
    must not swallow this test's nudge, so each test starts with no run pending. Under
    pytest-xdist (``make test`` runs the in-process tests on every core) each test process
    has a flag of its own: another's must not swallow this one's nudge either."""
    from orchestration import nudge  # after Django is set up

    if xdist_worker := os.environ.get("PYTEST_XDIST_WORKER"):
        key = f"{nudge._pending_key()}:{xdist_worker}"
        monkeypatch.setattr(nudge, "_pending_key", lambda: key)
    nudge.dispatch_pending_clear()


@pytest.fixture(autouse=True)
def _test_limits(settings: Any) -> None:
    """Defaults that keep tests fast; each test overrides what it is about."""
    settings.COOLDOWN_SECONDS = 0
    settings.MAX_WORKERS = 50
    settings.DAILY_BUDGET = 10_000
    settings.WHIM_RUNTIME = "fake"
    # No egress allowlist: resolving its host names would send DNS queries off this machine.
    settings.WORKER_EGRESS = "none"


@pytest.fixture
def retry_policy(settings: Any) -> None:
    """The retry policy state-machine tests assert against (``tests.helpers.RETRY_DELAYS``)."""
    set_retry_policy(settings)


@pytest.fixture
def stop_delay() -> Iterator[mock.MagicMock]:
    """Record "stop this container" nudges instead of sending them to a broker."""
    with task_mocks(TaskName.STOP_CONTAINER) as sent:
        yield sent[TaskName.STOP_CONTAINER]


# --- people and their clients -----------------------------------------------------------------


@pytest.fixture
def user(django_user_model: Any) -> Any:
    """Someone with a login who is not staff, in the operator role: submits work and acts on
    it from the web form and the console, not the admin."""
    created = django_user_model.objects.create_user(USER_NAME, password=USER_PASSWORD)
    return give_role(created, OPERATOR)


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    """An operator: staff (so the admin too, for what the role allows), not superuser."""
    created = django_user_model.objects.create_user(
        STAFF_NAME, password=STAFF_PASSWORD, is_staff=True
    )
    return give_role(created, OPERATOR)


@pytest.fixture
def viewer(django_user_model: Any) -> Any:
    """A logged-in user in no group: the viewer role (reads everything, acts on nothing)."""
    return django_user_model.objects.create_user(VIEWER_NAME, password=VIEWER_PASSWORD)


@pytest.fixture
def superuser(admin_user: Any) -> Any:
    """pytest-django's ``admin`` superuser."""
    return admin_user


@pytest.fixture
def anonymous_client() -> Client:
    return logged_in_client(None)


@pytest.fixture
def user_client(user: Any) -> Client:
    return logged_in_client(user)


@pytest.fixture
def staff_client(staff: Any) -> Client:
    return logged_in_client(staff)


@pytest.fixture
def viewer_client(viewer: Any) -> Client:
    return logged_in_client(viewer)


@pytest.fixture
def superuser_client(superuser: Any) -> Client:
    return logged_in_client(superuser)


@pytest.fixture
def csrf_client(user: Any) -> Client:
    """``user``, with CSRF checks enforced as in production (the test client skips them)."""
    return logged_in_client(user, enforce_csrf_checks=True)


@pytest.fixture
def staff_csrf_client(staff: Any) -> Client:
    """``staff``, with CSRF checks enforced: for the console's own pages."""
    return logged_in_client(staff, enforce_csrf_checks=True)


@pytest.fixture
def api_key(db: None) -> str:
    _, key = apikey_create(name="tests")
    return key


@pytest.fixture
def api(client: Any, api_key: str) -> Any:
    """A Django test client that sends a valid API key."""
    client.defaults["HTTP_X_API_KEY"] = api_key
    return client


class CeleryWorkers:
    """Real ``celery -A whim worker`` processes against the test database and Redis.

    Each test gets its own queue name, so nothing a previous test left in Redis reaches it.
    """

    def __init__(self, env_overrides: dict[str, str]) -> None:
        self.queue = f"whim-test-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started_with: dict[int, dict[str, Any]] = {}  # pid -> start() arguments
        self.killed: set[int] = set()
        self.logs: list[Path] = []
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DATABASE_URL": (
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "CELERY_QUEUE": self.queue,
            # Its own node too (its queue whim.node.<name>): nothing an earlier test left
            # on a node's queue reaches it either.
            "WHIM_NODE": self.queue,
            "COOLDOWN_SECONDS": "0",
            "MAX_WORKERS": "50",
            "DAILY_BUDGET": "10000",
            "WHIM_RUNTIME": "fake",
            "LOG_LEVEL": "INFO",
            **env_overrides,
        }

    def start(
        self, *, concurrency: int = 2, beat: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        name = f"w{len(self.procs)}-{self.queue}@%h"
        log = ROOT / "test-artifacts" / f"{self.queue}-{len(self.procs)}.log"
        log.parent.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "whim",
            "worker",
            "-l",
            "INFO",
            "-Q",
            self.queue,
            "-c",
            str(concurrency),
            "-n",
            name,
            "--without-mingle",
            "--without-gossip",
        ]
        if beat:
            cmd += ["-B", "-s", str(log.with_suffix(".beat"))]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs.append(log)
        self.started_with[proc.pid] = {"concurrency": concurrency, "beat": beat, **env}
        wait_for(
            lambda: b"ready." in log.read_bytes() or proc.poll() is not None,
            timeout=60,
            what="the celery worker to be ready",
        )
        if proc.poll() is not None:
            pytest.fail(f"celery worker exited early:\n{log.read_text()[-3000:]}")
        return proc

    def supervise(self) -> int:
        """Do what the process manager does in production (compose's restart policy,
        `make run`'s supervisor): start again any worker that died on its own. Returns how many
        were restarted."""
        restarted = 0
        for proc in list(self.procs):
            if proc.poll() is not None and proc.pid not in self.killed:
                self.killed.add(proc.pid)  # handled
                self.start(**self.started_with[proc.pid])
                restarted += 1
        return restarted

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children at once (no warm shutdown, no acks)."""
        self.killed.add(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        stop_processes(self.procs)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (each held open until all are chosen, so two calls in a
    row cannot return the same one)."""
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]


def stop_processes(procs: list[subprocess.Popen[bytes]], *, grace: float = 20) -> None:
    """SIGTERM each process group still running, wait, then SIGKILL what is left (the
    benchmarks' own helper: one way to stop what a test or a benchmark started)."""
    bench_procs.stop(procs, grace=grace)


def start_web(*, env: dict[str, str], binds: list[str], log: Path) -> subprocess.Popen[bytes]:
    """gunicorn on ``binds`` (host:port), own process group, output in ``log``; returns once
    it has booted, and fails the test with its log if it exits instead."""
    log.parent.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "gunicorn", "whim.wsgi", "-w", "2", "--graceful-timeout", "5"]
    for bind in binds:
        args += ["-b", bind]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for(
        lambda: b"Booting worker" in log.read_bytes() or proc.poll() is not None,
        timeout=30,
        what="gunicorn to start",
    )
    if proc.poll() is not None:
        pytest.fail(f"gunicorn exited early:\n{log.read_text()[-3000:]}")
    return proc


def _like(current: Any, value: str) -> Any:
    """``value`` (an env string) cast to the type of the setting it overrides (a number for
    an unset optional one, such as NODE_MAX_WORKERS)."""
    if current is None:
        return int(value) if value.lstrip("-").isdigit() else value
    if isinstance(current, list):
        return [type(current[0])(v) if current else v for v in value.split(",")]
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    return type(current)(value)


@pytest.fixture
def celery_workers(transactional_db: None, settings: Any) -> Iterator[Callable[..., CeleryWorkers]]:
    """Factory: ``celery_workers(MAX_WORKERS="3")`` returns a handle to start real workers.

    The test process publishes to the same per-test queue.
    """
    from whim.celery import app

    handles: list[CeleryWorkers] = []
    old_queue = app.conf.task_default_queue

    def make(**env: str) -> CeleryWorkers:
        handle = CeleryWorkers(env)
        app.conf.task_default_queue = handle.queue
        settings.WHIM_NODE = handle.env["WHIM_NODE"]  # a claim here picks the workers' node
        for key, value in env.items():  # this process sees what the workers see
            if hasattr(settings, key):
                setattr(settings, key, _like(getattr(settings, key), value))
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop_all()
    app.conf.task_default_queue = old_queue


@pytest.fixture(scope="session")
def app_keys() -> tuple[str, str]:
    """A GitHub App's RSA key pair as PEM (private, public): the fake GitHub checks the App's
    JWTs with the public one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public
