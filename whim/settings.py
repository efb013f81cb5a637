"""Whim settings: one module, read through django-environ.

Every variable is in README.md's configuration table with its default; limits and timings are
checked at startup (``orchestration.checks``); secrets may come from ``NAME_FILE`` instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import environ
from django.utils.functional import SimpleLazyObject

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(environ.Env().str("WHIM_RUN_DIR", default=str(BASE_DIR / ".run")))

env = environ.FileAwareEnv()


def _embedded_secret_key() -> str:
    """A per-checkout secret for single-machine mode, kept in .run/secret_key: made on first
    use (or by ``manage.py whim_setup``), never at import, so reading the settings (mypy,
    ``manage.py check``) writes nothing."""
    path = RUN_DIR / "secret_key"
    if not path.exists():
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once agree on the one file the first one made.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


# --- Django core --------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY: Any = env.str("SECRET_KEY", default="") or SimpleLazyObject(_embedded_secret_key)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "orchestration",
    "workers",
    "reviews",
    "intake",
]

MIDDLEWARE = [
    "orchestration.api.middleware.RequestIdMiddleware",
    "orchestration.api.middleware.CallbackListenerMiddleware",
    # Worker callbacks leave here for a chain of their own (the API guards, then the view).
    "orchestration.api.middleware.WorkerCallbackMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whim.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "orchestration.api.middleware.ApiErrorMiddleware",
    "orchestration.api.middleware.UndecodableInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "whim.urls"
WSGI_APPLICATION = "whim.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orchestration.context_processors.runtime",
                "orchestration.context_processors.role",
            ],
        },
    },
]

# --- Database: PostgreSQL when DATABASE_URL is set, else the embedded SQLite ---
EMBEDDED_DATABASE = not env.str("DATABASE_URL", default="")
# Folders the embedded stack needs; made when the app starts (orchestration.apps), not here.
RUN_DIRECTORIES: list[Path] = []
if EMBEDDED_DATABASE:
    RUN_DIRECTORIES.append(RUN_DIR)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(RUN_DIR / "whim.sqlite3"),
            # IMMEDIATE makes every transaction take the write lock up front, which is how the
            # claim stays single-writer on SQLite (it has no SELECT … FOR UPDATE).
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
        }
    }
else:
    _db: dict[str, Any] = dict(env.db_url("DATABASE_URL"))
    _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
    _db["OPTIONS"] = {
        **_db.get("OPTIONS", {}),
        "connect_timeout": env.int("DB_CONNECT_TIMEOUT", default=5),
    }
    if env.str("DATABASE_TEST_NAME", default=""):
        _db["TEST"] = {"NAME": env.str("DATABASE_TEST_NAME")}
    DATABASES = {"default": _db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = RUN_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# The console's own login: any active user (the admin's login admits staff only).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Login throttling (console and admin logins; orchestration.services.logins): this many
# failures for one username, or from one address, within the window lock that name or address
# out for LOGIN_LOCKOUT_SECONDS. 0 switches a limit off.
LOGIN_FAILURES_PER_USER = env.int("LOGIN_FAILURES_PER_USER", default=5)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=900)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=900)
# Behind a reverse proxy every login comes from the proxy's address: name the header in which
# the proxy puts the client's (e.g. X-Real-IP or X-Forwarded-For, whose last entry is used).
LOGIN_ADDRESS_HEADER = env.str("LOGIN_ADDRESS_HEADER", default="")

# Request bodies over 1 MB are refused with 413 (API.md).
MAX_REQUEST_BYTES = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

# --- Celery: Redis when REDIS_URL is set, else a filesystem broker (no server) ---
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED_BROKER = not REDIS_URL
if EMBEDDED_BROKER:
    _broker_dir = RUN_DIR / "broker"
    RUN_DIRECTORIES.append(_broker_dir)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_URL = REDIS_URL
    # A message whose worker died unacknowledged is handed out again after this long.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("BROKER_VISIBILITY_TIMEOUT", default=3600),
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="whim")
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "whim.scheduler:WhimScheduler"

# --- Whim: limits and behaviour (Whim's names and defaults) --------------------
MAX_WORKERS = env.int("MAX_WORKERS", default=2)
DAILY_BUDGET = env.int("DAILY_BUDGET", default=200)
COOLDOWN_SECONDS = env.int("COOLDOWN_SECONDS", default=60)
STALE_THRESHOLD = env.int("STALE_THRESHOLD", default=300)
LOOP_INTERVAL = env.float("LOOP_INTERVAL", default=5.0)
MAX_RETRIES = env.int("MAX_RETRIES", default=3)
RETRY_DELAYS = env.list("RETRY_DELAYS", cast=int, default=[60, 300, 1800])
VERIFICATION_MAX_RETRIES = env.int("VERIFICATION_MAX_RETRIES", default=3)  # no backoff
MAX_QUEUED = env.int("MAX_QUEUED", default=1000)
MAX_QUEUED_PER_REPO = env.int("MAX_QUEUED_PER_REPO", default=100)
# Branches no submit may name and no harness pushes to (fnmatch globs, matched regardless of
# case); the harness also refuses the repository's own default branch, whatever this says.
WHIM_PROTECTED_BRANCHES = env.list(
    "WHIM_PROTECTED_BRANCHES", default=["main", "master", "develop", "trunk", "release/*", "HEAD"]
)
WHIM_TIMEZONE = env.str("WHIM_TIMEZONE", default="UTC")
ASSIGNED_TIMEOUT = env.int("ASSIGNED_TIMEOUT", default=300)
HEARTBEAT_GRACE = env.int("HEARTBEAT_GRACE", default=30)
PROGRESS_TIMEOUT = env.int("PROGRESS_TIMEOUT", default=1800)
QUARANTINE_AFTER = env.int("QUARANTINE_AFTER", default=3)
RETENTION_DAYS = env.int("RETENTION_DAYS", default=30)
LOG_RETENTION_DAYS = env.int("LOG_RETENTION_DAYS", default=7)
START_RENUDGE_SECONDS = env.int("START_RENUDGE_SECONDS", default=30)
LOCK_TTL = env.int("LOCK_TTL", default=600)
# docker | local | fake; "auto" picks docker when a Docker engine answers, else local.
WHIM_RUNTIME = env.str("WHIM_RUNTIME", default="auto")
PORT = env.int("PORT", default=8000)
FLOWER_PORT = env.int("FLOWER_PORT", default=5555)
FLOWER_URL = env.str("FLOWER_URL", default=f"http://127.0.0.1:{FLOWER_PORT}/")
WHIM_INSTANCE = env.str("WHIM_INSTANCE", default="default")

# --- Workers: the container each attempt runs in -------------------------------
WORKER_IMAGE = env.str("WORKER_IMAGE", default="whim-worker:latest")
# Each instance has its own worker network (inter-container traffic off; network policy).
WHIM_DOCKER_NETWORK = env.str("WHIM_DOCKER_NETWORK", default=f"whim-{WHIM_INSTANCE}")
WHIM_DOCKER_RUNTIME = env.str("WHIM_DOCKER_RUNTIME", default="")  # e.g. runsc (gVisor)
DOCKER_TIMEOUT = env.int("DOCKER_TIMEOUT", default=30)
# The container's memory holds the agent (about 3.5g) and its tmpfs mounts: /workspace
# (WORKER_WORKSPACE_SIZE, 2g) and /tmp (WORKER_TMPFS_SIZE, 512m) are counted against it.
WORKER_MEMORY = env.str("WORKER_MEMORY", default="6g")
WORKER_CPUS = env.float("WORKER_CPUS", default=2.0)
WORKER_PIDS = env.int("WORKER_PIDS", default=256)
WORKER_TMPFS_SIZE = env.str("WORKER_TMPFS_SIZE", default="512m")
WORKER_TIMEOUT = env.int("WORKER_TIMEOUT", default=3600)
WHIM_CALLBACK_URL = env.str("WHIM_CALLBACK_URL", default="")

# --- Workers: network policy (workers/firewall.py; README "Security model") -----
# The callback listener: the only port containers reach on this host; it serves /w/… only.
WHIM_CALLBACK_PORT = env.int("WHIM_CALLBACK_PORT", default=PORT + 1)
# What a container may reach beyond the callback listener: none | allowlist | open.
WORKER_EGRESS = env.str("WORKER_EGRESS", default="allowlist")
# allowlist mode: host names (resolved when the network is set up) or IP addresses/networks.
_EGRESS_ALLOW = (
    "github.com,api.github.com,codeload.github.com,api.anthropic.com,api.openai.com,"
    "pypi.org,files.pythonhosted.org,registry.npmjs.org"
)
WORKER_EGRESS_ALLOW = env.list("WORKER_EGRESS_ALLOW", default=_EGRESS_ALLOW.split(","))
WHIM_AGENT = env.str("WHIM_AGENT", default="mock")
WHIM_AGENT_COMMAND = env.str("WHIM_AGENT_COMMAND", default="")
WHIM_AGENT_PATH_DIR = env.str("WHIM_AGENT_PATH_DIR", default="")  # agent_bin.py: first on PATH
# Names of variables passed through to containers (GitHub credentials; the model keys go by
# their own settings, ANTHROPIC_API_KEY / OPENAI_API_KEY).
WHIM_AGENT_ENV = env.list("WHIM_AGENT_ENV", default=["GITHUB_TOKEN"])
WHIM_GIT_BASE_URL = env.str("WHIM_GIT_BASE_URL", default="https://github.com/")
WHIM_LOCAL_REPOS_DIR = env.str("WHIM_LOCAL_REPOS_DIR", default="")
GITHUB_API_URL = env.str("GITHUB_API_URL", default="")
# A GitHub App (recommended over a shared GITHUB_TOKEN): each attempt gets a token minted for
# its repository alone (workers/github_app.py). The key as PEM text, or GITHUB_APP_PRIVATE_KEY_FILE.
GITHUB_APP_ID = env.str("GITHUB_APP_ID", default="").strip()
GITHUB_APP_PRIVATE_KEY = env.str("GITHUB_APP_PRIVATE_KEY", default="", multiline=True).strip()
HEARTBEAT_INTERVAL = env.float("HEARTBEAT_INTERVAL", default=10.0)
# A running attempt's heartbeats are answered from Redis and written to the database by the
# "beats" sweep (SWEEP_BEATS_EVERY) or its next ending (services/workers/beat_buffer.py).
HEARTBEAT_COALESCE = env.bool("HEARTBEAT_COALESCE", default=True)
LOCK_WAIT_SECONDS = env.int("LOCK_WAIT_SECONDS", default=300)
LOG_TAIL_LINES = env.int("LOG_TAIL_LINES", default=1000)
LOG_TAIL_BYTES = env.int("LOG_TAIL_BYTES", default=1024 * 1024)
# A container that exits non-zero this soon after starting, before registering, is a broken
# image or entrypoint: the item fails at once instead of retrying.
FAST_EXIT_SECONDS = env.float("FAST_EXIT_SECONDS", default=10.0)
# Compared with what a client sends: stripped, since a *_FILE secret usually ends in a newline.
API_KEY = env.str("API_KEY", default="").strip()
# The shared secret of the GitHub review webhook (POST /webhooks/github); unset: refused.
GITHUB_WEBHOOK_SECRET = env.str("GITHUB_WEBHOOK_SECRET", default="").strip()
from whim.settings_github import *  # noqa: E402, F403  (intake, spec generation, review bot)
from whim.settings_nodes import *  # noqa: E402, F403  (the fleet: WHIM_NODE, NODE_*)
from whim.settings_pipeline import *  # noqa: E402, F403  (money limits, the harness's knobs)

# --- Containment bounds (issue 9): what an attempt may claim and consume ----------
# /workspace is a tmpfs of this size (counted against WORKER_MEMORY; check W010 warns when it
# leaves the agent no memory). The container sweep ends an attempt whose workspace is full.
WORKER_WORKSPACE_SIZE = env.str("WORKER_WORKSPACE_SIZE", default="2g")
# Token counts a worker may report: the rise between two reports, and the attempt's total.
MAX_TOKENS_PER_HEARTBEAT = env.int("MAX_TOKENS_PER_HEARTBEAT", default=10_000_000)
MAX_TOKENS_PER_ATTEMPT = env.int("MAX_TOKENS_PER_ATTEMPT", default=2_000_000_000)
# The other counts in `complete`'s metrics (duration in ms; files and tests).
MAX_ATTEMPT_DURATION_MS = env.int("MAX_ATTEMPT_DURATION_MS", default=7 * 24 * 3600 * 1000)
MAX_METRIC_COUNT = env.int("MAX_METRIC_COUNT", default=1_000_000)
# `complete` is checked against the repository: local bare repos with git on this host, or
# GitHub's API with this token (GITHUB_API_URL, default GitHub's). Seconds per check.
GITHUB_TOKEN = env.str("GITHUB_TOKEN", default="").strip()
COMMIT_CHECK_TIMEOUT = env.float("COMMIT_CHECK_TIMEOUT", default=10.0)

EMBEDDED_MODE = EMBEDDED_DATABASE or EMBEDDED_BROKER

# Every supervision sweep and how often beat runs it (seconds; orchestration.registry names the
# sweeps, check W004 says when the two disagree). Each is a beat entry "whim-sweep-<name>".
SWEEP_PERIODS: dict[str, float] = {
    "heartbeats": env.float("SWEEP_HEARTBEATS_EVERY", default=5.0),
    "containers": env.float("SWEEP_CONTAINERS_EVERY", default=LOOP_INTERVAL),
    "stuck": env.float("SWEEP_STUCK_EVERY", default=30.0),
    "nodes": env.float("SWEEP_NODES_EVERY", default=10.0),  # silent nodes marked lost
    "locks": env.float("SWEEP_LOCKS_EVERY", default=60.0),
    "retention": env.float("SWEEP_RETENTION_EVERY", default=3600.0),
    "tallies": env.float("SWEEP_TALLIES_EVERY", default=60.0),  # fold the page counts' deltas
    "beats": env.float("SWEEP_BEATS_EVERY", default=30.0),  # write coalesced heartbeats
    "github": env.float("SWEEP_GITHUB_EVERY", default=30.0),  # the outbox (intake/)
}


def _expires(period: float) -> int:
    """A beat message not taken in two periods is dropped (30 s to an hour): a next one comes."""
    return int(min(max(period * 2, 30), 3600))


CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "whim-dispatch": {
        "task": "orchestration.dispatch",
        "schedule": LOOP_INTERVAL,
        "options": {"expire_seconds": max(LOOP_INTERVAL * 2, 10)},
    },
    **{
        f"whim-sweep-{name}": {
            "task": "orchestration.sweep",
            "schedule": period,
            "args": [name],
            "options": {"expire_seconds": _expires(period)},
        }
        for name, period in SWEEP_PERIODS.items()
    },
    **GITHUB_BEAT_SCHEDULE,  # noqa: F405  (whim.settings_github: the intake poll)
}

# --- HTTPS, cookies and security headers (issue 9) -----------------------------------
# Off by default, so `make run` on plain http://127.0.0.1 works; behind TLS set them all and
# `manage.py check --deploy` is clean (README "Security model").
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Worker callbacks come over the plain-HTTP worker network and health probes from inside the
# host: a redirect to https:// would break both.
SECURE_REDIRECT_EXEMPT = env.list(
    "SECURE_REDIRECT_EXEMPT", default=[r"^w/", r"^api/worker/", r"^health(/ready)?$"]
)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)


def _proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` (or ``X-Forwarded-Proto: https``) as Django's (META key, value):
    the header a TLS-terminating proxy sets, trusted only when set, never by default."""
    name, _, expected = value.partition(":")
    if not name.strip():
        return None
    return "HTTP_" + name.strip().upper().replace("-", "_"), expected.strip() or "https"


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env.str("SECURE_PROXY_SSL_HEADER", default=""))
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env.str("SECURE_REFERRER_POLICY", default="same-origin")
# The console runs on its own static files and htmx: nothing inline, nothing from elsewhere
# (whim.csp). Empty: no header (a proxy in front sets its own).
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default=(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
)

# --- Logging: structured enough to grep, never a secret (LOG_LEVEL, LOG_FORMAT) -----
from whim.settings_logging import *  # noqa: E402, F403
