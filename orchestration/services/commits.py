"""Is the commit a worker reports really on its pushed branch? (DESIGN.md §9: the
orchestrator verifies what it is told instead of trusting it.)

``commit_verify(repo=, branch=, sha=)`` asks the first check that applies here:

- ``LocalRepoCheck`` (``WHIM_GIT_BASE_URL`` is ``file://`` and ``WHIM_LOCAL_REPOS_DIR`` is
  set): git on this host, on ``<dir>/<owner>/<name>.git``, with no system or global config,
  hooks and fsmonitor off, replace refs ignored, a timeout, and only plumbing commands that
  run nothing the repository's own config names.
- ``GitHubCheck`` (not ``file://`` and ``GITHUB_TOKEN`` set): GitHub's REST API — the commit
  exists (``GET /repos/{o}/{r}/commits/{sha}``) and the branch contains it
  (``GET /repos/{o}/{r}/compare/{branch}...{sha}`` is ``identical`` or ``behind``).

Neither applies: the completion is accepted, and its event says it was not verified. A check
that cannot answer now (timeout, GitHub down or rate limited) raises ``Unavailable`` (503):
the harness retries its callback. Checks are a small registry (``commit_check_register``)
so a runtime or a deployment can add one without the core importing it.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from django.conf import settings

from orchestration import registry
from orchestration.errors import Unavailable

logger = logging.getLogger(__name__)

FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
GITHUB_API = "https://api.github.com"


@dataclasses.dataclass(frozen=True)
class CommitVerdict:
    """``ok``: accept the completion. ``checked_by``: which check answered ("" when none
    could). ``note``: why it was refused, or why nothing checked it."""

    ok: bool
    checked_by: str = ""
    note: str = ""


class CommitCheck(abc.ABC):
    """One way to see a repository's branches. ``applies`` says whether it can here."""

    name: ClassVar[str]

    @classmethod
    def applies(cls) -> bool:
        return False

    @abc.abstractmethod
    def verify(self, *, repo: str, branch: str, sha: str) -> CommitVerdict:
        """The verdict on ``sha`` (already a full hex id) being on ``branch`` of ``repo``."""

    def refuse(self, note: str) -> CommitVerdict:
        return CommitVerdict(ok=False, checked_by=self.name, note=note)

    def accept(self) -> CommitVerdict:
        return CommitVerdict(ok=True, checked_by=self.name)


_CHECKS: list[type[CommitCheck]] = []


def commit_check_register(check: type[CommitCheck]) -> type[CommitCheck]:
    """Add a check (asked in registration order; the first that applies answers)."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def commit_verify(*, repo: str, branch: str, sha: str) -> CommitVerdict:
    """Whether ``sha`` is a commit on ``refs/heads/<branch>`` of ``repo`` (``owner/name``).

    A missing or short sha is refused when a check applies; with none, everything is
    accepted and the verdict says so. Raises ``Unavailable`` when the check cannot answer now.
    """
    for check in _CHECKS:
        if not check.applies():
            continue
        if not sha:
            return check().refuse("no commitSha was reported: the pushed commit is required")
        if not FULL_SHA.match(sha):
            return check().refuse(f"commitSha {sha!r} is not a full commit id (40 hex digits)")
        return check().verify(repo=repo, branch=branch, sha=sha)
    return CommitVerdict(
        ok=True,
        note="commit not verified: no local repositories (WHIM_LOCAL_REPOS_DIR with a file:// "
        "WHIM_GIT_BASE_URL) and no GitHub credentials (GITHUB_TOKEN) to check it against",
    )


def _local_base() -> bool:
    return str(settings.WHIM_GIT_BASE_URL).startswith("file://")


@commit_check_register
class LocalRepoCheck(CommitCheck):
    """git on this host, against the bare repository the containers push to."""

    name = "local git"

    @classmethod
    def applies(cls) -> bool:
        return _local_base() and bool(settings.WHIM_LOCAL_REPOS_DIR)

    def verify(self, *, repo: str, branch: str, sha: str) -> CommitVerdict:
        root = Path(settings.WHIM_LOCAL_REPOS_DIR).resolve()
        owner, name = repo.split("/", 1)
        git_dir = (root / owner / f"{name}.git").resolve()
        if not git_dir.is_relative_to(root) or not git_dir.is_dir():
            return self.refuse(f"repository {repo} is not in WHIM_LOCAL_REPOS_DIR")
        if self._git(git_dir, "cat-file", "-e", f"{sha}^{{commit}}") != 0:
            return self.refuse(f"commit {sha} does not exist in {repo}")
        ref = f"refs/heads/{branch}"
        if self._git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") != 0:
            return self.refuse(f"branch {branch} does not exist in {repo}: nothing was pushed")
        code = self._git(git_dir, "merge-base", "--is-ancestor", sha, ref)
        if code == 1:
            return self.refuse(f"commit {sha} is not on branch {branch} of {repo}")
        if code != 0:
            raise Unavailable(f"git could not compare {sha[:12]} with {branch} (exit {code})")
        return self.accept()

    @staticmethod
    def _git(git_dir: Path, *args: str) -> int:
        """Run one read-only git command; its exit code. Nothing from the environment's or
        the system's git config is read, and nothing the repository's config names can run:
        these plumbing commands start no hook, pager, fsmonitor, filter or helper."""
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": "/nonexistent",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_NO_REPLACE_OBJECTS": "1",  # refs/replace could forge the history
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_PAGER": "cat",
        }
        argv = ["git", "--no-pager", "--no-replace-objects"]
        for option in (
            "core.hooksPath=/dev/null",
            "core.fsmonitor=false",
            "core.alternateRefsCommand=",
            "protocol.allow=never",
            "safe.directory=*",  # the repos belong to the container user, not to us
        ):
            argv += ["-c", option]
        try:
            done = subprocess.run(
                [*argv, "--git-dir", str(git_dir), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=settings.COMMIT_CHECK_TIMEOUT,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise Unavailable(f"git did not answer: {type(exc).__name__}") from None
        if done.returncode not in (0, 1):
            logger.warning("git %s in %s: %s", args[0], git_dir, done.stderr[-500:])
        return done.returncode


@commit_check_register
class GitHubCheck(CommitCheck):
    """GitHub's REST API (GITHUB_API_URL, default GitHub's), with a token that reads the
    repository: a GitHub App's minted for it (``registry.github_token``), or GITHUB_TOKEN."""

    name = "GitHub"

    @classmethod
    def applies(cls) -> bool:
        return not _local_base() and registry.github_readable()

    def verify(self, *, repo: str, branch: str, sha: str) -> CommitVerdict:
        base = f"{(settings.GITHUB_API_URL or GITHUB_API).rstrip('/')}/repos/{repo}"
        try:
            token = registry.github_token(repo)
        except Exception as exc:  # the App could not mint one now: ask again later
            raise Unavailable(f"no GitHub token for {repo}: {type(exc).__name__}") from None
        status, body = self._get(f"{base}/commits/{sha}", token)
        if status in (404, 422):  # 422: "No commit found for SHA"; 404: no such repository
            return self.refuse(f"commit {sha} does not exist in {repo}")
        if status != 200 or body.get("sha") != sha:
            raise Unavailable(f"GitHub answered {status} for the commit")
        status, body = self._get(f"{base}/compare/{quote(branch, safe='/')}...{sha}", token)
        if status == 404:
            return self.refuse(f"branch {branch} does not exist in {repo}: nothing was pushed")
        if status != 200:
            raise Unavailable(f"GitHub answered {status} for the comparison")
        # base=branch, head=sha: "behind" means the branch holds sha and more after it. Those
        # answers list no commits or files, so they are small; a body cut at the read limit
        # (many commits in sha not in the branch) parses as {} and is refused, rightly.
        if body.get("status") in ("identical", "behind"):
            return self.accept()
        return self.refuse(f"commit {sha} is not on branch {branch} of {repo}")

    @staticmethod
    def _get(url: str, token: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 - the configured API's https/http URL
            url,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "whim",
            },
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=settings.COMMIT_CHECK_TIMEOUT
            ) as response:
                status, raw = response.status, response.read(4 * 1024 * 1024)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(64 * 1024)
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"GitHub did not answer: {type(exc).__name__}") from None
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        return status, body if isinstance(body, dict) else {}
