"""Logging filters: no worker token reaches a log line, even inside a request path."""

from __future__ import annotations

import logging
import re

_TOKEN_IN_PATH = re.compile(r"/w/[^/\s\"']+/")


class RedactWorkerTokens(logging.Filter):
    """Rewrites ``/w/<token>/`` to ``/w/***/`` in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/w/" in message:
            record.msg = _TOKEN_IN_PATH.sub("/w/***/", message)
            record.args = None
        return True
