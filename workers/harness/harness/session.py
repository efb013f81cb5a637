"""What both kinds of attempt share once registered: the checkout, the repository's settings,
the files shared with the agent, the learnings, running the agent and running the tests.

- ``prepare``: clone and check out (``checkout.py``); a branch that was already on the remote
  means this attempt resumes from its head: logged ("resumed from commit X") and reported in
  heartbeats as ``resumedFrom`` — one sent at once, as a resumed attempt may well end before
  the next periodic one (``HEARTBEAT_INTERVAL``), and ``complete`` does not carry it. Then
  ``.whim/config.toml`` and the metadata (``repoconfig.py``), ``.whim/spec.md``, and
  ``.whim/learnings.md`` from ``GET /api/learnings?repo=`` (a failure there is a warning,
  never fatal).
- ``invoke``: one agent invocation, after the cost check: when ``WHIM_COST_CAP_USD`` is set and
  this attempt has spent that much, ``CostCapReached`` (``COST_CAP``) instead.
- ``tests``: the setup and test commands (``testrun.py``), run as the agent user through the
  spawner, bounded by ``TEST_TIMEOUT``, with the agent's environment minus the model API keys.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from . import agents, learnings, procs, review, testrun
from .checkout import Checkout, checkout_prepare, private_file_read, private_file_write
from .client import OrchestratorClient
from .config import Config, WorkItem
from .errors import CallbackError, CostCapReached
from .logs import Logger, mask
from .prompts import LEARNINGS_FILE, NEW_LEARNINGS_FILE, SPEC_FILE
from .repoconfig import CONFIG_PATH, MAX_CONFIG_BYTES, RepoSettings, repo_settings_load
from .spawner import Spawner
from .state import Progress, children
from .supervisor import JUDGE_HOME_PREFIX, WORK_GID

# Not for the repository's tests: the agent's model credentials.
TEST_ENV_WITHHELD = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CODEX_API_KEY")

# A diff longer than this is cut before a reviewer reads it.
DIFF_CHARS = 150_000


class Session:
    def __init__(
        self,
        *,
        config: Config,
        item: WorkItem,
        client: OrchestratorClient,
        progress: Progress,
        spawner: Spawner | None,
        agent_env: dict[str, str],
        log: Logger,
    ) -> None:
        self.config = config
        self.item = item
        self.client = client
        self.progress = progress
        self.spawner = spawner
        self.agent_env = agent_env
        self.log = log
        self.checkout: Checkout | None = None
        self.settings: RepoSettings | None = None
        self.agent: agents.Agent | None = None
        self.has_learnings = False

    @property
    def repo(self) -> Checkout:
        assert self.checkout is not None
        return self.checkout

    @property
    def repo_settings(self) -> RepoSettings:
        assert self.settings is not None
        return self.settings

    # -- before the agent ------------------------------------------------------------------

    def prepare(
        self,
        *,
        spec: str | None,
        pushes: bool = True,
        must_exist: bool = False,
        default_only: bool = False,
        checkout: Checkout | None = None,
    ) -> None:
        """``spec`` None (a spec attempt): no ``.whim/spec.md`` is written (the agent writes
        it); ``default_only``: the default branch, checked out read only; ``checkout``: one
        made already (a review checks out a pull request's head)."""
        config, item = self.config, self.item
        self.checkout = checkout or checkout_prepare(
            config,
            item,
            log=self.log,
            pushes=pushes,
            must_exist=must_exist,
            default_only=default_only,
        )
        if self.checkout.existed:
            self.log(f"resumed from commit {self.checkout.start}")
            self.progress.update(resumed_from=self.checkout.start)
            self._heartbeat_now()
        self.settings = repo_settings_load(
            None,  # not the work branch's copy: an earlier attempt's agent may have pushed it
            data=self.checkout.default_file(CONFIG_PATH, limit=MAX_CONFIG_BYTES),
            metadata=item.metadata,
            config=config,
            max_iterations=item.max_iterations,
        )
        for warning in self.settings.warnings:
            self.log(f"warning: {warning}")
        self.agent = agents.agent_for(config, self.settings.agent)
        if self.settings.model:
            self.progress.update(model=self.settings.model)
        self.log(
            f"agent {self.settings.agent}"
            + (f" ({self.settings.model})" if self.settings.model else "")
            + f", at most {self.settings.max_iterations} iteration(s)"
        )
        if spec is not None:
            private_file_write(config.checkout, SPEC_FILE, spec.rstrip() + "\n")
        self._learnings_load()

    def _heartbeat_now(self) -> None:
        """One heartbeat from here, now (``Fenced`` stops the attempt as from any callback);
        one not delivered is left to the periodic ones."""
        try:
            self.client.heartbeat(self.progress.snapshot())
        except CallbackError as exc:
            self.log(f"heartbeat not delivered: {exc}")

    def _learnings_load(self) -> None:
        try:
            answer: Any = self.client.learnings(repo=self.item.repo)
        except CallbackError as exc:
            self.log(f"warning: could not load the repository's learnings: {exc}")
            return
        if not isinstance(answer, list):
            self.log("warning: the learnings answer is not a list; ignored")
            return
        items = [entry for entry in answer if isinstance(entry, dict)]
        if not items:
            return
        private_file_write(
            self.config.checkout, LEARNINGS_FILE, learnings.learnings_markdown(items)
        )
        self.has_learnings = True
        self.log(f"loaded {len(items)} learning(s) into {LEARNINGS_FILE}")

    # -- the agent -------------------------------------------------------------------------

    def context(self) -> agents.AgentContext:
        return agents.AgentContext(
            work_item=self.item,
            workdir=self.config.checkout,
            env=self.agent_env,
            progress=self.progress,
            children=children,
            log=self.log,
            spawner=self.spawner,
            model=self.repo_settings.model,
            idle_timeout=self.config.agent_idle_timeout,
        )

    def cost_check(self) -> None:
        cap = self.config.cost_cap_usd
        snap = self.progress.snapshot()
        price_in, price_out = self.config.token_prices
        # An agent that reports no cost (codex) is held to its tokens at the prices, as the
        # orchestrator's ledger charges it.
        spent = snap.cost_usd or (snap.tokens_in * price_in + snap.tokens_out * price_out) / 1e6
        if cap is not None and spent >= cap:
            raise CostCapReached(
                f"the cost cap is reached: this attempt spent ${spent:.4f} of the "
                f"${cap:.4f} it may (WHIM_COST_CAP_USD); the work so far is pushed"
            )

    def invoke(self, prompt: str, *, purpose: str, judge: bool = False) -> agents.Invocation:
        """One agent invocation. ``judge`` (review, verify): the agent-instruction files are
        put back as the default branch has them and the agent gets a fresh HOME, so the agent
        whose work is judged cannot steer its judge (DESIGN.md principle 9)."""
        self.cost_check()
        assert self.agent is not None
        ctx = self.context()
        if not judge:
            return self.agent.invoke(ctx, prompt, purpose=purpose)
        restored = self.repo.instructions_restore()
        if restored:
            self.log(f"judging with the default branch's agent instructions: {restored[:10]}")
        home = tempfile.mkdtemp(prefix=JUDGE_HOME_PREFIX.rsplit("/", 1)[1], dir="/tmp")
        try:
            os.chmod(home, 0o2770)  # noqa: S103  (the agent group only: the agent writes it)
            if self.spawner is not None:
                os.chown(home, -1, WORK_GID)
            ctx.env = {**ctx.env, "HOME": home, "WHIM_AGENT_HOME": home}
            return self.agent.invoke(ctx, prompt, purpose=purpose)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    # -- tests and learnings ---------------------------------------------------------------

    def review_diff(self, diff: str, ask_agent: Callable[[str], str]) -> review.ReviewOutcome:
        """The reviewer's findings on ``diff`` (cut to DIFF_CHARS) against the item's spec:
        WHIM_REVIEWER's reviewer, the agent with the model it works with or the Messages API
        with AI_REVIEW_MODEL. ``ask_agent`` runs the agent as a judge."""
        if len(diff) > DIFF_CHARS:
            diff = diff[:DIFF_CHARS] + "\n… (diff cut)"
        if self.config.reviewer == "anthropic":
            model = self.config.review_model
        else:  # the agent reviews with the model it works with
            model = self.repo_settings.model or self.progress.snapshot().model
            model = model or self.repo_settings.agent
        return review.review_run(
            reviewer=self.config.reviewer,
            spec=self.item.spec,
            diff=diff,
            model=model,
            api_url=self.config.anthropic_base_url,
            api_key=self.config.anthropic_api_key,
            ask_agent=ask_agent,
            log=self.log,
        )

    def run_as_agent(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """The tests' runner: as the agent user, never as the harness (untrusted code)."""
        env = {k: v for k, v in self.agent_env.items() if k not in TEST_ENV_WITHHELD}
        return procs.command_run(
            argv,
            cwd=self.config.checkout,
            env=env,
            spawner=self.spawner,
            children=children,
            timeout=timeout,
        )

    def tests(self) -> testrun.TestResult:
        settings = self.repo_settings
        command = settings.test_command or testrun.test_command_detect(self.config.checkout)
        result = testrun.tests_run(
            command=command,
            setup_command=settings.setup_command,
            checkout=self.config.checkout,
            timeout=self.config.test_timeout,
            runner=self.run_as_agent,
            log=self.log,
        )
        self.log(
            f"tests: {result.status} ({result.passed} passed, {result.failed} failed"
            f" of {result.run})" + (f": {mask(result.command)}" if result.command else "")
        )
        return result

    def learnings_collect(self) -> list[dict[str, Any]]:
        text = private_file_read(self.config.checkout, NEW_LEARNINGS_FILE)
        if not text.strip():
            return []
        found = learnings.learnings_parse(text, spec=self.item.spec)
        self.log(f"collected {len(found)} new learning(s)")
        return found
