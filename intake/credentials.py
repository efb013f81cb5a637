"""GitHub credentials: the App's own JWT, installation tokens minted per repository, and the
token the GitHub loop's client sends (an App token cached until shortly before it expires,
else ``GITHUB_TOKEN``).

The steps for an App (GitHub's documented flow): a JWT signed with the App's key (RS256,
``iss`` = the App id, at most ten minutes) finds the repository's installation, then asks that
installation for a token limited to that repository and the permissions named. The private key
never leaves this process. ``workers.github_app`` mints per-attempt tokens through the same
functions (uncached: each attempt's token is revoked when it ends).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
from django.conf import settings

API_VERSION = "2022-11-28"
# What the GitHub loop's client asks for: labels and comments (issues), reviews
# (pull_requests), check runs (checks), and reading code (contents).
LOOP_PERMISSIONS = {
    "issues": "write",
    "pull_requests": "write",
    "checks": "write",
    "contents": "read",
}
# A cached token is dropped this long before GitHub ends it (a request in flight must not
# carry one that expires on the way).
EXPIRY_MARGIN = dt.timedelta(minutes=5)


class GitHubAppError(RuntimeError):
    """The App could not mint a token for the repository (the message says why).

    ``permanent``: GitHub refused (the App is not installed on the repository, or lacks the
    access): retrying will not help. Otherwise (no answer, a 5xx) it may pass.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def api_base() -> str:
    """GITHUB_API_URL without its trailing slash (GitHub's own API when unset)."""
    return (settings.GITHUB_API_URL or "https://api.github.com").rstrip("/")


def app_configured() -> bool:
    return bool(settings.GITHUB_APP_ID and settings.GITHUB_APP_PRIVATE_KEY)


def app_jwt(*, now: float | None = None) -> str:
    """The App's own credential: RS256, issued a minute ago (clock drift), for nine minutes."""
    issued = int(now if now is not None else time.time()) - 60
    claims = {"iat": issued, "exp": issued + 600, "iss": str(settings.GITHUB_APP_ID)}
    return jwt.encode(claims, settings.GITHUB_APP_PRIVATE_KEY, algorithm="RS256")


def installation_token_mint(repo: str, *, permissions: dict[str, str]) -> tuple[str, dt.datetime]:
    """A new token for ``repo`` (``owner/name``) alone, and when GitHub ends it."""
    owner, name = repo.split("/", 1)
    bearer = app_jwt()
    installation = app_call("GET", f"/repos/{owner}/{name}/installation", bearer)
    body = {"repositories": [name], "permissions": permissions}
    minted = app_call(
        "POST", f"/app/installations/{installation['id']}/access_tokens", bearer, body
    )
    token = minted.get("token")
    if not isinstance(token, str) or not token:
        raise GitHubAppError("GitHub answered without a token")
    return token, _expiry(minted.get("expires_at"))


def _expiry(value: Any) -> dt.datetime:
    """GitHub's ``expires_at``; an hour from now (its documented maximum) when unreadable."""
    fallback = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    if not isinstance(value, str):
        return fallback
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return fallback
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


_cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, dt.datetime]] = {}
_cache_lock = threading.Lock()


def loop_token(repo: str, *, permissions: dict[str, str] | None = None) -> str:
    """The token the GitHub loop sends for ``repo``: the App's installation token (minted per
    repository and permissions, reused until ``expires_at`` - 5 minutes), else GITHUB_TOKEN.
    "" when neither is configured."""
    if not app_configured():
        return str(settings.GITHUB_TOKEN or "")
    key = (repo.lower(), tuple(sorted((permissions or LOOP_PERMISSIONS).items())))
    now = dt.datetime.now(dt.UTC)
    with _cache_lock:
        cached = _cache.get(key)
        if cached and cached[1] - EXPIRY_MARGIN > now:
            return cached[0]
    token, expires = installation_token_mint(repo, permissions=dict(key[1]))
    with _cache_lock:
        _cache[key] = (token, expires)
    return token


def loop_token_forget(token: str) -> None:
    """Drop a cached token GitHub refused (revoked, or the App's access changed)."""
    with _cache_lock:
        for key in [k for k, (cached, _) in _cache.items() if cached == token]:
            del _cache[key]


def loop_tokens_clear() -> None:
    """Forget every cached token (tests; a rotated App key)."""
    with _cache_lock:
        _cache.clear()


def app_call(method: str, path: str, bearer: str, body: dict[str, Any] | None = None) -> Any:
    """One call to GitHub's App endpoints; errors say which call and status, never a token."""
    base = api_base()
    if not base.startswith(("https://", "http://")):
        raise GitHubAppError("GITHUB_API_URL must be an http(s) URL", permanent=True)
    request = urllib.request.Request(  # noqa: S310  (http(s) only, checked above)
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {bearer}",
            "X-GitHub-Api-Version": API_VERSION,
            "Content-Type": "application/json",
            "User-Agent": "whim",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise GitHubAppError(
            f"GitHub App: {method} {path} answered {exc.code} (is the App installed on the "
            "repository, with the access Whim needs?)",
            permanent=exc.code < 500,
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
        raise GitHubAppError(f"GitHub App: {method} {path} failed: {exc}") from None
