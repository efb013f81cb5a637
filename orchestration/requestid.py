"""The request id: one per HTTP request (an incoming ``X-Request-ID`` kept when it is sane,
else a new one), answered as ``X-Request-ID``, carried into every Celery task the request
enqueues (a message header, ``nudge.send``), put on log records (``logfilters``) and on the
events recorded while it is current (``data.requestId``).

It lives in a context variable: bound by the middleware for a request, and by the Celery
signal handlers in ``whim.celery`` for a task that arrived with one.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
TASK_HEADER = "whim_request_id"  # the Celery message header (a custom header: request attr)
EVENT_KEY = "requestId"  # in WorkItemEvent.data
# What an incoming id may be: letters, digits and . _ : - (UUIDs, ULIDs, a proxy's hex), at
# most 128 characters — nothing that could split or forge a log line.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_current: contextvars.ContextVar[str] = contextvars.ContextVar("whim_request_id", default="")


def sane(value: object) -> str:
    """``value`` when it is a usable request id, else ""."""
    return value if isinstance(value, str) and _SANE.fullmatch(value) else ""


def new() -> str:
    return uuid.uuid4().hex


def current() -> str:
    """The id bound now ("" outside a request or a task that carried one)."""
    return _current.get()


def bind(value: str) -> contextvars.Token[str]:
    """Make ``value`` current until ``unbind`` with the returned token."""
    return _current.set(value)


def unbind(token: contextvars.Token[str]) -> None:
    _current.reset(token)


@contextmanager
def bound(value: str) -> Iterator[str]:
    token = bind(value)
    try:
        yield value
    finally:
        unbind(token)
