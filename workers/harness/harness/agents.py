"""Agents: the part that edits the checkout. One ``invoke`` is one iteration of the loop.

``invoke(ctx, prompt, purpose=...)`` runs the agent once with the prompt on its stdin and
returns an ``Invocation``: its answer's text, the tokens and cost of this invocation, the model,
the exit code and whether it spoke a known stream format. Progress (tokens, cost, model) is
updated as its output arrives, so heartbeats carry it while it runs.

- ``claude``: ``claude -p --dangerously-skip-permissions --output-format stream-json --verbose``
  (``--model X`` when the repo or item names one); every line parsed (``streams.py``).
- ``codex``: ``codex exec --json --dangerously-bypass-approvals-and-sandbox [-m X] -``.
- ``command``: ``sh -c "$WHIM_AGENT_COMMAND"``. It may print Claude Code's (or codex's) stream
  lines to report usage and take part in the loop; a command that prints none is a one-shot
  script: the loop ends after it (``structured`` False).
- ``mock``: works ``metadata.mockSeconds`` (default 2) seconds, bumping the iteration and token
  counts each second, then ends as ``metadata.mock`` says: ``success`` (default) appends
  ``whim mock change for <id>`` to ``metadata.mockFile`` (default ``WHIM_MOCK.md``) and promises
  completion, ``fail`` raises ``AgentError``, ``stuck`` raises ``AgentStuck``. With
  ``metadata.mockLock`` it first locks that file with ``whim-lock``. Asked to review, it answers
  aligned/good findings; asked to verify, ``[VERIFY:RESULT] PASS``; asked for a spec, one task
  named after the description's first line.

A command agent's non-zero exit is an ``AGENT_ERROR`` whose message holds the last lines of its
output — or ``RESOURCE_ERROR`` when the OOM killer ended it (exit 137 or -9 while the cgroup's
``oom_kill`` counter rose: ``resources.py``); so is a result event with ``is_error``, and a
claude/codex run that printed no event at all (garbage or nothing). No output line for
``AGENT_IDLE_TIMEOUT`` seconds: its process group is killed and ``AgentStuck`` raised. A missing
binary is a ``CONFIG_ERROR``. Agent processes start through ``procs.py`` (as the agent user in
the worker image).
"""

from __future__ import annotations

import abc
import collections
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from . import procs, resources
from .config import Config, WorkItem
from .errors import AgentError, AgentStuck, Category, ConfigError, HarnessError
from .gitops import git_env
from .logs import Logger, mask
from .prompts import PROMISE
from .spawner import Spawner, SpawnError
from .state import Children, Progress
from .streams import StreamState


@dataclass
class AgentContext:
    """What an agent gets: the work item, the checkout and where to report progress."""

    work_item: WorkItem
    workdir: Path
    env: dict[str, str]
    progress: Progress
    children: Children
    log: Logger
    # Starts agent processes as the agent user (supervisor.py); None: as the harness itself.
    spawner: Spawner | None = None
    model: str = ""  # the repo's or item's choice; "" = the CLI's default
    idle_timeout: float = 600.0  # AGENT_IDLE_TIMEOUT


@dataclass(frozen=True)
class Invocation:
    """One agent run: its answer and what it cost (this invocation alone)."""

    text: str  # the final answer (result / last messages), then lines that were not events
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model: str = ""
    is_error: bool = False
    exit_code: int = 0
    structured: bool = True  # it spoke a stream format (False: a one-shot script)

    @property
    def promised(self) -> bool:
        # In its answer (the result event, the last message), not anywhere it was quoted.
        return PROMISE in self.text


class Agent(abc.ABC):
    """Runs once per ``invoke``. Returns an ``Invocation``; raises ``AgentError`` on failure and
    ``AgentStuck`` when it gives up or goes silent."""

    name: ClassVar[str]

    def __init__(self, config: Config) -> None:
        self.config = config

    @abc.abstractmethod
    def invoke(self, ctx: AgentContext, prompt: str, *, purpose: str = "work") -> Invocation:
        """``purpose``: work, fix, review or verify (only the mock looks at it)."""


_REGISTRY: dict[str, type[Agent]] = {}


def register(name: str) -> Callable[[type[Agent]], type[Agent]]:
    def wrap(cls: type[Agent]) -> type[Agent]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def agent_for(config: Config, name: str | None = None) -> Agent:
    """The agent ``name`` (the repo's or item's choice) or else ``WHIM_AGENT`` names."""
    chosen = name or config.agent
    try:
        factory = _REGISTRY[chosen]
    except KeyError:
        raise ConfigError(f"unknown agent {chosen!r}") from None
    if chosen == "command" and not config.agent_command:
        raise ConfigError("agent 'command' needs WHIM_AGENT_COMMAND")
    return factory(config)


MOCK_FINDINGS = {
    "specAlignment": {"score": "aligned", "summary": "mock review", "gaps": [], "extras": []},
    "codeQuality": {"score": "good", "summary": "mock review", "concerns": []},
    "overallSummary": "The mock agent's change does what the mock spec asks.",
}


@register("mock")
class MockAgent(Agent):
    """A deterministic stand-in for an AI agent (see the module docstring)."""

    TOKENS_IN_PER_ITERATION = 100
    TOKENS_OUT_PER_ITERATION = 50

    def invoke(self, ctx: AgentContext, prompt: str, *, purpose: str = "work") -> Invocation:
        if purpose == "review":
            return Invocation(text=json.dumps(MOCK_FINDINGS), model="mock")
        if purpose == "verify":
            text = '[VERIFY:RESULT] {"passed": true, "summary": "mock verification"}'
            return Invocation(text=text, model="mock")
        if purpose == "spec":
            lines = [ln.strip() for ln in ctx.work_item.description.splitlines() if ln.strip()]
            title = (lines[0].lstrip("#").strip() if lines else "") or "Mock task"
            text = f"# {title}\n\n## Tasks\n\n- [ ] {title}\n"
            return Invocation(text=text, model="mock")
        meta = ctx.work_item.metadata
        mode = str(meta.get("mock") or "success")
        if mode not in {"success", "fail", "stuck"}:
            raise ConfigError(f"metadata.mock {mode!r} is not success, fail or stuck")
        try:
            seconds = min(max(float(meta.get("mockSeconds", 2)), 0.0), 3600.0)
        except (TypeError, ValueError):
            raise ConfigError("metadata.mockSeconds is not a number") from None
        target = _mock_file(meta.get("mockFile"))
        ctx.log(f"mock agent: mode {mode}, {seconds:g}s")
        if mode == "success" and meta.get("mockLock"):
            # As a careful agent would: lock the file before working on it (whim-lock).
            self._lock(ctx, str(target))

        iteration = 0
        deadline = time.monotonic() + seconds
        while True:
            iteration = min(iteration + 1, ctx.work_item.max_iterations)
            ctx.progress.update(
                iteration=iteration,
                tokens_in=self.TOKENS_IN_PER_ITERATION,
                tokens_out=self.TOKENS_OUT_PER_ITERATION,
            )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(1.0, remaining))

        if mode == "fail":
            raise AgentError("mock agent failed (metadata.mock=fail)")
        if mode == "stuck":
            raise AgentStuck("mock agent is stuck (metadata.mock=stuck)", attempts=iteration)
        path = ctx.workdir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(f"whim mock change for {ctx.work_item.id}\n")
        ctx.log(f"mock agent: appended a line to {target}")
        return Invocation(
            text=f"appended a line to {target}\n{PROMISE}",
            tokens_in=self.TOKENS_IN_PER_ITERATION * iteration,
            tokens_out=self.TOKENS_OUT_PER_ITERATION * iteration,
            model="mock",
        )

    def _lock(self, ctx: AgentContext, path: str) -> None:
        """``whim-lock path``, asking again with backoff while another worker holds it."""
        deadline = time.monotonic() + self.config.lock_wait_seconds
        delay = 0.5
        while True:
            done = subprocess.run(
                ["whim-lock", path],
                cwd=ctx.workdir,
                env=ctx.env,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                ctx.log(f"mock agent: locked {path}")
                return
            if done.returncode != 1 or time.monotonic() + delay > deadline:
                raise AgentStuck(
                    f"mock agent could not lock {path}: {done.stdout.strip()}"[:500], attempts=1
                )
            ctx.log(f"mock agent: {path} is locked by another worker; waiting {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


# What the harness holds and the agent must not: the callback credentials and the GitHub token.
AGENT_ENV_WITHHELD = ("WORKER_TOKEN", "ORCHESTRATOR_URL", "GITHUB_TOKEN", "GITHUB_TOKEN_FILE")
BIN_DIR = Path(__file__).resolve().parent.parent / "bin"  # whim-lock, whim-unlock


def agent_environment(
    config: Config, item: WorkItem, *, lock_socket: Path | None
) -> dict[str, str]:
    """The agent's environment: git identity and the lock socket — never the worker token,
    the orchestrator's URL or the GitHub token. Run as another user (the worker image), the
    agent cannot read them from /proc either; run as the harness's own user (the local
    runtime), it could."""
    env = git_env(
        base_url=config.git_base_url,
        token=None,
        author_name=config.author_name,
        author_email=config.author_email,
    )
    for name in AGENT_ENV_WITHHELD:
        env.pop(name, None)
    env.update(
        WHIM_REPO=item.repo,
        WHIM_BRANCH=item.branch,
        WHIM_WORK_ITEM_ID=item.id,
        WHIM_REPO_DIR=str(config.checkout),
    )
    if lock_socket is not None:
        env["WHIM_LOCK_SOCKET"] = str(lock_socket)
    if BIN_DIR.is_dir():
        env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


def _mock_file(value: object) -> PurePosixPath:
    path = PurePosixPath(str(value or "WHIM_MOCK.md"))
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0] == ".git"):
        raise ConfigError(f"metadata.mockFile {str(path)!r} must be a path inside the repo")
    return path


class CommandAgent(Agent):
    """Runs a command line in the checkout with the prompt on stdin, reading its output as
    a stream (``streams.py``) while it runs: progress is updated line by line."""

    TAIL_LINES = 20
    stream_kind: ClassVar[str] = "auto"

    @abc.abstractmethod
    def argv(self, ctx: AgentContext) -> list[str]: ...

    def invoke(self, ctx: AgentContext, prompt: str, *, purpose: str = "work") -> Invocation:
        argv = self.argv(ctx)
        if shutil.which(argv[0], path=ctx.env.get("PATH")) is None:
            raise ConfigError(f"agent {self.name}: {argv[0]!r} is not installed in this image")
        ctx.log(f"agent {self.name}: starting {argv[0]} ({purpose})")
        ooms_before = resources.oom_kills(self.config.cgroup_dir)
        try:
            proc = procs.process_start(argv, cwd=ctx.workdir, env=ctx.env, spawner=ctx.spawner)
        except SpawnError as exc:
            raise AgentError(f"agent {self.name} could not be started: {exc}") from None
        ctx.children.add(proc)
        state = StreamState(kind=self.stream_kind)
        tail: collections.deque[str] = collections.deque(maxlen=self.TAIL_LINES)
        reported = [0, 0, 0.0]  # tokens in, out and cost already added to the progress
        lock = threading.Lock()
        agent_log = ctx.log.child("[agent]")

        def on_line(line: str) -> None:
            tail.append(line)
            agent_log(line)
            with lock:
                was_event = state.feed(line)
                if not was_event and line.lstrip().startswith("{"):
                    agent_log(f"(skipped a line that is not a {self.stream_kind} event)")
                delta = (
                    state.tokens_in - reported[0],
                    state.tokens_out - reported[1],
                    state.cost_usd - reported[2],
                )
                reported[:] = [state.tokens_in, state.tokens_out, state.cost_usd]
            ctx.progress.update(
                tokens_in=int(delta[0]),
                tokens_out=int(delta[1]),
                cost_usd=float(delta[2]),
                model=state.model or None,
            )

        running = procs.Running(proc, stdin=prompt.encode("utf-8"), on_line=on_line)
        try:
            outcome = running.wait(idle_timeout=ctx.idle_timeout)
        finally:
            # Also after a clean exit: whatever it left running in the background must not
            # change the checkout while the harness locks, commits and pushes it.
            ctx.children.kill_all(grace=2)
            ctx.children.discard(proc)
        running.drain()
        if outcome == "idle":
            raise AgentStuck(
                f"agent {self.name} printed nothing for {ctx.idle_timeout:g}s "
                "(AGENT_IDLE_TIMEOUT); it was stopped",
                attempts=ctx.progress.snapshot().iteration,
            )
        code = int(outcome)
        last = mask("\n".join(tail))
        if code != 0:
            ooms_after = resources.oom_kills(self.config.cgroup_dir)
            if resources.killed_by_oom(code, before=ooms_before, after=ooms_after):
                raise HarnessError(
                    f"agent {self.name} was killed for running out of memory (exit {code}, "
                    f"the container's WORKER_MEMORY); last output:\n{last}",
                    category=Category.RESOURCE_ERROR,
                )
            raise AgentError(f"agent {self.name} exited with code {code}; last output:\n{last}")
        if state.is_error:
            raise AgentError(f"agent {self.name} reported an error: {mask(state.error)}")
        if self.stream_kind != "auto" and state.events == 0:
            raise AgentError(
                f"agent {self.name} printed no {self.stream_kind} events (exit 0): its output "
                f"was not understood; last output:\n{last}"
            )
        if state.malformed and state.events:
            ctx.log(f"agent {self.name}: skipped {state.malformed} line(s) that were not events")
        ctx.log(
            f"agent {self.name}: finished ({state.tokens_in} tokens in, {state.tokens_out} out, "
            f"${state.cost_usd:.4f})"
        )
        return Invocation(
            text=state.text,
            tokens_in=state.tokens_in,
            tokens_out=state.tokens_out,
            cost_usd=state.cost_usd,
            model=state.model,
            is_error=state.is_error,
            exit_code=code,
            structured=state.events > 0,
        )


@register("command")
class ShellCommandAgent(CommandAgent):
    """``sh -c "$WHIM_AGENT_COMMAND"``: Claude Code's stream-json lines (or codex's) count as
    events; a command that prints none is a one-shot script (``structured`` False)."""

    def argv(self, ctx: AgentContext) -> list[str]:
        assert self.config.agent_command is not None  # checked in Config.from_env
        return ["sh", "-c", self.config.agent_command]


@register("claude")
class ClaudeAgent(CommandAgent):
    stream_kind = "claude"

    def argv(self, ctx: AgentContext) -> list[str]:
        argv = ["claude", "-p", "--dangerously-skip-permissions"]
        argv += ["--output-format", "stream-json", "--verbose"]
        return argv + (["--model", ctx.model] if ctx.model else [])


@register("codex")
class CodexAgent(CommandAgent):
    stream_kind = "codex"

    def argv(self, ctx: AgentContext) -> list[str]:
        # The container is the sandbox (and codex's own one may not work in it); approvals
        # have nobody to ask.
        model = ["-m", ctx.model] if ctx.model else []
        return [
            "codex",
            "exec",
            "--json",
            "--dangerously-bypass-approvals-and-sandbox",
            *model,
            "-",
        ]
