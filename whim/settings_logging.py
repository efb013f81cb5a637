"""Logging settings: structured enough to grep, never a secret. Star-imported by
``whim.settings``; each variable is in README.md's configuration table with its default.

Every line goes through the redacting filter and gets the current request id
(``orchestration.logfilters``); ``LOG_FORMAT=json`` writes one JSON object a line.
"""

from __future__ import annotations

import environ

env = environ.FileAwareEnv()

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# plain: "time LEVEL logger [request-id] message"; json: one JSON object a line.
# Anything else is refused at startup (orchestration.checks); until then it logs plain.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "orchestration.logfilters.PlainFormatter"},
        "json": {"()": "orchestration.logfilters.JsonFormatter"},
    },
    "filters": {
        "redact": {"()": "orchestration.logfilters.RedactWorkerTokens"},
        "request_id": {"()": "orchestration.logfilters.RequestIdFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["redact", "request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (its DEBUG console) would bypass the redacting filter.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        # Celery logs every task received and finished, and every beat send, at INFO: with
        # ticks every few seconds that buries what matters. Whim's own loggers say what a task
        # did (claims, sweeps that changed something); LOG_LEVEL=DEBUG shows Celery's too.
        **{
            name: {"level": "DEBUG" if LOG_LEVEL.upper() == "DEBUG" else "WARNING"}
            for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat")
        },
    },
}
