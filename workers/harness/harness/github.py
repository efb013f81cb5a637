"""Opening the pull request on GitHub (or anything that speaks its REST API).

POST ``{api}/repos/{owner}/{name}/pulls``; a 422 usually means the PR already exists, which
``GET .../pulls?head=owner:branch`` finds. The self-review goes on the PR as a comment (``POST
.../issues/{n}/comments``). The token goes in the Authorization header only.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

from .config import Config
from .errors import Category, HarnessError
from .logs import Logger, mask
from .transport import Response, RetriesExhausted, request_json

BODY_EXCERPT_CHARS = 4000


@dataclass(frozen=True)
class PullRequest:
    url: str
    number: int


class PullRequestError(HarnessError):
    category = Category.PR_ERROR


def pr_title(spec: str, *, fallback: str) -> str:
    """The spec's first Markdown heading, else its first non-empty line, else ``fallback``."""
    lines = [line.strip() for line in spec.splitlines()]
    for line in lines:
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*$", line)
        if match:
            return match.group(1)[:200]
    for line in lines:
        if line:
            return line[:200]
    return fallback


def pr_body(
    spec: str,
    *,
    work_item_id: str,
    summary: str = "",
    tests: str = "",
    review: str = "",
    closes: int | None = None,
) -> str:
    """Summary (the branch's commits), spec excerpt, test results, review, ``Closes #N``."""
    excerpt = spec.strip()
    if len(excerpt) > BODY_EXCERPT_CHARS:
        excerpt = excerpt[:BODY_EXCERPT_CHARS].rstrip() + "\n\n…"
    parts: list[str] = []
    if summary.strip():
        commits = "\n".join(f"- {line}" for line in summary.strip().splitlines()[:50])
        parts.append(f"## Summary\n\n{commits}")
    parts.append(f"## Spec\n\n{excerpt}" if parts else excerpt)
    if tests:
        parts.append(f"## Tests\n\n{tests}")
    if review.strip():
        parts.append(f"## Review\n\n{review.strip()[:BODY_EXCERPT_CHARS]}")
    if closes:
        parts.append(f"Closes #{closes}")
    parts.append(f"---\nOpened by Whim for work item `{work_item_id}`.")
    return "\n\n".join(part for part in parts if part).lstrip()


def issue_comment_post(
    *,
    api_url: str,
    token: str,
    owner: str,
    name: str,
    number: int,
    body: str,
    log: Logger,
    retry_for: float = 60.0,
) -> bool:
    """Comment on pull request ``number`` (``POST /repos/{o}/{r}/issues/{n}/comments``).
    Best effort: a comment that cannot be posted is a log line, not a failure."""
    label = f"POST /repos/{owner}/{name}/issues/{number}/comments"
    try:
        answer = request_json(
            "POST",
            f"{api_url.rstrip('/')}/repos/{owner}/{name}/issues/{number}/comments",
            body={"body": body[:60_000]},
            headers=_headers(token),
            retry_for=retry_for,
            label=label,
            log=log,
        )
    except RetriesExhausted as exc:
        log(f"could not post the review comment: {exc}")
        return False
    if answer.status != 201:
        log(f"GitHub refused the review comment: {_describe(answer)}")
        return False
    log(f"posted the review on pull request #{number}")
    return True


def _headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }


def pull_request_open(
    *,
    api_url: str,
    token: str,
    owner: str,
    name: str,
    head: str,
    base: str,
    title: str,
    body: str,
    log: Logger,
    retry_for: float = 120.0,
) -> PullRequest:
    """Open the PR ``head`` → ``base``, or find the open one that already exists."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    repo_url = f"{api_url.rstrip('/')}/repos/{owner}/{name}"
    try:
        created = request_json(
            "POST",
            f"{repo_url}/pulls",
            body={"title": title, "head": head, "base": base, "body": body},
            headers=headers,
            retry_for=retry_for,
            label=f"POST /repos/{owner}/{name}/pulls",
            log=log,
        )
        if created.status == 201:
            return _pull_request(created)
        if created.status != 422:
            raise PullRequestError(f"GitHub refused the pull request: {_describe(created)}")
        query = urllib.parse.urlencode({"head": f"{owner}:{head}", "base": base, "state": "open"})
        found = request_json(
            "GET",
            f"{repo_url}/pulls?{query}",
            headers=headers,
            retry_for=retry_for,
            label=f"GET /repos/{owner}/{name}/pulls",
            log=log,
        )
    except RetriesExhausted as exc:
        raise PullRequestError(f"GitHub did not answer: {exc}") from None
    if found.status == 200 and isinstance(found.body, list) and found.body:
        log("a pull request for this branch already exists")
        return _pull_request(Response(200, found.body[0]))
    raise PullRequestError(f"GitHub refused the pull request: {_describe(created)}")


def _pull_request(response: Response) -> PullRequest:
    url, number = response.field("html_url"), response.field("number")
    if not isinstance(url, str) or not isinstance(number, int):
        raise PullRequestError("GitHub's answer has no html_url and number")
    return PullRequest(url=url, number=number)


def _describe(response: Response) -> str:
    message = response.field("message")
    errors = response.field("errors")
    text = f"HTTP {response.status} {message or ''} {errors or ''}".strip()
    return mask(text)[:500]


def attempt_token_revoke(config: Config, *, log: Logger) -> None:
    """End this attempt's GitHub token if it is a per-attempt App token
    (``WHIM_GITHUB_TOKEN_REVOCABLE``, set by the orchestrator's workers/github_app.py)."""
    if config.github_token and os.environ.get("WHIM_GITHUB_TOKEN_REVOCABLE") == "1":
        token_revoke(api_url=config.github_api_url, token=config.github_token, log=log)


def token_revoke(*, api_url: str, token: str, log: Logger) -> bool:
    """End a per-attempt App installation token now (``DELETE /installation/token``, 204).

    Best effort and bounded: a token left behind expires within the hour anyway.
    """
    try:
        answer = request_json(
            "DELETE",
            f"{api_url.rstrip('/')}/installation/token",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            retry_for=20.0,
            label="DELETE /installation/token",
            log=log,
        )
    except RetriesExhausted as exc:
        log(mask(f"could not revoke the GitHub token (it expires within the hour): {exc}"))
        return False
    if answer.status != 204:
        log(f"GitHub did not revoke the token ({answer.status}); it expires within the hour")
        return False
    log("revoked this attempt's GitHub token")
    return True
