"""GitHub's REST API for the loop (skeleton: filled in by the client/outbox slice)."""

from __future__ import annotations


class GitHubClient:
    """One repository's view of GitHub's REST API, with the installation's credentials."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
