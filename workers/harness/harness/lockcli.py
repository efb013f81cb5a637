"""``whim-lock FILE…`` / ``whim-unlock FILE…``: file locks for the agent inside the container.

``python3 -m harness.lockcli lock FILE…`` asks for all the files at once and prints the
orchestrator's JSON answer (``{acquired, conflictingWorker?, blockedFiles?}``); ``unlock``
releases them. Paths may be relative to the current directory or absolute inside the checkout;
they are sent repo-relative. The agent holds no worker token: it asks the harness through the
socket in ``WHIM_LOCK_SOCKET`` (``lockserver``), which checks the paths and asks the
orchestrator itself. Without that variable (a harness-side tool, tests) it calls the
orchestrator directly with ``ORCHESTRATOR_URL``, ``WORKER_ID`` and ``WORKER_TOKEN``.
``WHIM_REPO_DIR`` (set by the harness) is the checkout.

Exit codes: 0 locked (or unlocked), 1 blocked by another worker, 2 usage or callback error,
3 this worker has been fenced off.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import lockserver
from .client import OrchestratorClient
from .config import Config
from .errors import CallbackError, ConfigError, Fenced
from .logs import Logger
from .refs import repo_error

USAGE = "usage: python3 -m harness.lockcli lock|unlock FILE...  (whim-lock / whim-unlock FILE...)"


def repo_relative(path: str, *, repo_dir: Path, cwd: Path) -> str:
    """``path`` relative to the checkout's root; ValueError when it points outside it."""
    root = repo_dir.resolve()
    full = (cwd / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    relative = full.relative_to(root)  # raises ValueError outside the checkout
    if not relative.parts:
        raise ValueError(f"{path} is the checkout itself, not a file in it")
    return relative.as_posix()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    err = Logger("[whim-lock]", sys.stderr)
    if len(args) < 2 or args[0] not in {"lock", "unlock"}:
        err(USAGE)
        return 2
    action, paths = args[0], args[1:]
    socket_path = os.environ.get("WHIM_LOCK_SOCKET")
    if socket_path:
        return _through_harness(socket_path, action, paths, err)
    try:
        config = Config.from_env(
            {**os.environ, "WORK_ITEM_ID": os.environ.get("WORK_ITEM_ID") or "-"}
        )
    except ConfigError as exc:
        err(str(exc))
        return 2
    repo = os.environ.get("WHIM_REPO") or _repo_from_work_item(config)
    if not repo or repo_error(repo):
        err("WHIM_REPO is not set (owner/name)")
        return 2
    files = _checkout_paths(paths, Path(os.environ.get("WHIM_REPO_DIR") or config.checkout), err)
    if files is None:
        return 2
    client = OrchestratorClient(
        base_url=config.orchestrator_url,
        worker_id=config.worker_id,
        token=config.worker_token,
        retry_for=min(config.callback_retry_seconds, 60.0),
        log=err,
    )
    try:
        if action == "lock":
            answer = client.lock(repo=repo, files=files)
        else:
            answer = client.unlock(repo=repo, files=files)
    except Fenced as exc:
        err(str(exc))
        return 3
    except CallbackError as exc:
        err(str(exc))
        return 2
    print(json.dumps(answer), flush=True)
    if action == "lock":
        return 0 if isinstance(answer, dict) and answer.get("acquired") is True else 1
    return 0


def _checkout_paths(paths: list[str], repo_dir: Path, err: Logger) -> list[str] | None:
    """``paths`` relative to the checkout's root; None (said on stderr) if one is outside."""
    try:
        return [repo_relative(p, repo_dir=repo_dir, cwd=Path.cwd()) for p in paths]
    except ValueError as exc:
        err(f"not a file inside the checkout {repo_dir}: {exc}")
        return None


def _through_harness(socket_path: str, action: str, paths: list[str], err: Logger) -> int:
    files = _checkout_paths(paths, Path(os.environ.get("WHIM_REPO_DIR") or "/workspace/repo"), err)
    if files is None:
        return 2
    try:
        reply = lockserver.request(socket_path, action, files)
    except (OSError, ValueError) as exc:
        err(f"the harness did not answer on {socket_path}: {exc}")
        return 2
    code = reply.get("code")
    if "answer" in reply:
        print(json.dumps(reply["answer"]), flush=True)
    else:
        err(str(reply.get("error") or "refused"))
    return code if code in (0, 1, 2, 3) else 2


def _repo_from_work_item(config: Config) -> str | None:
    data = config.work_item_json
    return str(data.get("repo")) if isinstance(data, dict) and data.get("repo") else None


if __name__ == "__main__":
    raise SystemExit(main())
