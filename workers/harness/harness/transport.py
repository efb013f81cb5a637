"""A small JSON-over-HTTP helper with retries, shared by the callback and GitHub clients.

Network errors and 5xx answers are retried with exponential backoff and jitter until a time
budget runs out; 4xx answers are returned to the caller, which decides what they mean.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .logs import Logger, mask

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, "equal jitter"."""
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, or the raw text when it is not JSON

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


class RetriesExhausted(Exception):
    """Every attempt failed with a network error or a 5xx; carries the last reason."""


def request_json(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    retry_for: float,
    timeout: float = 30.0,
    label: str | None = None,
    log: Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """Send one request, retrying network errors and 5xx for up to ``retry_for`` seconds.

    ``label`` is what log lines name the request by (never the URL: it may hold a token).
    """
    # UTF-8, not \u escapes (a body of non-Latin text stays a third the size), and no text
    # the receiver must refuse: agent-written strings may hold NUL or lone surrogates.
    data = json.dumps(_clean(body), ensure_ascii=False).encode() if body is not None else None
    all_headers = {"Accept": "application/json", "User-Agent": "whim-harness"}
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    label = label or method
    deadline = time.monotonic() + retry_for
    attempt = 0
    while True:
        try:
            status, raw = _send(method, url, data, all_headers, timeout)
            if status < 500:
                return Response(status, _parse(raw))
            reason = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as exc:
            # URLError, timeouts, refused and reset connections are all OSErrors.
            reason = mask(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
        delay = backoff_delay(attempt)
        if time.monotonic() + delay > deadline:
            raise RetriesExhausted(f"{label}: {reason} (gave up after {attempt + 1} attempts)")
        if log:
            log(f"{label}: {reason}; retrying in {delay:.1f}s")
        sleep(delay)
        attempt += 1


def _send(
    method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) only, checked in config
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def _parse(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _clean(value: Any) -> Any:
    """``value`` with NUL characters dropped and lone surrogates replaced in every string."""
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
