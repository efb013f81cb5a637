"""Line-by-line logging to stdout with a prefix, and masking of every known secret.

Secrets (the worker token, the GitHub token and the forms they take in headers and URLs) are
registered once at startup; every line logged and every error sent to the orchestrator goes
through ``mask`` first, so a git error that echoes a URL cannot leak a token.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

MASK = "***"

_secrets: set[str] = set()
_lock = threading.Lock()
_write_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Remember a secret so it is masked from now on (short values are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class Logger:
    """Writes ``<prefix> <message>`` lines to stdout, masked and flushed at once."""

    def __init__(self, prefix: str = "[whim-harness]", stream: TextIO | None = None) -> None:
        self.prefix = prefix
        self.stream = stream

    def __call__(self, message: str) -> None:
        stream = self.stream or sys.stdout
        lines = mask(message).splitlines() or [""]
        with _write_lock:
            for line in lines:
                stream.write(f"{self.prefix} {line}\n")
            stream.flush()

    def child(self, prefix: str) -> Logger:
        return Logger(prefix, self.stream)


log = Logger()
