"""A fake GitHub REST API: records ``POST /repos/{o}/{n}/pulls`` and answers 201.

With ``existing`` set, the POST answers 422 ("A pull request already exists") and
``GET /repos/{o}/{n}/pulls?head=o:branch`` returns that pull request; with ``refuse_pulls`` set
to a status, the POST answers that (403: "Resource not accessible by integration").
``POST /repos/{o}/{n}/issues/{number}/comments`` records the comment and answers 201.

Commits, in GitHub's shapes (docs.github.com/rest/commits): ``repos["o/n"]`` maps each branch
to its history, oldest first. ``GET /repos/{o}/{n}/commits/{sha}`` answers the commit or 422
"No commit found for SHA"; ``GET /repos/{o}/{n}/compare/{base}...{head}`` answers ``status``
``identical`` / ``ahead`` / ``behind`` / ``diverged`` with ``ahead_by``, ``behind_by``,
``total_commits``, ``commits`` and ``merge_base_commit``; an unknown ref or repo is 404.
``fail_with`` makes every commits/compare request answer that status (an outage).

With ``app_public_key`` (PEM) set it is also a GitHub App's API, in GitHub's shapes: ``GET
/repos/{o}/{n}/installation`` and ``POST /app/installations/{id}/access_tokens`` take the
app's RS256 JWT (checked against the key, ``iss`` = ``app_id``) and mint ``ghs_…`` tokens;
``DELETE /installation/token`` revokes the token it is called with (204).

The GitHub loop's routes (issues, labels, comments, collaborators, pulls, reviews, check runs,
ETags, rate limits, faults) are in ``tests.fakes.github_loop`` (its docstring lists the knobs);
``GET /repos/{o}/{n}/pulls`` lists the pull requests added with ``add_pull`` or created by a
POST (``existing`` still wins). ``comment_requests()`` are the comment POSTs as requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.github_loop import DROP, LoopRoutes
from tests.fakes.server import FakeServer

PULLS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls$")
COMMENTS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/issues/(?P<number>\d+)/comments$")
COMMIT = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/commits/(?P<ref>[^/]+)$")
COMPARE = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/compare/(?P<base>.+)\.\.\.(?P<head>[^/.]+)$")
NOT_FOUND = {
    "message": "Not Found",
    "documentation_url": "https://docs.github.com/rest",
    "status": "404",
}
INSTALLATION = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/installation$")
ACCESS_TOKENS = re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$")
INSTALLATION_ID = 4242


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    reply_headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # a fault: close the connection instead of answering


class FakeGitHub(LoopRoutes, FakeServer):
    def __init__(self, *, first_number: int = 7, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[Request] = []
        self.next_number = first_number
        self.existing: dict[str, Any] | None = None
        self.refuse_pulls: int | None = None
        self.repos: dict[str, dict[str, list[str]]] = {}
        self.fail_with: int | None = None
        self.app_id = "12345"
        self.app_public_key: str | None = None
        self.minted: dict[str, dict[str, Any]] = {}  # token -> the POST body it was minted for
        self.revoked: list[str] = []
        self._lock = threading.Lock()
        self._loop_init()
        super().__init__(host=host, port=port)

    @property
    def url(self) -> str:
        return self.base

    def comment_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and COMMENTS.match(r.path)]

    def pulls_created(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and PULLS.match(r.path)]

    def _app_jwt_valid(self, authorization: str | None) -> bool:
        import jwt  # PyJWT: only the App routes need it

        if not self.app_public_key or not (authorization or "").startswith("Bearer "):
            return False
        try:
            claims = jwt.decode(
                (authorization or "")[7:],
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError:
            return False
        return str(claims["iss"]) == self.app_id and claims["exp"] - claims["iat"] <= 660

    def _handle_app(self, request: Request) -> tuple[int, Any] | None:
        """The App routes (``None``: not one of them)."""
        if request.method == "DELETE" and request.path == "/installation/token":
            token = (request.authorization or "")[7:]
            if token not in self.minted or token in self.revoked:
                return 401, {"message": "Bad credentials"}
            self.revoked.append(token)
            return 204, None
        installation, tokens = INSTALLATION.match(request.path), ACCESS_TOKENS.match(request.path)
        if not (installation or tokens):
            return None
        if not self._app_jwt_valid(request.authorization):
            return 401, {"message": "A JSON web token could not be decoded"}
        if installation and request.method == "GET":
            return 200, {
                "id": INSTALLATION_ID,
                "app_id": int(self.app_id),
                "account": {"login": installation["owner"]},
                "repository_selection": "all",
            }
        if tokens and request.method == "POST" and int(tokens["id"]) == INSTALLATION_ID:
            token = f"ghs_fake{len(self.minted) + 1:036d}"
            self.minted[token] = request.body or {}
            return 201, {
                "token": token,
                "expires_at": "2099-01-01T00:00:00Z",
                "permissions": (request.body or {}).get("permissions") or {},
                "repository_selection": "selected",
            }
        return 404, {"message": "Not Found"}

    def _handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            app = self._handle_app(request)
            if app is not None:
                return app
            if request.method == "GET" and (
                COMMIT.match(request.path) or COMPARE.match(request.path)
            ):
                if not (request.authorization or "").startswith("Bearer "):
                    return 401, {"message": "Requires authentication"}
                if self.fail_with:
                    return self.fail_with, {"message": "Server Error"}
                return self._commits(request.path)
            loop = self._handle_loop(request)
            if loop is not None:
                return loop
            match = PULLS.match(request.path)
            if not match:
                return 404, {"message": "Not Found"}
            if not (request.authorization or "").startswith("Bearer "):
                return 401, {"message": "Requires authentication"}
            if request.method == "GET":
                if self.existing:
                    return 200, [self.existing]
                limited = self._rate_limit(request)
                return limited or self._pulls_list(request, f"{match['owner']}/{match['name']}")
            if self.refuse_pulls:
                return self.refuse_pulls, {"message": "Resource not accessible by integration"}
            if self.existing:
                return 422, {
                    "message": "Validation Failed",
                    "errors": [{"message": "A pull request already exists"}],
                }
            number = self.next_number
            self.next_number += 1
            owner, name = match["owner"], match["name"]
            body = request.body or {}
            self.add_pull(
                f"{owner}/{name}",
                number,
                str(body.get("head") or ""),
                "",
                str(body.get("base") or "main"),
                title=str(body.get("title") or ""),
                body=str(body.get("body") or ""),
            )
            return 201, {
                "html_url": f"https://github.example/{owner}/{name}/pull/{number}",
                "number": number,
            }

    # -- commits ----------------------------------------------------------------------------

    def _history(self, repo: str, ref: str) -> list[str] | None:
        """The commits reachable from ``ref`` (a branch or a sha), oldest first."""
        branches = self.repos.get(repo, {})
        if ref in branches:
            return branches[ref]
        for history in branches.values():
            if ref in history:
                return history[: history.index(ref) + 1]
        return None

    def _commits(self, path: str) -> tuple[int, Any]:
        if match := COMMIT.match(path):
            repo, ref = match["repo"], match["ref"]
            if repo not in self.repos:
                return 404, NOT_FOUND
            history = self._history(repo, ref)
            if history is None:
                return 422, {
                    "message": f"No commit found for SHA: {ref}",
                    "documentation_url": "https://docs.github.com/rest/commits/commits#get-a-commit",
                    "status": "422",
                }
            return 200, _commit(repo, history[-1], history[-2] if len(history) > 1 else None)
        match = COMPARE.match(path)
        assert match is not None
        repo = match["repo"]
        base = self._history(repo, unquote(match["base"]))
        head = self._history(repo, match["head"])
        if base is None or head is None:
            return 404, NOT_FOUND
        ahead = [c for c in head if c not in base]
        behind = [c for c in base if c not in head]
        shared = [c for c in head if c in base]
        status = (
            "identical"
            if not ahead and not behind
            else "ahead"
            if not behind
            else "behind"
            if not ahead
            else "diverged"
        )
        return 200, {
            "url": f"{self.base}/repos/{repo}/compare/{match['base']}...{match['head']}",
            "status": status,
            "ahead_by": len(ahead),
            "behind_by": len(behind),
            "total_commits": len(ahead),
            "base_commit": _commit(repo, base[-1], None),
            "merge_base_commit": _commit(repo, shared[-1], None) if shared else None,
            "commits": [_commit(repo, c, None) for c in ahead],
            "files": [],
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                request = Request(
                    method,
                    parts.path,
                    parse_qs(parts.query),
                    body,
                    self.headers.get("Authorization"),
                    {k.lower(): v for k, v in self.headers.items()},
                )
                status, answer = fake._handle(request)
                if status == DROP or request.drop:  # a timeout fault: no answer at all
                    time.sleep(fake.timeout_sleep)
                    self.close_connection = True
                    return
                data = b"" if status in (204, 304) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in request.reply_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        return Handler


def _commit(repo: str, sha: str, parent: str | None) -> dict[str, Any]:
    """A commit as GitHub's REST API shows one (the fields Whim could read, and a few more)."""
    return {
        "sha": sha,
        "node_id": f"C_{sha[:12]}",
        "url": f"https://api.github.example/repos/{repo}/commits/{sha}",
        "html_url": f"https://github.example/{repo}/commit/{sha}",
        "commit": {
            "message": f"commit {sha[:7]}",
            "tree": {"sha": sha[::-1]},
            "author": {"name": "t", "email": "t@t", "date": "2024-01-01T00:00:00Z"},
            "committer": {"name": "t", "email": "t@t", "date": "2024-01-01T00:00:00Z"},
        },
        "parents": [{"sha": parent}] if parent else [],
    }
