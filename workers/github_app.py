"""Per-attempt GitHub credentials from a GitHub App: one repository, one attempt, one hour.

With ``GITHUB_APP_ID`` and ``GITHUB_APP_PRIVATE_KEY`` set, each container gets an
installation access token minted for its item's repository alone (``repositories: [name]``,
``contents`` and ``pull_requests`` write) instead of a shared ``GITHUB_TOKEN``. GitHub ends
such a token after an hour at most; the harness revokes it itself when the attempt ends
(``DELETE /installation/token``), and an attempt killed from outside leaves one that expires.
The App's private key never leaves this process: only the minted token enters a container.

The steps (GitHub's documented flow): a JWT signed with the App's key (RS256, ``iss`` = the
App id, at most ten minutes) finds the repository's installation, then asks that installation
for a token.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
from django.conf import settings

API_VERSION = "2022-11-28"
PERMISSIONS = {"contents": "write", "pull_requests": "write"}


class AppCredentials:
    """The App as ``orchestration.registry``'s GitHub credentials: read-only tokens for the
    check that a reported commit is on its branch (``services/commits.py``)."""

    def available(self) -> bool:
        return app_configured()

    def token(self, repo: str) -> str:
        return installation_token(repo, permissions={"contents": "read"})


class GitHubAppError(RuntimeError):
    """The App could not mint a token for the repository (the message says why).

    ``permanent``: GitHub refused (the App is not installed on the repository, or lacks the
    access): retrying will not help. Otherwise (no answer, a 5xx) it may pass.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def app_configured() -> bool:
    return bool(settings.GITHUB_APP_ID and settings.GITHUB_APP_PRIVATE_KEY)


def app_jwt(*, now: float | None = None) -> str:
    """The App's own credential: RS256, issued a minute ago (clock drift), for nine minutes."""
    issued = int(now if now is not None else time.time()) - 60
    claims = {"iat": issued, "exp": issued + 600, "iss": str(settings.GITHUB_APP_ID)}
    return jwt.encode(claims, settings.GITHUB_APP_PRIVATE_KEY, algorithm="RS256")


def installation_token(repo: str, *, permissions: dict[str, str] | None = None) -> str:
    """A token for ``repo`` (``owner/name``) alone, minted now (``PERMISSIONS`` by default)."""
    owner, name = repo.split("/", 1)
    bearer = app_jwt()
    installation = _call("GET", f"/repos/{owner}/{name}/installation", bearer)
    body = {"repositories": [name], "permissions": permissions or PERMISSIONS}
    minted = _call("POST", f"/app/installations/{installation['id']}/access_tokens", bearer, body)
    token = minted.get("token")
    if not isinstance(token, str) or not token:
        raise GitHubAppError("GitHub answered without a token")
    return token


def token_revoke(token: str) -> None:
    """End a minted token that no container will use (its start failed). Best effort: an
    unrevoked one expires within the hour."""
    with contextlib.suppress(GitHubAppError):
        _call("DELETE", "/installation/token", token)


def _call(method: str, path: str, bearer: str, body: dict[str, Any] | None = None) -> Any:
    base = (settings.GITHUB_API_URL or "https://api.github.com").rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise GitHubAppError("GITHUB_API_URL must be an http(s) URL")
    request = urllib.request.Request(  # noqa: S310  (http(s) only, checked above)
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {bearer}",
            "X-GitHub-Api-Version": API_VERSION,
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise GitHubAppError(
            f"GitHub App: {method} {path} answered {exc.code} (is the App installed on the "
            "repository, with contents and pull requests write access?)",
            permanent=exc.code < 500,
        ) from None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise GitHubAppError(f"GitHub App: {method} {path} failed: {exc}") from None
