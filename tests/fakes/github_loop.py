"""The fake GitHub's side for the GitHub loop (issue 11), in GitHub's documented REST shapes
(docs.github.com/rest): issues, labels, comments, collaborators, pulls, reviews, check runs,
ETags, rate limits and faults. Mixed into ``tests.fakes.github.FakeGitHub``; standard library
only (the fake also runs inside the worker image).

State a test sets or reads (repo = "owner/name"):
- ``add_issue(repo, number, ...)`` / ``issue_close``; ``labels[repo][n]`` (names, in order),
  ``comments[repo][n]`` (comment objects), ``issue_events[repo][n]`` (``labeled``/``unlabeled``
  with ``actor``), ``collaborators[repo]`` (logins: 204, else 404).
- ``add_pull(repo, number, head_ref, head_sha, ...)`` (``diff={path: [(start, end)]}``: review
  comments outside those lines answer 422, as GitHub does), ``pull_push`` for a new head;
  ``reviews[repo][n]`` (review objects, with their ``comments``), ``check_runs[repo]``.
- ``rate_limit_remaining``: None (no limit) or requests left; at 0 every call answers 403 with
  ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (``rate_limit_reset``, epoch seconds)
  until that time has passed, then the limit is lifted.
- ``fault(method, path_regex, status | "timeout_after_write" | "timeout", times=1,
  headers=None)``: the next matching calls answer ``status`` without acting; the timeout kinds
  close the connection without answering (after ``timeout_sleep`` seconds), the first one
  after doing the write.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

REPO = r"^/repos/(?P<repo>[^/]+/[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(REPO + p + "$"), name)
    for m, p, name in [
        ("GET", "/issues", "issues_list"),
        ("GET", r"/issues/(?P<n>\d+)", "issue_get"),
        ("PATCH", r"/issues/(?P<n>\d+)", "issue_patch"),
        ("POST", r"/issues/(?P<n>\d+)/labels", "labels_post"),
        ("DELETE", r"/issues/(?P<n>\d+)/labels/(?P<label>[^/]+)", "label_delete"),
        ("GET", r"/issues/(?P<n>\d+)/comments", "comments_list"),
        ("POST", r"/issues/(?P<n>\d+)/comments", "comment_post"),
        ("GET", r"/issues/(?P<n>\d+)/events", "events_list"),
        ("GET", r"/collaborators/(?P<login>[^/]+)", "collaborator_get"),
        ("GET", r"/pulls/(?P<n>\d+)", "pull_get"),
        ("GET", r"/pulls/(?P<n>\d+)/reviews", "reviews_list"),
        ("POST", r"/pulls/(?P<n>\d+)/reviews", "review_post"),
        ("GET", r"/commits/(?P<sha>[^/]+)/check-runs", "check_runs_list"),
        ("POST", "/check-runs", "check_run_post"),
    ]
]
DROP = 0  # the status that tells the server to close the connection without answering
WEB = "https://github.example"


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int | str
    times: int
    headers: dict[str, str] = field(default_factory=dict)


class LoopRoutes:
    """The GitHub loop's routes and state (see the module docstring)."""

    requests: list[Any]
    pulls_store: dict[str, dict[int, dict[str, Any]]]

    def _loop_init(self) -> None:
        self.issues: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.labels: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.comments: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.issue_events: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.collaborators: dict[str, set[str]] = defaultdict(set)
        self.pulls_store = defaultdict(dict)
        self.diffs: dict[tuple[str, int], dict[str, list[tuple[int, int]]]] = {}
        self.reviews: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.check_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.rate_limit_remaining: int | None = None
        self.rate_limit_reset: float = time.time() + 60
        self.faults: list[Fault] = []
        self.timeout_sleep = 0.0
        self._ids = 5000

    # -- helpers for tests ------------------------------------------------------------------

    def add_issue(
        self,
        repo: str,
        number: int,
        title: str = "An issue",
        body: str = "",
        labels: list[str] | tuple[str, ...] = (),
        user: str = "octocat",
        state: str = "open",
    ) -> dict[str, Any]:
        """An issue, its labels put there by ``user`` (one ``labeled`` event each)."""
        issue = {
            "id": self._id(),
            "node_id": f"I_{number}",
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "user": {"login": user, "type": "User"},
            "html_url": f"{WEB}/{repo}/issues/{number}",
            "url": f"/repos/{repo}/issues/{number}",
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.issues[repo][number] = issue
        for label in labels:
            self.label_add(repo, number, label, actor=user)
        return issue

    def label_add(self, repo: str, number: int, label: str, *, actor: str = "octocat") -> None:
        if label not in self.labels[repo][number]:
            self.labels[repo][number].append(label)
            self.issue_events[repo][number].append(_event("labeled", label, actor))

    def issue_close(self, repo: str, number: int, *, by: str = "octocat") -> None:
        """Close the issue (as ``by``: GitHub's ``closed_by`` on the issue)."""
        self.issues[repo][number].update(
            state="closed", closed_by={"login": by, "type": "User"}, closed_at=_now()
        )

    def add_pull(
        self,
        repo: str,
        number: int,
        head_ref: str,
        head_sha: str,
        base_ref: str = "main",
        base_sha: str = "b" * 40,
        *,
        title: str = "A change",
        body: str = "",
        user: str = "octocat",
        draft: bool = False,
        head_repo: str | None = None,
        diff: dict[str, list[tuple[int, int]]] | None = None,
    ) -> dict[str, Any]:
        """An open pull request; ``diff`` (path → line ranges on the new side) if review
        comments should be checked against it."""
        pull = {
            "id": self._id(),
            "number": number,
            "state": "open",
            "draft": draft,
            "title": title,
            "body": body,
            "user": {"login": user},
            "html_url": f"{WEB}/{repo}/pull/{number}",
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo or repo}},
            "base": {"ref": base_ref, "sha": base_sha, "repo": {"full_name": repo}},
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.pulls_store[repo][number] = pull
        if diff is not None:
            self.diffs[(repo, number)] = diff
        return pull

    def pull_push(self, repo: str, number: int, head_sha: str) -> None:
        self.pulls_store[repo][number]["head"]["sha"] = head_sha

    def fault(
        self,
        method: str,
        path_regex: str,
        status: int | str,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next ``times`` matching calls fail (see the module docstring)."""
        self.faults.append(
            Fault(method.upper(), re.compile(path_regex), status, times, headers or {})
        )

    def _id(self) -> int:
        self._ids += 1
        return self._ids

    # -- dispatch ---------------------------------------------------------------------------

    def _handle_loop(self, request: Any) -> tuple[int, Any] | None:
        """The loop's routes, rate limit and faults (None: not one of the loop's routes)."""
        route = _route(request.method, request.path)
        if route is None:
            return None
        name, match = route
        if not (request.authorization or "").startswith("Bearer "):
            return 401, {"message": "Requires authentication"}
        if (request.authorization or "")[7:] in getattr(self, "revoked", []):
            return 401, {"message": "Bad credentials"}
        limited = self._rate_limit(request)
        if limited is not None:
            return limited
        fault = next(
            (f for f in self.faults if f.method == request.method and f.path.search(request.path)),
            None,
        )
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            request.reply_headers.update(fault.headers)
            if isinstance(fault.status, int):
                return fault.status, {"message": "Fault injected"}
            request.drop = True
            if fault.status == "timeout":
                return DROP, None
        args = {k: unquote(v) for k, v in match.groupdict().items()}
        status, answer = getattr(self, "_" + name)(request, **args)
        if getattr(request, "drop", False):
            return DROP, None  # the write happened; the answer never arrives
        return status, answer

    def _rate_limit(self, request: Any) -> tuple[int, Any] | None:
        if self.rate_limit_remaining is None:
            return None
        if self.rate_limit_remaining <= 0 and time.time() >= self.rate_limit_reset:
            self.rate_limit_remaining = None  # the window reset
            return None
        request.reply_headers.update(
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": str(max(self.rate_limit_remaining - 1, 0)),
                "x-ratelimit-reset": str(int(self.rate_limit_reset)),
                "x-ratelimit-resource": "core",
            }
        )
        if self.rate_limit_remaining <= 0:
            request.reply_headers["x-ratelimit-remaining"] = "0"
            return 403, {
                "message": "API rate limit exceeded for installation.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            }
        self.rate_limit_remaining -= 1
        return None

    def _listed(self, request: Any, items: list[Any]) -> tuple[int, Any]:
        """A list answer: paginated (per_page, page; Link rel="next"), with an ETag that a
        matching If-None-Match turns into 304."""
        per_page = int((request.query.get("per_page") or ["30"])[0])
        page = int((request.query.get("page") or ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        etag = 'W/"' + hashlib.sha256(json.dumps(chunk, sort_keys=True).encode()).hexdigest() + '"'
        request.reply_headers["etag"] = etag
        if len(items) > page * per_page:
            query = "&".join(f"{k}={v[0]}" for k, v in request.query.items() if k not in ("page",))
            request.reply_headers["link"] = (
                f'<{self.base}{request.path}?{query}&page={page + 1}>; rel="next"'  # type: ignore[attr-defined]
            )
        if request.headers.get("if-none-match") == etag:
            return 304, None
        return 200, chunk

    # -- issues -----------------------------------------------------------------------------

    def _issue_view(self, repo: str, issue: dict[str, Any]) -> dict[str, Any]:
        names = self.labels[repo][issue["number"]]
        return {
            **issue,
            "labels": [{"name": n, "color": "ededed", "default": False} for n in names],
        }

    def _issues_list(self, request: Any, repo: str) -> tuple[int, Any]:
        state = (request.query.get("state") or ["open"])[0]
        wanted = [w for w in (request.query.get("labels") or [""])[0].split(",") if w]
        found = [
            self._issue_view(repo, issue)
            for number, issue in sorted(self.issues[repo].items())
            if state in ("all", issue["state"])
            and all(w in self.labels[repo][number] for w in wanted)
        ]
        return self._listed(request, found)

    def _issue_get(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        issue = self.issues[repo].get(int(n))
        return (200, self._issue_view(repo, issue)) if issue else (404, {"message": "Not Found"})

    def _issue_patch(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        issue = self.issues[repo].get(int(n))
        if not issue:
            return 404, {"message": "Not Found"}
        for key in ("state", "title", "body"):
            if key in (request.body or {}):
                issue[key] = request.body[key]
        return 200, self._issue_view(repo, issue)

    def _label_objects(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [{"name": n, "color": "ededed"} for n in self.labels[repo][number]]

    def _labels_post(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        labels = (request.body or {}).get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            return 422, {"message": "Invalid request.", "status": "422"}
        for label in labels:
            self.label_add(repo, int(n), label, actor="whim[bot]")
        return 200, self._label_objects(repo, int(n))

    def _label_delete(self, request: Any, repo: str, n: str, label: str) -> tuple[int, Any]:
        if label not in self.labels[repo][int(n)]:
            return 404, {"message": "Label does not exist", "status": "404"}
        self.labels[repo][int(n)].remove(label)
        self.issue_events[repo][int(n)].append(_event("unlabeled", label, "whim[bot]"))
        return 200, self._label_objects(repo, int(n))

    def _comments_list(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        return self._listed(request, list(self.comments[repo][int(n)]))

    def _comment_post(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        body = (request.body or {}).get("body")
        if not isinstance(body, str) or not body:
            return 422, {"message": "Validation Failed", "status": "422"}
        cid = self._id()
        comment = {
            "id": cid,
            "body": body,
            "user": {"login": "whim[bot]", "type": "Bot"},
            "html_url": f"{WEB}/{repo}/issues/{n}#issuecomment-{cid}",
            "created_at": _now(),
        }
        self.comments[repo][int(n)].append(comment)
        return 201, comment

    def _events_list(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        return self._listed(request, list(self.issue_events[repo][int(n)]))

    def _collaborator_get(self, request: Any, repo: str, login: str) -> tuple[int, Any]:
        if login.lower() in {c.lower() for c in self.collaborators[repo]}:
            return 204, None
        return 404, {"message": "Not Found", "status": "404"}

    # -- pulls, reviews, check runs ---------------------------------------------------------

    def _pull_get(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        pull = self.pulls_store[repo].get(int(n))
        return (200, pull) if pull else (404, {"message": "Not Found"})

    def _pulls_list(self, request: Any, repo: str) -> tuple[int, Any]:
        state = (request.query.get("state") or ["open"])[0]
        head = (request.query.get("head") or [""])[0]
        found = [
            pull
            for _, pull in sorted(self.pulls_store[repo].items())
            if state in ("all", pull["state"])
            and (not head or head.split(":")[-1] == pull["head"]["ref"])
        ]
        return self._listed(request, found)

    def _reviews_list(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        return self._listed(request, list(self.reviews[repo][int(n)]))

    def _review_post(self, request: Any, repo: str, n: str) -> tuple[int, Any]:
        body = request.body or {}
        event = body.get("event") or "PENDING"
        if event not in ("APPROVE", "REQUEST_CHANGES", "COMMENT", "PENDING"):
            return 422, {"message": "Unprocessable Entity", "errors": ["Invalid event"]}
        comments = body.get("comments") or []
        diff = self.diffs.get((repo, int(n)))
        for comment in comments:
            if not isinstance(comment, dict) or not {"path", "body"} <= comment.keys():
                return 422, {"message": "Unprocessable Entity", "errors": ["Invalid comment"]}
            line = comment.get("line")
            if diff is not None and not any(
                start <= int(line or 0) <= end for start, end in diff.get(comment["path"], [])
            ):
                return 422, {
                    "message": "Unprocessable Entity",
                    "errors": ["Line could not be resolved"],
                    "status": "422",
                }
        rid = self._id()
        states = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}
        review = {
            "id": rid,
            "user": {"login": "whim[bot]", "type": "Bot"},
            "body": body.get("body") or "",
            "state": states.get(event, "COMMENTED" if event == "COMMENT" else "PENDING"),
            "commit_id": body.get("commit_id")
            or self.pulls_store[repo].get(int(n), {}).get("head", {}).get("sha"),
            "html_url": f"{WEB}/{repo}/pull/{n}#pullrequestreview-{rid}",
            "submitted_at": _now(),
            "comments": comments,
        }
        self.reviews[repo][int(n)].append(review)
        return 200, review

    def _check_runs_list(self, request: Any, repo: str, sha: str) -> tuple[int, Any]:
        name = (request.query.get("check_name") or [""])[0]
        runs = [
            r
            for r in self.check_runs[repo]
            if r["head_sha"] == sha and (not name or r["name"] == name)
        ]
        return 200, {"total_count": len(runs), "check_runs": runs}

    def _check_run_post(self, request: Any, repo: str) -> tuple[int, Any]:
        body = request.body or {}
        if not body.get("name") or not body.get("head_sha"):
            return 422, {"message": "Invalid request.", "status": "422"}
        rid = self._id()
        run = {
            "id": rid,
            "name": body["name"],
            "head_sha": body["head_sha"],
            "external_id": body.get("external_id") or "",
            "status": "completed" if body.get("conclusion") else body.get("status") or "queued",
            "conclusion": body.get("conclusion"),
            "details_url": body.get("details_url"),
            "output": body.get("output") or {},
            "html_url": f"{WEB}/{repo}/runs/{rid}",
            "started_at": body.get("started_at") or _now(),
            "completed_at": body.get("completed_at"),
        }
        self.check_runs[repo].append(run)
        return 201, run


def _route(method: str, path: str) -> tuple[str, re.Match[str]] | None:
    """The loop's route for a request: its handler's name and the path's match."""
    for verb, pattern, name in ROUTES:
        match = pattern.match(path)
        if match and verb == method:
            return name, match
    return None


def _event(kind: str, label: str, actor: str) -> dict[str, Any]:
    """An issue event as GitHub's ``/issues/{n}/events`` lists it."""
    return {
        "id": int(time.time_ns() % 10**12),
        "event": kind,
        "label": {"name": label},
        "actor": {"login": actor},
        "created_at": _now(),
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
