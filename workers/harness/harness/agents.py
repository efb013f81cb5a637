"""Agents: the part that edits the checkout. A small registry, one abstract method each.

- ``mock``: works ``metadata.mockSeconds`` (default 2) seconds, bumping the iteration and token
  counts each second, then ends as ``metadata.mock`` says: ``success`` (default) appends
  ``whim mock change for <id>`` to ``metadata.mockFile`` (default ``WHIM_MOCK.md``), ``fail``
  raises ``AgentError``, ``stuck`` raises ``AgentStuck``. With ``metadata.mockLock`` it first
  locks that file with ``whim-lock`` (waiting while another worker holds it), as a careful
  agent would.
- ``command``: ``sh -c "$WHIM_AGENT_COMMAND"``, the spec on stdin, cwd = the checkout.
- ``claude``: ``claude -p --dangerously-skip-permissions``, spec on stdin.
- ``codex``: ``codex exec -``, spec on stdin.

A command agent succeeds by exiting 0; any other exit code is an ``AGENT_ERROR`` whose message
holds the last lines of its output — or ``RESOURCE_ERROR`` when the OOM killer ended it (exit
137 or -9 while the cgroup's ``oom_kill`` counter rose: ``resources.py``). A missing binary is a
``CONFIG_ERROR``.
"""

from __future__ import annotations

import abc
import collections
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from . import resources
from .config import Config, WorkItem
from .errors import AgentError, AgentStuck, Category, ConfigError, HarnessError
from .gitops import git_env
from .logs import Logger, mask
from .spawner import Spawner, SpawnError
from .state import AgentProcess, Children, Progress


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


class Agent(abc.ABC):
    """Edits ``ctx.workdir`` to implement the spec. Returns normally on success, raises
    ``AgentError`` on failure and ``AgentStuck`` when it gives up."""

    name: ClassVar[str]

    def __init__(self, config: Config) -> None:
        self.config = config

    @abc.abstractmethod
    def run(self, ctx: AgentContext) -> None: ...


_REGISTRY: dict[str, type[Agent]] = {}


def register(name: str) -> Callable[[type[Agent]], type[Agent]]:
    def wrap(cls: type[Agent]) -> type[Agent]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def agent_for(config: Config) -> Agent:
    """The agent ``WHIM_AGENT`` names."""
    try:
        factory = _REGISTRY[config.agent]
    except KeyError:
        raise ConfigError(f"unknown agent {config.agent!r}") from None
    return factory(config)


@register("mock")
class MockAgent(Agent):
    """A deterministic stand-in for an AI agent (see the module docstring)."""

    TOKENS_IN_PER_ITERATION = 100
    TOKENS_OUT_PER_ITERATION = 50

    def run(self, ctx: AgentContext) -> None:
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
    """Runs a command line in the checkout with the spec on stdin, streaming its output."""

    TAIL_LINES = 20

    @abc.abstractmethod
    def argv(self) -> list[str]: ...

    def run(self, ctx: AgentContext) -> None:
        argv = self.argv()
        if shutil.which(argv[0], path=ctx.env.get("PATH")) is None:
            raise ConfigError(f"agent {self.name}: {argv[0]!r} is not installed in this image")
        ctx.progress.update(iteration=1)
        ctx.log(f"agent {self.name}: starting {argv[0]}")
        ooms_before = resources.oom_kills(self.config.cgroup_dir)
        proc: AgentProcess
        if ctx.spawner is not None:  # as the agent user, through the supervisor
            try:
                proc = ctx.spawner.spawn(argv, cwd=ctx.workdir, env=ctx.env)
            except SpawnError as exc:
                raise AgentError(f"agent {self.name} could not be started: {exc}") from None
        else:
            proc = subprocess.Popen(
                argv,
                cwd=ctx.workdir,
                env=ctx.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so it can be killed whole
            )
        ctx.children.add(proc)
        tail: collections.deque[str] = collections.deque(maxlen=self.TAIL_LINES)
        threads = [
            threading.Thread(target=_feed, args=(proc, ctx.work_item.spec), daemon=True),
            threading.Thread(
                target=_pump, args=(proc, ctx.log.child("[agent]"), tail), daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            # Poll rather than block, so signal handlers run promptly in this (main) thread.
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            # Also after a clean exit: whatever it left running in the background must not
            # change the checkout while the harness locks, commits and pushes it.
            ctx.children.kill_all()
            ctx.children.discard(proc)
        for thread in threads:
            thread.join(timeout=5)
        if code != 0:
            last = mask("\n".join(tail))
            ooms_after = resources.oom_kills(self.config.cgroup_dir)
            if resources.killed_by_oom(code, before=ooms_before, after=ooms_after):
                raise HarnessError(
                    f"agent {self.name} was killed for running out of memory (exit {code}, "
                    f"the container's WORKER_MEMORY); last output:\n{last}",
                    category=Category.RESOURCE_ERROR,
                )
            raise AgentError(f"agent {self.name} exited with code {code}; last output:\n{last}")
        ctx.log(f"agent {self.name}: finished")


def _feed(proc: AgentProcess, spec: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(spec.encode("utf-8"))
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the agent does not read its stdin: fine


def _pump(proc: AgentProcess, log: Logger, tail: collections.deque[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        tail.append(line)
        log(line)


@register("command")
class ShellCommandAgent(CommandAgent):
    def argv(self) -> list[str]:
        assert self.config.agent_command is not None  # checked in Config.from_env
        return ["sh", "-c", self.config.agent_command]


@register("claude")
class ClaudeAgent(CommandAgent):
    def argv(self) -> list[str]:
        return ["claude", "-p", "--dangerously-skip-permissions"]


@register("codex")
class CodexAgent(CommandAgent):
    def argv(self) -> list[str]:
        return ["codex", "exec", "-"]
