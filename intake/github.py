"""GitHub's REST API for the GitHub loop: one repository's client, with its errors classified
at the boundary (STYLE.md §4).

Every failure is a ``GitHubError``: ``status`` None when GitHub gave no answer (a timeout, a
reset connection), ``permanent`` for a refusal that a retry will not change (a 4xx other than
408/409/429), ``RateLimited`` with ``retry_at`` when GitHub asks us to wait (x-ratelimit-remaining
0 until x-ratelimit-reset, or a Retry-After). Messages name the call and GitHub's answer, never
a token; nothing here logs headers.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from intake.credentials import API_VERSION, GitHubAppError, api_base, loop_token, loop_token_forget

logger = logging.getLogger(__name__)

# A secondary rate limit without a Retry-After: GitHub asks for at least a minute.
SECONDARY_WAIT = dt.timedelta(minutes=1)
TRANSIENT_STATUSES = frozenset({408, 409, 429})
NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class GitHubError(Exception):
    """A GitHub call that did not succeed. ``status``: GitHub's answer (None: no answer);
    ``permanent``: retrying will not help; ``retry_at``: when to try again, if GitHub said."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        permanent: bool = False,
        retry_at: dt.datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.permanent = permanent
        self.retry_at = retry_at


class RateLimited(GitHubError):
    """GitHub's rate limit (primary or secondary): nothing is wrong, wait until ``retry_at``."""


@dataclass(frozen=True)
class Answer:
    """What GitHub answered: ``data`` is the decoded JSON (None for 204 and 304)."""

    status: int
    data: Any
    headers: Mapping[str, str]
    etag: str


class GitHubClient:
    """One repository's view of GitHub's REST API, with the installation's credentials
    (resolved at the first request, see ``intake.credentials.loop_token``)."""

    def __init__(self, repo: str) -> None:
        self.repo = repo

    # -- the transport -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        etag: str = "",
    ) -> Answer:
        """One call. ``path``: an API path (``/repos/{repo}/issues``, ``{repo}`` filled in),
        a path relative to the repository (``issues/3``), or a URL under GITHUB_API_URL (a Link
        header's). 2xx and 304 answer; anything else raises ``GitHubError``."""
        url = self._url(path, params)
        token = self._token()
        try:
            return self._send(method, url, body=body, etag=etag, token=token)
        except GitHubError as exc:
            if exc.status != 401 or token == settings.GITHUB_TOKEN:
                raise
        # An App token GitHub no longer takes (revoked, or the App changed): mint another.
        loop_token_forget(token)
        return self._send(method, url, body=body, etag=etag, token=self._token())

    def pages(
        self, path: str, *, params: Mapping[str, Any] | None = None, limit: int = 10
    ) -> list[Any]:
        """Every item of a list endpoint, following Link rel="next" (at most ``limit`` pages
        of 100)."""
        items: list[Any] = []
        next_path: str | None = path
        query: Mapping[str, Any] | None = {"per_page": 100, **(params or {})}
        for _ in range(limit):
            if next_path is None:
                break
            answer = self.request("GET", next_path, params=query)
            data = answer.data
            if isinstance(data, dict):  # check runs and friends wrap their list
                data = next((v for v in data.values() if isinstance(v, list)), [])
            items.extend(data or [])
            found = NEXT_LINK.search(answer.headers.get("link", ""))
            next_path, query = (found.group(1), None) if found else (None, None)
        return items

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        base = api_base()
        if not base.startswith(("https://", "http://")):
            raise GitHubError("GITHUB_API_URL must be an http(s) URL", permanent=True)
        if path.startswith(("https://", "http://")):
            if not path.startswith(base + "/"):
                raise GitHubError("a link outside GITHUB_API_URL", permanent=True)
            url = path
        elif path.startswith("/"):
            url = base + path.replace("{repo}", self.repo)
        else:
            url = f"{base}/repos/{self.repo}/{path}"
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params, doseq=True)
        return url

    def _token(self) -> str:
        try:
            token = loop_token(self.repo)
        except GitHubAppError as exc:
            raise GitHubError(str(exc), permanent=exc.permanent) from None
        if not token:
            raise GitHubError("no GitHub credentials configured", permanent=True)
        return token

    def _send(self, method: str, url: str, *, body: Any, etag: str, token: str) -> Answer:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "Authorization": f"Bearer {token}",
            "User-Agent": "whim",
        }
        if etag:
            headers["If-None-Match"] = etag
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        what = f"GitHub {method} {urllib.parse.urlsplit(url).path}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=settings.GITHUB_TIMEOUT) as response:  # noqa: S310
                status, raw, answered = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            answered = exc.headers
            status, raw = exc.code, _read(exc)
            if status != 304:
                raise _classify(what, status, raw, _lower(answered), token) from None
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise GitHubError(_scrub(f"{what}: no answer ({reason})", token), status=None) from None
        lowered = _lower(answered)
        logger.debug("%s answered %s", what, status)
        decoded = None
        if status not in (204, 304) and raw:
            try:
                decoded = json.loads(raw)
            except ValueError:
                raise GitHubError(f"{what}: answered {status} with no JSON") from None
        return Answer(status=status, data=decoded, headers=lowered, etag=lowered.get("etag", ""))

    # -- issues and labels ------------------------------------------------------------------

    def issues_labelled(self, label: str, *, etag: str = "") -> Answer:
        params = {"labels": label, "state": "open", "per_page": 100}
        return self.request("GET", "issues", params=params, etag=etag)

    def issue(self, number: int) -> dict[str, Any]:
        return dict(self.request("GET", f"issues/{number}").data)

    def labels_add(self, number: int, labels: list[str]) -> None:
        self.request("POST", f"issues/{number}/labels", body={"labels": labels})

    def label_remove(self, number: int, label: str) -> None:
        """Take ``label`` off the issue; not there (404) is as good as removed."""
        try:
            self.request("DELETE", f"issues/{number}/labels/{urllib.parse.quote(label, safe='')}")
        except GitHubError as exc:
            if exc.status != 404:
                raise

    def comments(self, number: int) -> list[dict[str, Any]]:
        return self.pages(f"issues/{number}/comments")

    def comment_create(self, number: int, body: str) -> dict[str, Any]:
        return dict(self.request("POST", f"issues/{number}/comments", body={"body": body}).data)

    def is_collaborator(self, login: str) -> bool:
        """Whether ``login`` may push to the repository (204 yes, 404 no)."""
        try:
            self.request("GET", f"collaborators/{urllib.parse.quote(login, safe='')}")
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- pull requests, reviews, check runs --------------------------------------------------

    def pulls_open(self, *, etag: str = "") -> Answer:
        params = {"state": "open", "per_page": 100}
        return self.request("GET", "pulls", params=params, etag=etag)

    def pull(self, number: int) -> dict[str, Any]:
        return dict(self.request("GET", f"pulls/{number}").data)

    def pull_reviews(self, number: int) -> list[dict[str, Any]]:
        return self.pages(f"pulls/{number}/reviews")

    def pull_review_create(
        self, number: int, *, commit_id: str, body: str, event: str, comments: list[dict[str, Any]]
    ) -> dict[str, Any]:
        payload = {"commit_id": commit_id, "body": body, "event": event, "comments": comments}
        return dict(self.request("POST", f"pulls/{number}/reviews", body=payload).data)

    def check_runs(self, sha: str, *, name: str) -> list[dict[str, Any]]:
        return self.pages(f"commits/{sha}/check-runs", params={"check_name": name})

    def check_run_create(self, **fields: Any) -> dict[str, Any]:
        return dict(self.request("POST", "check-runs", body=fields).data)


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, http.client.HTTPException):
        return b""


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers.items() if headers else [])}


def _classify(
    what: str, status: int, raw: bytes, headers: Mapping[str, str], token: str
) -> GitHubError:
    """GitHub's refusal as an error: rate limited, transient, or permanent."""
    try:
        message = str(json.loads(raw).get("message") or "")[:200]
    except (ValueError, AttributeError):
        message = ""
    text = _scrub(f"{what} answered {status}" + (f": {message}" if message else ""), token)
    if status in (403, 429):
        retry_at = _rate_limit_reset(headers, message)
        if retry_at is not None:
            return RateLimited(text, status=status, retry_at=retry_at)
    permanent = 400 <= status < 500 and status not in TRANSIENT_STATUSES
    return GitHubError(text, status=status, permanent=permanent)


def _rate_limit_reset(headers: Mapping[str, str], message: str) -> dt.datetime | None:
    """When a rate-limited request may be sent again; None when the 403 is no rate limit."""
    now = dt.datetime.now(dt.UTC)
    retry_after = headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return now + dt.timedelta(seconds=int(retry_after))
    if headers.get("x-ratelimit-remaining", "").strip() == "0":
        reset = headers.get("x-ratelimit-reset", "").strip()
        if reset.isdigit():
            return dt.datetime.fromtimestamp(int(reset), dt.UTC)
        return now + SECONDARY_WAIT
    if "rate limit" in message.lower():
        return now + SECONDARY_WAIT
    return None


def _scrub(text: str, token: str) -> str:
    """Never a token in a message, whatever GitHub (or a proxy) echoed."""
    return text.replace(token, "[token]") if token else text
