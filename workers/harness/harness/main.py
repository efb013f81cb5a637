"""One attempt at a work item, from inside its container: the entry point and the outcome.

1. Register: POST ``/api/worker/register {workItemId}``; start the heartbeat thread at once
   (POST ``heartbeat {iteration, tokensIn, tokensOut, costUsd, model, resumedFrom?}`` every
   ``HEARTBEAT_INTERVAL`` seconds) so a slow clone is not mistaken for a dead worker. A 409 on
   a heartbeat stops the harness at once (exit 3, the agent killed, no further callbacks).
2. The attempt's steps (``session.py`` prepares, then by ``WORKER_MODE``):
   - execution (``pipeline.py``): clone and check out the branch (resuming from it when it was
     already pushed), the repository's settings, ``.whim/spec.md`` and the learnings; the loop
     of agent iterations, each committed and pushed; tests and fix passes; self-review and its
     fix pass; the pull request with the review as a comment;
   - verification (``verify.py``): check out the pushed branch, run the tests, ask the agent
     for a verdict; nothing committed;
   - spec (``spec.py``): clone the default branch, read only, and have the agent write the
     spec of a ``generating`` item; ``complete {spec, metrics}``, nothing committed;
   - review (``prreview.py``): check out a pull request's head, review its diff; nothing
     committed.
3. POST ``complete {prUrl?, prNumber?, commitSha, branch, metrics{tokensIn, tokensOut,
   costUsd, duration, filesModified, testsRun, testsPassed, testsFailed, testStatus,
   iterations}, model?, review?, verificationEnabled | verificationPassed, learnings?,
   warning?}``. Refused with 400 (the orchestrator does not see the commit on the branch, or a
   metric is out of bounds): POST ``fail`` with category ``PUSH_ERROR``. Exit 0.

Any failure on the way: POST ``fail {error, iteration, category, stack?}`` (the stack only for
unexpected errors; nothing secret in either) and exit 1 — ``COST_CAP`` when the per-attempt
cost cap was reached (the work so far pushed). The agent giving up, going silent for
``AGENT_IDLE_TIMEOUT`` or the locks never coming: ``stuck``, exit 2. Before any of these final
callbacks, one last heartbeat goes out if the progress moved since the last one (so what the
attempt spent is charged and the commit it resumed from recorded). A 409 on any callback: stop
at once, exit 3. SIGTERM/SIGINT: the agent is killed and the attempt reported as failed
with category ``TERMINATED``.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from . import agents, github
from .checkout import policy_check
from .client import OrchestratorClient
from .config import Config, WorkItem
from .errors import (
    AgentStuck,
    CallbackError,
    Category,
    ConfigError,
    Fenced,
    HarnessError,
    Terminated,
)
from .heartbeat import Heartbeat
from .lockserver import LockServer
from .logs import Logger, log, mask
from .pipeline import Execution
from .prreview import pull_review_run
from .session import Session
from .spawner import Spawner
from .spec import spec_run
from .state import Progress, children
from .supervisor import WORK_GID
from .verify import verification_run

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
            else _field(answer, "workItem"),
            branch_optional=config.writing_spec,
        )
        if config.pushes:  # before a clone that would be wasted
            policy_check(item.branch, protected=config.protected_branches, default=None)
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
        session = Session(
            config=config,
            item=item,
            client=self.client,
            progress=self.progress,
            spawner=self.spawner,
            agent_env=agents.agent_environment(
                config, item, lock_socket=self.lock_server.path if self.lock_server else None
            ),
            log=self.log,
        )
        # 2. The steps, by mode; 3. report.
        if config.verifying:
            return self._complete(verification_run(session))
        if config.writing_spec:
            return self._complete(spec_run(session))
        if config.worker_mode == "review":
            return self._complete(pull_review_run(session))
        return self._complete(Execution(session).run())

    # -- final callbacks --------------------------------------------------------------------

    def _stop_heartbeat(self) -> None:
        """Before the final callback: one last heartbeat reports the progress made since the
        last one (the spend, the commit resumed from), then none is sent any more."""
        self.finishing = True
        if self.heartbeat is not None:
            self.heartbeat.stop(report=True)

    def _metrics(self) -> dict[str, Any]:
        snap = self.progress.snapshot()
        return {
            "tokensIn": snap.tokens_in,
            "tokensOut": snap.tokens_out,
            "costUsd": snap.cost_usd,
            "duration": int((time.monotonic() - self.started) * 1000),
        }

    def _complete(self, body: dict[str, Any]) -> int:
        self._stop_heartbeat()
        body = {**body, "metrics": {**self._metrics(), **body.get("metrics", {})}}
        try:
            try:
                self.client.complete(body)
            except CallbackError as exc:
                # The model-written parts (review, learnings) refused or too large: the work
                # is pushed, so report it without them rather than fail the attempt.
                optional = {"review", "learnings"}
                named = set(exc.fields)
                if not (optional & body.keys()) or not (
                    exc.status == 413 or (exc.status == 400 and named and named <= optional)
                ):
                    raise
                self.log(f"complete refused with the review and learnings ({exc}); without them")
                note = f"review and learnings not stored: {str(exc)[:300]}"
                body = {k: v for k, v in body.items() if k not in ("review", "learnings")}
                body["warning"] = "; ".join(filter(None, [body.get("warning"), note]))[:2000]
                self.client.complete(body)
        except Fenced as exc:
            return self._fenced(str(exc))
        except CallbackError as exc:
            if self.config.writing_spec and exc.status in (400, 413):
                # The spec refused (too big, say): the agent's failure, retried or not there.
                return self._fail(Category.AGENT_ERROR, f"the orchestrator refused the spec: {exc}")
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
