"""The agent's way to lock files without the worker token: a Unix socket the harness owns.

``whim-lock`` / ``whim-unlock`` (``lockcli``) send one JSON line, ``{"action": "lock" |
"unlock", "files": [repo-relative paths]}``, and get one back: ``{"code": 0|1|2|3,
"answer": …}`` or ``{"code": 2|3, "error": "…"}`` (the exit codes ``lockcli`` documents). The
harness checks every path is a plain path inside the checkout, then asks the orchestrator with
its own token, for its own repository. The socket's directory is the harness's, group
``whimwork``: the agent can connect, nothing else in the container can replace it.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import threading
from pathlib import Path
from typing import Any

from .client import OrchestratorClient
from .errors import CallbackError, Fenced
from .logs import Logger

MAX_REQUEST = 256 * 1024
MAX_FILES = 500


def checked_paths(files: object) -> list[str]:
    """``files`` as normalised repo-relative paths; ValueError naming the first bad one."""
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise ValueError(f"files must be a list of 1 to {MAX_FILES} paths")
    out: list[str] = []
    for path in files:
        if not isinstance(path, str) or not path or len(path) > 1000 or "\0" in path:
            raise ValueError(f"not a path: {path!r}"[:200])
        norm = posixpath.normpath(path)
        parts = norm.split("/")
        if norm.startswith("/") or parts[0] == ".." or norm == "." or ".git" in parts:
            raise ValueError(f"not a file inside the checkout: {path}"[:200])
        out.append(norm)
    return out


class LockServer:
    """Serves lock requests on ``path`` in a daemon thread until ``close``."""

    def __init__(
        self,
        *,
        path: Path,
        client: OrchestratorClient,
        repo: str,
        log: Logger,
        group: int | None = None,
    ) -> None:
        self.path, self.client, self.repo, self.log = path, client, repo, log
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if group is not None:
            os.chown(path.parent, -1, group)
        os.chmod(path.parent, 0o750)  # noqa: S103  (the agent's group may enter, not write)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o660)
        if group is not None:
            os.chown(path, -1, group)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, name="lock-server", daemon=True)
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                request = _read_line(conn)
                reply = self.answer(request)
            except (OSError, ValueError) as exc:
                reply = {"code": 2, "error": str(exc)[:500]}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def answer(self, request: Any) -> dict[str, Any]:
        """One request's reply (separate from the socket, for tests)."""
        if not isinstance(request, dict) or request.get("action") not in ("lock", "unlock"):
            return {"code": 2, "error": 'action must be "lock" or "unlock"'}
        try:
            files = checked_paths(request.get("files"))
        except ValueError as exc:
            return {"code": 2, "error": str(exc)}
        try:
            if request["action"] == "lock":
                answer = self.client.lock(repo=self.repo, files=files, retry_for=60.0)
                acquired = isinstance(answer, dict) and answer.get("acquired") is True
                return {"code": 0 if acquired else 1, "answer": answer}
            return {"code": 0, "answer": self.client.unlock(repo=self.repo, files=files)}
        except Fenced as exc:
            return {"code": 3, "error": str(exc)}
        except CallbackError as exc:
            return {"code": 2, "error": str(exc)}


def _read_line(conn: socket.socket) -> Any:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    return json.loads(data.decode("utf-8"))


def request(path: str, action: str, files: list[str]) -> dict[str, Any]:
    """The client side (``lockcli``): one request, one reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(120)
        conn.connect(path)
        conn.sendall(json.dumps({"action": action, "files": files}).encode() + b"\n")
        reply = _read_line(conn)
    return reply if isinstance(reply, dict) else {"code": 2, "error": "bad reply"}
