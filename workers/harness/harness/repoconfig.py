"""Per-repository settings: ``.whim/config.toml``, overridden by item metadata.

When and where it is read: once per attempt, right after the clone, before the agent has run,
from the repository's DEFAULT branch (``Checkout.default_file``: what a person merged), not from
the work branch — a resumed attempt's branch head was pushed by an earlier attempt's agent, which
could otherwise turn off review, verification or the tests for the next one (DESIGN.md principle
9). Every value is still type-checked and bounded: the model name cannot pose as a command-line
option, the iteration count can only lower the item's ``maxIterations``, the file is capped in
size. ``repo_settings_load`` can also read a checkout's file (tests, tools): there a symlink that
leads outside the checkout (to a host file the harness could read) is refused, never followed.
The test and setup commands it names run as the agent user, like the agent itself.

Keys: ``test_command``, ``setup_command``, ``agent``, ``model``, ``max_iterations``, ``review``,
``verification``, ``fix_iterations``. Metadata overrides (the API's camelCase): ``testCommand``,
``setupCommand``, ``agent``, ``model``, ``review``, ``verification``, ``fixIterations``; a
``null`` there means "not set". An unknown key is a warning; a wrong type, an out-of-range value
or a file that is not TOML is a ``ConfigError`` (CONFIG_ERROR, permanent) naming the key or the
TOML error's line.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import AGENTS, MAX_FIX_ITERATIONS, Config
from .errors import ConfigError

CONFIG_PATH = ".whim/config.toml"
MAX_CONFIG_BYTES = 64 * 1024
MAX_COMMAND_CHARS = 2000
MAX_ITERATIONS = 1000
MAX_WARNINGS = 20
# A model name as the CLIs take it (``claude-sonnet-4-5``, ``gpt-5-codex``, ``openai/o3``,
# ``claude-opus-4@20250514``); never starting with "-", so it cannot pass for an option.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@\[\]+-]{0,99}")


@dataclass(frozen=True)
class RepoSettings:
    """What this attempt runs with, after the file, the metadata and the defaults."""

    agent: str
    model: str
    max_iterations: int
    test_command: str | None
    setup_command: str | None
    review: bool
    verification: bool
    fix_iterations: int
    warnings: tuple[str, ...] = ()


def repo_settings_load(
    checkout: Path | None,
    *,
    metadata: Mapping[str, Any],
    config: Config,
    max_iterations: int,
    data: bytes | None = None,
) -> RepoSettings:
    """The settings for this attempt: defaults, then ``.whim/config.toml``, then metadata.

    The file is ``data`` when ``checkout`` is None (the default branch's copy, read by the
    caller; None: there is none), else read from ``checkout``. Raises ``ConfigError`` for a
    file that cannot be read as TOML or a value of the wrong kind.
    """
    values: dict[str, Any] = {
        "agent": config.agent,
        "model": "",
        "max_iterations": max_iterations,
        "test_command": None,
        "setup_command": None,
        "review": True,
        "verification": False,
        "fix_iterations": config.fix_iterations,
    }
    warnings: list[str] = []
    table = _read_table(checkout) if checkout is not None else _parse(data)
    for key, raw in table.items():
        check = CHECKS.get(key)
        if check is None:
            if len(warnings) < MAX_WARNINGS:
                warnings.append(f"{CONFIG_PATH}: unknown key {_shown(key)} ignored")
            continue
        values[key] = check(raw, f"{CONFIG_PATH}: {key}")
    for key, name in METADATA_KEYS.items():
        raw = metadata.get(name)
        if raw is not None:
            values[key] = CHECKS[key](raw, f"metadata {name}")
    if values["agent"] == "command" and not config.agent_command:
        raise ConfigError("agent 'command' needs WHIM_AGENT_COMMAND, which is not set")
    return RepoSettings(
        agent=values["agent"],
        model=values["model"],
        # The item's maxIterations is the operator's bound: the repository may only lower it.
        max_iterations=max(1, min(values["max_iterations"], max_iterations)),
        test_command=values["test_command"],
        setup_command=values["setup_command"],
        review=values["review"],
        verification=values["verification"],
        fix_iterations=values["fix_iterations"],
        warnings=tuple(warnings),
    )


def _read_table(checkout: Path) -> dict[str, Any]:
    """The parsed file, or ``{}`` when there is none."""
    path = checkout / CONFIG_PATH
    if not os.path.lexists(path):
        return {}
    try:
        root = checkout.resolve(strict=True)
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link or a loop
        raise ConfigError(f"{CONFIG_PATH} is a symlink that leads nowhere") from None
    if not target.is_relative_to(root):
        raise ConfigError(f"{CONFIG_PATH} is a symlink that leads outside the repository")
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the harness before the check below.
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ConfigError(f"{CONFIG_PATH} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ConfigError(f"{CONFIG_PATH} is not a regular file")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    return _parse(data)


def _parse(data: bytes | None) -> dict[str, Any]:
    """The file's bytes as a table (``{}`` for no file): bounded, UTF-8, TOML."""
    if data is None:
        return {}
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{CONFIG_PATH} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{CONFIG_PATH} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message is the parser's own ("Invalid value (at line 3, column 9)"): no content.
        raise ConfigError(f"{CONFIG_PATH} is not valid TOML: {exc}") from None


def _shown(key: str) -> str:
    """A key as it may appear in the log: bounded, printable."""
    cut = key[:60] + ("…" if len(key) > 60 else "")
    return repr(cut)


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "a " + ("table" if isinstance(value, dict) else type(value).__name__)
    )


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {_kind(value)}")
    return value


def _int(lowest: int, highest: int) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        # bool is a subclass of int in Python; ``review = true`` is not a count.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {_kind(value)}")
        if not lowest <= value <= highest:
            raise ConfigError(f"{where} must be between {lowest} and {highest}, not {value}")
        return value

    return check


def _command(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {_kind(value)}")
    command = value.strip()
    if not command:
        raise ConfigError(f"{where} must not be empty")
    if len(command) > MAX_COMMAND_CHARS:
        raise ConfigError(f"{where} is longer than {MAX_COMMAND_CHARS} characters")
    if any(ch in command for ch in "\n\r\0"):
        raise ConfigError(f"{where} must be a single line")
    return command


def _agent(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {_kind(value)}")
    agent = value.strip().lower()
    if agent not in AGENTS:
        raise ConfigError(f"{where} must be one of {', '.join(AGENTS)}")
    return agent


def _model(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {_kind(value)}")
    model = value.strip()
    if model and not MODEL_NAME.fullmatch(model):
        raise ConfigError(
            f"{where} must be a model name of at most 100 letters, digits and ._:/@+-"
            " (not starting with -)"
        )
    return model


CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "test_command": _command,
    "setup_command": _command,
    "agent": _agent,
    "model": _model,
    "max_iterations": _int(1, MAX_ITERATIONS),
    "review": _bool,
    "verification": _bool,
    "fix_iterations": _int(0, MAX_FIX_ITERATIONS),
}

METADATA_KEYS = {
    "test_command": "testCommand",
    "setup_command": "setupCommand",
    "agent": "agent",
    "model": "model",
    "review": "review",
    "verification": "verification",
    "fix_iterations": "fixIterations",
}
