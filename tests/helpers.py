"""The tests' one toolbox: the API error shape, polling, the retry policy, logged-in clients
and the messages services send.

Fixtures built on these (``retry_policy``, ``user_client``, ``staff_client`` …) live in
``tests/conftest.py``; this module holds the plain functions and constants they use, so a test
module can import them like any helper.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any
from unittest import mock

import pytest
from django.test import Client

# The retry policy most state-machine tests run under (the ``retry_policy`` fixture): three
# retries, waiting 60 s, 5 min, then 30 min. Tests assert backoffs against these numbers.
MAX_RETRIES = 3
RETRY_DELAYS = (60, 300, 1800)

# The people the console and the web form meet (fixtures ``user``, ``staff``, ``viewer``).
USER_NAME, USER_PASSWORD = "ada", "correct horse"
STAFF_NAME, STAFF_PASSWORD = "grace", "pw-123456"
VIEWER_NAME, VIEWER_PASSWORD = "edsger", "pw-viewer-1"

ERROR_KEYS = {"error", "code", "details"}


def assert_error(
    resp: Any,
    status: int,
    code: str,
    *,
    details: Mapping[str, Any] | Collection[str] | None = None,
) -> dict[str, Any]:
    """Check API.md's error shape and return the body.

    The status, a JSON content type, ``{error: sentence, code, details?}`` and nothing else,
    ``details`` an object when present. ``details``, when given, is either the whole expected
    object (a mapping) or the field names it must at least name (any other collection).
    """
    assert resp.status_code == status, resp.content
    assert resp["Content-Type"].startswith("application/json"), resp["Content-Type"]
    body: dict[str, Any] = resp.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"], body
    assert set(body) <= ERROR_KEYS, body
    if "details" in body:
        assert isinstance(body["details"], dict), body
    if isinstance(details, Mapping):
        assert body.get("details") == dict(details), body
    elif details is not None:
        assert set(details) <= set(body.get("details", {})), body
    return body


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll until ``predicate()`` is truthy (and return it); fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def set_retry_policy(settings: Any) -> None:
    """Apply the tests' retry policy (``MAX_RETRIES``, ``RETRY_DELAYS``) to ``settings``."""
    settings.MAX_RETRIES = MAX_RETRIES
    settings.RETRY_DELAYS = list(RETRY_DELAYS)


def give_role(user: Any, role: str) -> Any:
    """Put ``user`` in the group of ``role`` (viewer, operator, admin: orchestration.roles),
    which the data migration made; returns the user, reloaded so its permissions are fresh."""
    from django.contrib.auth.models import Group  # needs the app registry, ready by now

    user.groups.add(Group.objects.get(name=role))
    return type(user).objects.get(pk=user.pk)


def logged_in_client(user: Any = None, *, enforce_csrf_checks: bool = False) -> Client:
    """A fresh test client, logged in as ``user`` (anonymous when None)."""
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    if user is not None:
        client.force_login(user)
    return client


@contextlib.contextmanager
def task_mocks(*names: str) -> Iterator[dict[str, mock.MagicMock]]:
    """Record the messages services send to the tasks ``names`` (one mock each, called with
    the message's arguments) instead of sending them; other messages are dropped. Services
    enqueue by task name through ``orchestration.nudge``, so this is the one place to catch
    them. Each mock's ``queues`` lists the queue each message was sent to (None: the
    default queue; ``whim.node.<name>``: a node's own)."""
    mocks = {name: mock.MagicMock(name=name) for name in names}
    for each in mocks.values():
        each.queues = []

    def record(name: str, *args: str, queue: str | None = None) -> None:
        if name in mocks:
            mocks[name].queues.append(queue)
            mocks[name](*args)

    with mock.patch("orchestration.nudge.send", side_effect=record):
        yield mocks
