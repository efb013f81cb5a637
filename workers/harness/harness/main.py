"""One attempt at a work item, from inside its container.

1. Register: POST ``/api/worker/register {workItemId}``; start the heartbeat thread at once
   (POST ``heartbeat {iteration, tokensIn, tokensOut}`` every ``HEARTBEAT_INTERVAL`` seconds) so
   a slow clone is not mistaken for a dead worker.
2. Clone ``<WHIM_GIT_BASE_URL><owner>/<name>.git`` into ``$WORKSPACE/repo`` and check out the
   branch: track the remote branch when it exists, else start it from the default branch.
   A protected branch (``WHIM_PROTECTED_BRANCHES``) or the repository's default branch is
   refused before anything is pushed: ``fail`` with category ``POLICY_ERROR`` (permanent).
3. Heartbeats keep running until the final callback; a 409 on one stops the harness at once
   (exit 3, the agent killed, no further callbacks).
4. Run the agent (``WHIM_AGENT``: mock, command, claude, codex) in the checkout.
5. Collect the changed files (``git status``, untracked included, plus anything the agent
   committed itself) and lock them all in one call. Refused: ask again with backoff and
   jitter for up to ``LOCK_WAIT_SECONDS``, then POST ``stuck {reason, attempts}`` (exit 2).
   Nothing changed at all: POST ``fail`` with category ``NO_CHANGES`` (exit 1), since an
   attempt that produced nothing is not a completed task.
6. Commit (author ``WHIM_GIT_AUTHOR_NAME`` / ``_EMAIL``) and push to ``refs/heads/<branch>``.
7. With ``GITHUB_TOKEN`` and GitHub at hand (github.com clone URL or ``GITHUB_API_URL`` set),
   open the pull request, or find the one already open for the branch.
8. POST ``complete {prUrl?, prNumber?, metrics{tokensIn, tokensOut, duration, filesModified},
   commitSha, branch}``. Refused with 400 (the orchestrator does not see the commit on the
   branch, or a metric is out of bounds): POST ``fail`` with category ``PUSH_ERROR``.
9. Exit 0.

Any failure on the way: POST ``fail {error, iteration, category, stack?}`` (the stack only for
unexpected errors; nothing secret in either) and exit 1. The agent giving up: ``stuck``, exit 2.
A 409 on any callback: stop at once, exit 3. SIGTERM/SIGINT: the agent is killed and the attempt
reported as failed with category ``TERMINATED``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from . import agents, github, locking
from .client import OrchestratorClient
from .config import Config, WorkItem
from .errors import (
    AgentStuck,
    CallbackError,
    Category,
    ConfigError,
    Fenced,
    HarnessError,
    PolicyError,
    Terminated,
)
from .gitops import Git, git_env
from .heartbeat import Heartbeat
from .lockserver import LockServer
from .logs import Logger, log, mask
from .refs import protected_rule
from .spawner import Spawner
from .state import Progress, children
from .supervisor import WORK_GID

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STUCK = 2
EXIT_FENCED = 3

ERROR_CHARS = 4000
STACK_CHARS = 8000


class Attempt:
    """The state of one run of the harness; ``run`` returns the exit code."""

    def __init__(self, config: Config, *, log: Logger = log) -> None:
        self.config = config
        self.log = log
        self.started = time.monotonic()
        self.progress = Progress()
        self.client = OrchestratorClient(
            base_url=config.orchestrator_url,
            worker_id=config.worker_id,
            token=config.worker_token,
            retry_for=config.callback_retry_seconds,
            log=log,
        )
        self.heartbeat: Heartbeat | None = None
        self.finishing = False
        self.lock_server: LockServer | None = None
        # In the worker image, the supervisor starts agents as another user (supervisor.py).
        self.spawner = Spawner.from_env()

    # -- the outcome ------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        try:
            return self._run()
        except Fenced as exc:
            return self._fenced(str(exc))
        except AgentStuck as exc:
            return self._stuck(exc.reason, exc.attempts)
        except HarnessError as exc:
            return self._fail(exc.category, str(exc))
        except CallbackError as exc:
            return self._fail(Category.CALLBACK_ERROR, str(exc))
        except Exception as exc:
            stack = traceback.format_exc()
            return self._fail(Category.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", stack)
        finally:
            children.kill_all(grace=2)
            if self.lock_server is not None:
                self.lock_server.close()
            github.attempt_token_revoke(self.config, log=self.log)

    def _run(self) -> int:
        config = self.config
        # 1. Register, and heartbeat from now on.
        self.log(f"worker {config.worker_id}: registering for work item {config.work_item_id}")
        answer = self.client.register(work_item_id=config.work_item_id)
        item = WorkItem.from_json(
            config.work_item_json
            if config.work_item_json is not None
            else _field(answer, "workItem")
        )
        self._check_policy(item.branch, default=None)  # before a clone that would be wasted
        self.heartbeat = Heartbeat(
            client=self.client,
            progress=self.progress,
            interval=config.heartbeat_interval,
            on_fenced=self._fenced_from_heartbeat,
            log=self.log,
        )
        self.heartbeat.start()
        # The agent's way to lock files (whim-lock) without the worker token.
        self.lock_server = LockServer(
            path=Path(tempfile.gettempdir()) / f"whim-lock-{config.worker_id}" / "lock.sock",
            client=self.client,
            repo=item.repo,
            log=self.log,
            group=WORK_GID if self.spawner else None,
        )

        # 2. Clone and check out the branch.
        git = Git(
            workdir=config.checkout,
            env=git_env(
                base_url=config.git_base_url,
                token=config.github_token,
                author_name=config.author_name,
                author_email=config.author_email,
            ),
            local_remote=config.git_is_local,
            git_dir=config.workspace / ".whim-git",
        )
        if config.checkout.exists():
            shutil.rmtree(config.checkout)
        self.log(f"cloning {item.repo} from {_host(config.git_base_url)}")
        git.clone(config.clone_url(item.repo))
        default = git.default_branch()  # read before the agent runs: it cannot forge it
        self._check_policy(item.branch, default=default)
        existed = git.check_out(item.branch, default=default)
        start = git.head()
        self.log(
            f"on branch {item.branch} ("
            + ("tracking the remote branch" if existed else f"new, from {default}")
            + f") at {start[:12]}"
        )

        # 3./4. Run the agent (heartbeats carry its progress).
        agent = agents.agent_for(config)
        agent.run(
            agents.AgentContext(
                work_item=item,
                workdir=config.checkout,
                env=agents.agent_environment(
                    self.config,
                    item,
                    lock_socket=self.lock_server.path if self.lock_server else None,
                ),
                progress=self.progress,
                children=children,
                log=self.log,
                spawner=self.spawner,
            )
        )

        # 5. Lock every changed file, all or nothing.
        files = git.changed_files(start)
        if not files:
            raise HarnessError(
                "the agent finished without changing any file", category=Category.NO_CHANGES
            )
        self.log(f"{len(files)} changed file(s); locking them")
        locked = locking.files_lock(
            client=self.client,
            repo=item.repo,
            files=files,
            wait_seconds=config.lock_wait_seconds,
            log=self.log,
        )
        if not locked.acquired:
            return self._stuck(locked.reason(len(files)), locked.attempts)

        # 6. Commit and push.
        title = github.pr_title(item.spec, fallback=f"Whim: {item.branch}")
        if git.commit_all(f"{title}\n\nWhim work item {item.id}"):
            self.log("committed the changes")
        self._check_policy(item.branch, default=default)  # the last word before the push
        git.push(item.branch)
        sha = git.head()
        self.log(f"pushed {sha[:12]} to {item.branch}")

        # 7. Pull request.
        pull: github.PullRequest | None = None
        if config.opens_pull_requests and item.branch != default:
            assert config.github_token is not None
            pull = github.pull_request_open(
                api_url=config.github_api_url,
                token=config.github_token,
                owner=item.owner,
                name=item.name,
                head=item.branch,
                base=default,
                title=title,
                body=github.pr_body(item.spec, work_item_id=item.id),
                log=self.log,
            )
            self.log(f"pull request #{pull.number}: {pull.url}")

        # 8./9. Report and exit.
        return self._complete(files=files, sha=sha, branch=item.branch, pull=pull)

    def _check_policy(self, branch: str, *, default: str | None) -> None:
        """Refuse (POLICY_ERROR, permanent) a protected branch or the repository's default
        branch (compared regardless of case, like the globs): Whim's work reaches those
        only through a pull request that a person merges."""
        rule = protected_rule(branch, self.config.protected_branches)
        if rule is not None:
            raise PolicyError(
                f"branch {branch!r} is protected (WHIM_PROTECTED_BRANCHES rule {rule!r}); "
                "refusing to push to it"
            )
        if default is not None and branch.casefold() == default.casefold():
            raise PolicyError(
                f"branch {branch!r} is the repository's default branch; "
                "refusing to push to it (Whim's work reaches it only through a pull request)"
            )

    # -- final callbacks --------------------------------------------------------------------

    def _stop_heartbeat(self) -> None:
        self.finishing = True
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def _metrics(self, files_modified: int) -> dict[str, int]:
        snap = self.progress.snapshot()
        return {
            "tokensIn": snap.tokens_in,
            "tokensOut": snap.tokens_out,
            "duration": int((time.monotonic() - self.started) * 1000),
            "filesModified": files_modified,
        }

    def _complete(
        self, *, files: list[str], sha: str, branch: str, pull: github.PullRequest | None
    ) -> int:
        self._stop_heartbeat()
        body: dict[str, Any] = {
            "metrics": self._metrics(len(files)),
            "commitSha": sha,
            "branch": branch,
        }
        if pull is not None:
            body.update(prUrl=pull.url, prNumber=pull.number)
        try:
            self.client.complete(body)
        except Fenced as exc:
            return self._fenced(str(exc))
        except CallbackError as exc:
            if exc.status != 400:
                self.log(f"could not report complete: {exc}")
                return EXIT_FAILED
            # Refused (the orchestrator did not find the commit on the pushed branch, or a
            # metric out of bounds): the attempt failed; say so rather than exit silently.
            return self._fail(Category.PUSH_ERROR, f"the orchestrator refused complete: {exc}")
        self.log("reported complete")
        return EXIT_OK

    def _fail(self, category: str, error: str, stack: str | None = None) -> int:
        self._stop_heartbeat()
        self.log(f"failed ({category}): {error}")
        body: dict[str, Any] = {
            "error": mask(error)[:ERROR_CHARS],
            "iteration": self.progress.snapshot().iteration,
            "category": category,
        }
        if stack:
            body["stack"] = mask(stack)[-STACK_CHARS:]
        return self._final("fail", lambda: self.client.fail(body), EXIT_FAILED)

    def _stuck(self, reason: str, attempts: int) -> int:
        self._stop_heartbeat()
        self.log(f"stuck: {reason}")
        return self._final(
            "stuck", lambda: self.client.stuck(reason=reason, attempts=attempts), EXIT_STUCK
        )

    def _final(self, what: str, send: Any, code: int) -> int:
        try:
            send()
        except Fenced as exc:
            return self._fenced(str(exc))
        except CallbackError as exc:
            self.log(f"could not report {what}: {exc}")
            return EXIT_FAILED
        self.log(f"reported {what}")
        return code

    def _fenced(self, message: str) -> int:
        self.finishing = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.log(f"fenced off by the orchestrator, stopping: {message}")
        return EXIT_FENCED

    def _fenced_from_heartbeat(self, message: str) -> None:
        """Runs in the heartbeat thread: take the agent down and leave the process now."""
        self.log(f"fenced off by the orchestrator (heartbeat), stopping at once: {message}")
        children.kill_all(grace=2)
        sys.stdout.flush()
        os._exit(EXIT_FENCED)

    # -- signals ----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.finishing:
                self.log(f"{name} while reporting the outcome; finishing that first")
                return
            raise Terminated(f"received {name}")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _field(answer: Any, name: str) -> Any:
    return answer.get(name) if isinstance(answer, dict) else None


def _host(url: str) -> str:
    """A URL fit for a log line: scheme and host, no credentials, no path."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path if parts.scheme == 'file' else ''}"


def _report_unusable_config(error: ConfigError) -> int:
    """Config failed: report it if there is enough to reach the orchestrator, then exit 1."""
    log(f"configuration error: {error}")
    url = os.environ.get("ORCHESTRATOR_URL", "").rstrip("/")
    worker_id = os.environ.get("WORKER_ID", "")
    if not url.startswith(("http://", "https://")) or not worker_id:
        log("cannot report it: ORCHESTRATOR_URL or WORKER_ID is missing")
        return EXIT_FAILED
    client = OrchestratorClient(
        base_url=url,
        worker_id=worker_id,
        token=os.environ.get("WORKER_TOKEN") or None,
        retry_for=60.0,
        log=log,
    )
    body = {"error": mask(str(error)), "iteration": 0, "category": error.category}
    try:
        client.fail(body)
    except Fenced:
        return EXIT_FENCED
    except CallbackError as exc:
        log(f"could not report the failure: {exc}")
    return EXIT_FAILED


def main() -> int:
    """Entry point of ``python3 -m harness``."""
    try:
        config = Config.from_env()
    except ConfigError as exc:
        return _report_unusable_config(exc)
    code = Attempt(config).run()
    log(f"exit {code}")
    return code
