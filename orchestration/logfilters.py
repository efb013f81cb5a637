"""Logging filters: no secret reaches a log line — not a worker token in a request path (with or
without its trailing slash), an ``Authorization`` or ``X-API-Key`` value, a ``?token=``-style
query parameter, nor any of these inside a traceback.

``RedactWorkerTokens`` is on Django's console handler (``settings.LOGGING``); gunicorn's own
loggers (its access log and error log) get it from ``redact_server_logs``, which ``whim.wsgi``
calls when gunicorn loads the app.

``RequestIdFilter`` puts the current request id (``orchestration.requestid``) on every record
as ``request_id``; ``PlainFormatter`` shows it in a line when there is one, and
``JsonFormatter`` (``LOG_FORMAT=json``) writes one JSON object a line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

from orchestration import requestid

MARK = "***"
_STOP = r"\s\"'<>,;"  # where a secret in a log line ends, besides its own delimiters
# A header's value; a lone "-" is how gunicorn's access log says the header was not sent.
_VALUE = rf"(?!-(?:[{_STOP}]|$))[^{_STOP}&]+"
_RULES = [
    # /w/<token>/… and /w/<token> (Django's "Not Found: /w/<token>"), //-doubled slashes too.
    (re.compile(rf"(/w/+)[^/?#{_STOP}]+", re.IGNORECASE), rf"\g<1>{MARK}"),
    # Authorization: Bearer <key>, Authorization: <scheme> <value>, 'HTTP_AUTHORIZATION': '…'
    (
        re.compile(rf"(authorization['\"]?\s*[:=]\s*['\"]?(?:[A-Za-z]+ +)?){_VALUE}", re.I),
        rf"\g<1>{MARK}",
    ),
    (re.compile(rf"(\bbearer +)[^{_STOP}]+", re.IGNORECASE), rf"\g<1>{MARK}"),
    # X-API-Key: <key>, x_api_key=<key>, 'HTTP_X_API_KEY': '<key>'
    (re.compile(rf"(x[-_]api[-_]key['\"]?\s*[:=]\s*['\"]?){_VALUE}", re.I), rf"\g<1>{MARK}"),
    # ?token=…, &api_key=…, ?access_token=…, ?key=…, ?secret=…, ?password=…
    (
        re.compile(
            rf"([?&](?:[a-z_]*token|api_?key|key|secret|password)=)[^&#{_STOP}]+", re.IGNORECASE
        ),
        rf"\g<1>{MARK}",
    ),
]
# Loggers that write outside settings.LOGGING's handlers: gunicorn's access and error logs.
SERVER_LOGGERS = ("gunicorn.access", "gunicorn.error")


def redact(text: str) -> str:
    """``text`` with every secret the rules know replaced by ``***``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactWorkerTokens(logging.Filter):
    """Rewrites the formatted message (and a traceback's text) of a record with ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatted once here; handlers' formatters reuse exc_text instead of formatting it.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_server_logs() -> None:
    """Put the filter on gunicorn's loggers (once): its access log writes each request line,
    ``/w/<token>/…`` included, through handlers of its own."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactWorkerTokens) for f in logger.filters):
            logger.addFilter(RedactWorkerTokens())


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the request's (or its task's) id, "" outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = requestid.current()
        return True


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger message``, with ``[request-id]`` before the message in a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(rid)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", "")
        record.rid = f"[{rid}] " if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``requestId`` when there is one, ``exception`` (the traceback's text) when there is one.
    The message is the one the redacting filter already rewrote."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid := getattr(record, "request_id", ""):
            entry["requestId"] = rid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)
