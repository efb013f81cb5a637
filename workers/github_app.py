"""Per-attempt GitHub credentials from a GitHub App: one repository, one attempt, one hour.

With ``GITHUB_APP_ID`` and ``GITHUB_APP_PRIVATE_KEY`` set, each container gets an
installation access token minted for its item's repository alone (``repositories: [name]``,
``contents`` and ``pull_requests`` write) instead of a shared ``GITHUB_TOKEN``. GitHub ends
such a token after an hour at most; the harness revokes it itself when the attempt ends
(``DELETE /installation/token``), and an attempt killed from outside leaves one that expires.
The App's private key never leaves this process: only the minted token enters a container.

The JWT and the minting live in ``intake.credentials`` (the GitHub loop's client uses them
too); these tokens are never cached there: each attempt gets its own, revoked when it ends.
"""

from __future__ import annotations

import contextlib

from intake.credentials import API_VERSION, GitHubAppError, app_call, app_configured, app_jwt
from intake.credentials import installation_token_mint as _mint

__all__ = [
    "API_VERSION",
    "PERMISSIONS",
    "AppCredentials",
    "GitHubAppError",
    "app_configured",
    "app_jwt",
    "installation_token",
    "token_revoke",
]

PERMISSIONS = {"contents": "write", "pull_requests": "write"}


class AppCredentials:
    """The App as ``orchestration.registry``'s GitHub credentials: read-only tokens for the
    check that a reported commit is on its branch (``services/commits.py``)."""

    def available(self) -> bool:
        return app_configured()

    def token(self, repo: str) -> str:
        return installation_token(repo, permissions={"contents": "read"})


def installation_token(repo: str, *, permissions: dict[str, str] | None = None) -> str:
    """A token for ``repo`` (``owner/name``) alone, minted now (``PERMISSIONS`` by default)."""
    token, _expires = _mint(repo, permissions=permissions or PERMISSIONS)
    return token


def token_revoke(token: str) -> None:
    """End a minted token that no container will use (its start failed). Best effort: an
    unrevoked one expires within the hour."""
    with contextlib.suppress(GitHubAppError):
        app_call("DELETE", "/installation/token", token)
