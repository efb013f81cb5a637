"""The environment contract between the orchestrator and the container, parsed once.

Required: ``ORCHESTRATOR_URL`` (callback base, e.g. ``http://172.18.0.1:8000/w/<token>``),
``WORKER_ID`` and ``WORK_ITEM`` (the API's WorkItem object as JSON; ``WORK_ITEM_ID`` alone also
works, and then the work item in the register answer is used). Usually given: ``WORKER_TOKEN``
(sent as a Bearer header).
Everything else has a default; see ``Config.from_env``. ``WORKER_TOKEN_FILE``,
``GITHUB_TOKEN_FILE`` and ``ANTHROPIC_API_KEY_FILE`` may name files holding the secrets instead.
The pipeline's knobs (``FIX_ITERATIONS``, ``TEST_TIMEOUT``, ``AGENT_IDLE_TIMEOUT``,
``WHIM_REVIEWER``, ``AI_REVIEW_MODEL``, ``ANTHROPIC_BASE_URL``, ``WHIM_COST_CAP_USD``,
``WORKER_MODE``) are passed through by the orchestrator from its settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .logs import add_secret
from .refs import DEFAULT_PROTECTED, branch_error, parse_globs, repo_error

AGENTS = ("claude", "codex", "command", "mock")
REVIEWERS = ("agent", "anthropic", "none")
WORKER_MODES = ("execution", "verification", "spec", "review")
# How many fix passes a repository (or an operator) may ask for at most: each is an agent run.
MAX_FIX_ITERATIONS = 20

SECRET_SUFFIXES = ("_TOKEN", "_API_KEY", "_SECRET", "_PASSWORD")


@dataclass(frozen=True)
class WorkItem:
    """The parts of the API's WorkItem object the harness uses."""

    id: str
    repo: str
    branch: str
    spec: str
    metadata: dict[str, Any] = field(default_factory=dict)
    max_iterations: int = 50
    # Where the item came from (source "github", sourceRef "issue:N" → "Closes #N"), its type
    # and, for a verification item, the pull request it verifies.
    source: str = ""
    source_ref: str = ""
    type: str = "execution"
    pr_number: int | None = None
    description: str = ""  # what a spec attempt writes the spec from

    @property
    def issue_number(self) -> int | None:
        """N when the item came from GitHub issue N (source ``github``, sourceRef ``issue:N``)."""
        ref = self.source_ref.strip()
        if self.source.strip().lower() != "github" or not ref.lower().startswith("issue:"):
            return None
        number = ref[len("issue:") :].strip().lstrip("#")
        return int(number) if number.isdigit() and 0 < len(number) <= 9 else None

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo.split("/", 1)[1]

    @classmethod
    def from_json(cls, data: Any, *, branch_optional: bool = False) -> WorkItem:
        """``branch_optional`` (a spec attempt): an item whose branch is not derived yet."""
        if not isinstance(data, dict):
            raise ConfigError("WORK_ITEM is not a JSON object")
        item_id = str(data.get("id") or "")
        repo = str(data.get("repo") or "")
        branch = str(data.get("branch") or "")
        spec = data.get("spec") or data.get("description") or ""
        metadata = data.get("metadata") or {}
        if not item_id:
            raise ConfigError("WORK_ITEM has no id")
        # The API's rules (refs.py), checked again because the values end up in git arguments
        # and URLs, and an item stored before the rules existed may still arrive. A bad name
        # is a CONFIG_ERROR, permanent: the item is part of this environment and a retry
        # would read the same stored name (not a CLONE_ERROR retried three times).
        problem = repo_error(repo)
        if problem:
            raise ConfigError(f"WORK_ITEM repo {repo!r}: {problem}")
        problem = branch_error(branch) if branch or not branch_optional else None
        if problem:
            raise ConfigError(f"WORK_ITEM branch {branch!r} is not a valid branch name: {problem}")
        if not isinstance(metadata, dict):
            raise ConfigError("WORK_ITEM metadata is not an object")
        try:
            max_iterations = int(data.get("maxIterations") or 50)
        except (TypeError, ValueError):
            raise ConfigError("WORK_ITEM maxIterations is not a number") from None
        pr_number = data.get("prNumber")
        return cls(
            id=item_id,
            repo=repo,
            branch=branch,
            spec=str(spec),
            metadata=metadata,
            max_iterations=max(1, max_iterations),
            source=str(data.get("source") or ""),
            source_ref=str(data.get("sourceRef") or ""),
            type=str(data.get("type") or "execution"),
            pr_number=pr_number if isinstance(pr_number, int) and pr_number > 0 else None,
            description=str(data.get("description") or ""),
        )


@dataclass(frozen=True)
class Config:
    """Every knob the harness reads, with its default."""

    orchestrator_url: str
    worker_id: str
    worker_token: str | None
    work_item_id: str
    work_item_json: Any | None
    agent: str = "mock"
    agent_command: str | None = None
    git_base_url: str = "https://github.com/"
    github_token: str | None = None
    github_api_url: str = "https://api.github.com"
    github_api_url_set: bool = False
    heartbeat_interval: float = 10.0
    lock_wait_seconds: float = 300.0
    callback_retry_seconds: float = 300.0
    author_name: str = "Whim"
    author_email: str = "whim@localhost"
    workspace: Path = Path("/workspace")
    protected_branches: tuple[str, ...] = DEFAULT_PROTECTED
    # Where the container's cgroup filesystem is (its OOM counter: resources.py).
    cgroup_dir: Path = Path("/sys/fs/cgroup")
    # The pipeline after the loop: fix passes for failing tests or a needs-work review, the
    # test command's time limit, and how long the agent may stay silent before it is stuck.
    fix_iterations: int = 2
    test_timeout: float = 900.0
    agent_idle_timeout: float = 600.0
    reviewer: str = "agent"
    review_model: str = "claude-sonnet-4-5"
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: str | None = None
    # What this attempt may still spend, in USD; None = no cap.
    cost_cap_usd: float | None = None
    # USD per million tokens in and out: what an agent that reports no cost is estimated at.
    token_prices: tuple[float, float] = (0.0, 0.0)
    worker_mode: str = "execution"
    spec_timeout: float = 600.0  # SPEC_TIMEOUT: how long a spec attempt's agent may run

    @property
    def verifying(self) -> bool:
        return self.worker_mode == "verification"

    @property
    def writing_spec(self) -> bool:
        return self.worker_mode == "spec"

    @property
    def pushes(self) -> bool:
        """Whether this attempt pushes (execution); verification, spec and review do not."""
        return self.worker_mode == "execution"

    @property
    def checkout(self) -> Path:
        return self.workspace / "repo"

    @property
    def git_is_local(self) -> bool:
        return self.git_base_url.startswith("file://")

    @property
    def git_is_github(self) -> bool:
        return (urlsplit(self.git_base_url).hostname or "").lower() == "github.com"

    @property
    def opens_pull_requests(self) -> bool:
        """A PR needs a token and a GitHub to talk to: github.com, or an explicit API URL."""
        return bool(self.github_token) and (self.git_is_github or self.github_api_url_set)

    def clone_url(self, repo: str) -> str:
        return f"{self.git_base_url}{repo}.git"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read and validate the environment; registers the secrets for masking first."""
        env = os.environ if env is None else env
        token = _secret(env, "WORKER_TOKEN")
        github_token = _secret(env, "GITHUB_TOKEN")
        url = env.get("ORCHESTRATOR_URL", "").strip()
        add_secret(token)
        add_secret(github_token)
        add_secret(_path_token(url))
        for name, value in env.items():
            # Whatever else looks like a credential (an agent's API key, say) is masked too.
            if name.endswith(SECRET_SUFFIXES) and len(value) >= 8:
                add_secret(value)
        if not url.startswith(("http://", "https://")):
            raise ConfigError("ORCHESTRATOR_URL must be an http(s) URL")
        worker_id = env.get("WORKER_ID", "").strip()
        if not worker_id:
            raise ConfigError("WORKER_ID is not set")
        raw_item = env.get("WORK_ITEM", "").strip()
        try:
            item_json = json.loads(raw_item) if raw_item else None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"WORK_ITEM is not valid JSON: {exc.msg}") from None
        item_id = str(item_json.get("id") or "") if isinstance(item_json, dict) else ""
        item_id = item_id or env.get("WORK_ITEM_ID", "").strip()
        if not item_id:
            raise ConfigError("neither WORK_ITEM (with an id) nor WORK_ITEM_ID is set")
        agent = (env.get("WHIM_AGENT") or "mock").strip().lower()
        if agent not in AGENTS:
            raise ConfigError(f"WHIM_AGENT {agent!r} is not one of {', '.join(AGENTS)}")
        command = env.get("WHIM_AGENT_COMMAND") or None
        if agent == "command" and not command:
            raise ConfigError("WHIM_AGENT=command needs WHIM_AGENT_COMMAND")
        base = env.get("WHIM_GIT_BASE_URL") or "https://github.com/"
        if not base.endswith("/"):
            base += "/"
        if not base.startswith(("https://", "http://", "file://", "ssh://", "git@")):
            raise ConfigError("WHIM_GIT_BASE_URL must be an https, http, ssh or file URL")
        api_url = (env.get("GITHUB_API_URL") or "").strip()
        anthropic_key = _secret(env, "ANTHROPIC_API_KEY")
        add_secret(anthropic_key)
        reviewer = (env.get("WHIM_REVIEWER") or "agent").strip().lower()
        if reviewer not in REVIEWERS:
            raise ConfigError(f"WHIM_REVIEWER {reviewer!r} is not one of {', '.join(REVIEWERS)}")
        mode = (env.get("WORKER_MODE") or "execution").strip().lower()
        if mode not in WORKER_MODES:
            raise ConfigError(f"WORKER_MODE {mode!r} is not one of {', '.join(WORKER_MODES)}")
        anthropic_url = (env.get("ANTHROPIC_BASE_URL") or "").strip() or "https://api.anthropic.com"
        if not anthropic_url.startswith(("https://", "http://")):
            raise ConfigError("ANTHROPIC_BASE_URL must be an http(s) URL")
        return cls(
            orchestrator_url=url.rstrip("/"),
            worker_id=worker_id,
            worker_token=token,
            work_item_id=item_id,
            work_item_json=item_json,
            agent=agent,
            agent_command=command,
            git_base_url=base,
            github_token=github_token,
            github_api_url=(api_url or "https://api.github.com").rstrip("/"),
            github_api_url_set=bool(api_url),
            heartbeat_interval=_seconds(env, "HEARTBEAT_INTERVAL", 10.0, minimum=0.05),
            lock_wait_seconds=_seconds(env, "LOCK_WAIT_SECONDS", 300.0, minimum=0.0),
            callback_retry_seconds=_seconds(env, "CALLBACK_RETRY_SECONDS", 300.0, minimum=0.0),
            author_name=env.get("WHIM_GIT_AUTHOR_NAME") or "Whim",
            author_email=env.get("WHIM_GIT_AUTHOR_EMAIL") or "whim@localhost",
            workspace=Path(env.get("WORKSPACE") or "/workspace"),
            protected_branches=parse_globs(env.get("WHIM_PROTECTED_BRANCHES")),
            cgroup_dir=Path(env.get("WHIM_CGROUP_DIR") or "/sys/fs/cgroup"),
            fix_iterations=_count(env, "FIX_ITERATIONS", 2, maximum=MAX_FIX_ITERATIONS),
            test_timeout=_seconds(env, "TEST_TIMEOUT", 900.0, minimum=1.0),
            agent_idle_timeout=_seconds(env, "AGENT_IDLE_TIMEOUT", 600.0, minimum=1.0),
            reviewer=reviewer,
            review_model=(env.get("AI_REVIEW_MODEL") or "").strip() or "claude-sonnet-4-5",
            anthropic_base_url=anthropic_url.rstrip("/"),
            anthropic_api_key=anthropic_key,
            cost_cap_usd=_cost_cap(env.get("WHIM_COST_CAP_USD")),
            token_prices=_prices(env.get("WHIM_TOKEN_PRICES")),
            worker_mode=mode,
            spec_timeout=_seconds(env, "SPEC_TIMEOUT", 600.0, minimum=1.0),
        )


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``NAME``, or the contents of the file ``NAME_FILE`` names."""
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if not value and path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE cannot be read: {exc.strerror}") from None
    return value.strip() if value else None


def _path_token(url: str) -> str | None:
    """The token carried in a ``.../w/<token>`` callback base URL, if any."""
    match = re.search(r"/w/([^/?#]+)", urlsplit(url).path)
    return match.group(1) if match else None


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    return max(minimum, value)


def _count(env: Mapping[str, str], name: str, default: int, *, maximum: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not 0 <= value <= maximum:
        raise ConfigError(f"{name} must be between 0 and {maximum}, not {value}")
    return value


def _cost_cap(raw: str | None) -> float | None:
    """``WHIM_COST_CAP_USD``: what the attempt may still spend; absent or empty = no cap. The
    orchestrator may send 0 or less (the item is already at its cap): nothing more may be spent."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"WHIM_COST_CAP_USD must be a number of dollars, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"WHIM_COST_CAP_USD must be a finite number, not {raw!r}")
    return max(0.0, value)


def _prices(raw: str | None) -> tuple[float, float]:
    """``WHIM_TOKEN_PRICES``: ``in,out`` USD per million tokens; absent = 0,0."""
    try:
        price_in, price_out = (float(part) for part in (raw or "0,0").split(","))
    except ValueError:
        raise ConfigError(f"WHIM_TOKEN_PRICES must be two numbers, in,out; not {raw!r}") from None
    if not all(0 <= price < float("inf") for price in (price_in, price_out)):
        raise ConfigError(f"WHIM_TOKEN_PRICES must be finite and at least 0, not {raw!r}")
    return price_in, price_out
