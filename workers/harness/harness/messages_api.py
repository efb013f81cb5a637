"""The Anthropic Messages API, as the ``anthropic`` reviewer uses it: one request, one answer.

``POST {api_url}/v1/messages`` with the headers ``x-api-key``, ``anthropic-version: 2023-06-01``
and ``content-type: application/json`` and the body ``{model, max_tokens, messages: [{role:
"user", content}]}``; the answer's text is the ``text`` of its ``content`` blocks. The standard
library only (the harness has no SDK). The key goes in its header and nowhere else: redirects are
refused (urllib would carry the header to wherever a redirect points), and the note of a failure
holds the status and the API's error type, never its free-text message.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from typing import Any

ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 4096
API_TIMEOUT = 300.0  # a long diff takes the model a while
MAX_RESPONSE_BYTES = 2 * 1024 * 1024


class ReviewerUnavailable(Exception):
    """The reviewer could not answer; the message is the note (no secret in it)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_opener = urllib.request.build_opener(_NoRedirects)
ERROR_TYPE = re.compile(r"[a-z_]{1,40}")


def messages_ask(prompt: str, *, model: str, api_url: str, api_key: str | None) -> tuple[str, str]:
    """(the answer's text, the model that answered); ``ReviewerUnavailable`` when there is none."""
    if not api_key:
        raise ReviewerUnavailable("ANTHROPIC_API_KEY is not set")
    body = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": prompt}],
    }
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in config
        f"{api_url.rstrip('/')}/v1/messages",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "x-api-key": api_key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
        },
    )
    try:
        with _opener.open(request, timeout=API_TIMEOUT) as response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ReviewerUnavailable(
            f"the Messages API answered {exc.code}{_error_type(exc)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReviewerUnavailable(f"the Messages API could not be reached: {reason}") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise ReviewerUnavailable("the Messages API's answer is too large")
    try:
        message = json.loads(raw)
    except ValueError:
        raise ReviewerUnavailable("the Messages API's answer is not JSON") from None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise ReviewerUnavailable("the Messages API's answer has no content")
    text = "".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    answered_by = message.get("model")
    valid_model = isinstance(answered_by, str) and 0 < len(answered_by) <= 100
    return text, answered_by if valid_model else ""


def _error_type(exc: urllib.error.HTTPError) -> str:
    """`` (rate_limit_error)`` from the API's error body; never its message, which is free text."""
    try:
        body = json.loads(exc.read(64 * 1024))
        kind = body["error"]["type"]
    except Exception:  # any body at all: the status alone is the note
        return ""
    return f" ({kind})" if isinstance(kind, str) and ERROR_TYPE.fullmatch(kind) else ""
