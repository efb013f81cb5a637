"""The repository's tests after the loop: which command, running it, and what its output says.

``test_command_detect`` picks a command from the files in the checkout (pytest, ``npm test``,
``go test ./...``, ``cargo test``, ``make test``); ``tests_run`` runs the setup command and then
the test command through a runner the caller gives (the loop passes one that runs them as the
agent user: the repository's code is untrusted and never runs as the harness), bounded by one
deadline; ``test_summary_parse`` reads the counts from the summaries of pytest, jest, vitest,
node's test runner, mocha, go test and cargo test (``make test`` output is read with all of
them, and the counts of several runs in one output are added up).

Counts: ``run`` = passed + failed; skipped, todo and ignored tests are not counted as run.
pytest's errors count as failed, its xfailed and xpassed as passed. The exit code decides
between passed and failed, except that a summary reporting failures is a failure whatever the
exit code (``pytest || true`` in a Makefile does not make failing tests pass).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .logs import Logger, mask

TAIL_LINES = 80
TAIL_LINE_CHARS = 400
MAX_DETECT_BYTES = 1024 * 1024
PYTEST_MARKERS = ("pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini")
NPM_DEFAULT_TEST = "no test specified"  # npm init's `echo "Error: no test specified" && exit 1`
MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
MAKE_TEST_TARGET = re.compile(r"^test\s*:(?!=)", re.MULTILINE)
# Exit codes from sh: 126 the command is not executable, 127 it was not found.
NOT_RUNNABLE = (126, 127)
PYTEST_NO_TESTS = 5

Runner = Callable[[list[str], float], tuple[int | None, str]]


@dataclass(frozen=True)
class TestResult:
    """What one run of the repository's tests came to."""

    __test__ = False  # not a pytest test class, despite the name

    status: str  # passed | failed | timeout | skipped | error
    run: int
    passed: int
    failed: int
    command: str | None
    tail: str  # the last lines of the output, masked


# --- detection -------------------------------------------------------------------------------


def test_command_detect(checkout: Path) -> str | None:
    """The test command the checkout's files suggest, or None. Never follows a symlink out of
    the checkout, and reads at most ``MAX_DETECT_BYTES`` of any file."""
    if any(_is_file(checkout, name) for name in PYTEST_MARKERS) or _has_python_tests(checkout):
        return "python3 -m pytest"
    package = _read_small(checkout, "package.json")
    if package is not None and _npm_has_tests(package):
        return "npm test"
    if _is_file(checkout, "go.mod"):
        return "go test ./..."
    if _is_file(checkout, "Cargo.toml"):
        return "cargo test"
    for name in MAKEFILES:
        text = _read_small(checkout, name)
        if text is not None:
            # make reads the first of these it finds, so only that one counts.
            return "make test" if MAKE_TEST_TARGET.search(text) else None
    return None


test_command_detect.__test__ = False  # type: ignore[attr-defined]


def _inside(checkout: Path, name: str) -> Path | None:
    """``checkout/name`` resolved, if it exists and stays inside the checkout."""
    try:
        root = checkout.resolve(strict=True)
        path = (checkout / name).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return path if path.is_relative_to(root) else None


def _is_file(checkout: Path, name: str) -> bool:
    path = _inside(checkout, name)
    return path is not None and path.is_file()


def _read_small(checkout: Path, name: str) -> str | None:
    path = _inside(checkout, name)
    if path is None:
        return None
    try:
        # O_NONBLOCK: a FIFO planted by the agent must not hang the harness.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(MAX_DETECT_BYTES + 1)
    if len(data) > MAX_DETECT_BYTES:
        return None
    return data.decode("utf-8", errors="replace")


def _has_python_tests(checkout: Path) -> bool:
    for folder in ("tests", "test"):
        path = _inside(checkout, folder)
        if path is None or not path.is_dir():
            continue
        try:
            with os.scandir(path) as entries:
                for count, entry in enumerate(entries):
                    if count > 1000:
                        break
                    if entry.name.endswith(".py") and entry.is_file(follow_symlinks=False):
                        return True
        except OSError:
            continue
    return False


def _npm_has_tests(text: str) -> bool:
    try:
        package = json.loads(text)
    except ValueError:
        return False
    scripts = package.get("scripts") if isinstance(package, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    return isinstance(test, str) and bool(test.strip()) and NPM_DEFAULT_TEST not in test


# --- running ---------------------------------------------------------------------------------


def tests_run(
    *,
    command: str | None,
    setup_command: str | None,
    checkout: Path,
    timeout: float,
    runner: Runner,
    log: Logger,
) -> TestResult:
    """Run the setup command, then the test command, within ``timeout`` seconds in all.

    ``runner(argv, timeout)`` returns ``(exit code, combined output)``, exit code None when it
    timed out. No command: ``skipped``. The setup command failing, or a command that cannot be
    run at all (sh's 126/127): ``error``. Never raises for what the commands do.
    """
    if not command:
        log("tests: no test command configured or detected; skipped")
        return TestResult("skipped", 0, 0, 0, None, "")
    deadline = time.monotonic() + timeout
    if setup_command:
        log(f"tests: setup: {setup_command}")
        code, output = _run(runner, setup_command, checkout, deadline)
        if code is None:
            log(f"tests: setup timed out after {timeout:g}s")
            return TestResult("timeout", 0, 0, 0, command, _tail(output))
        if code != 0:
            log(f"tests: setup exited {code}")
            return TestResult("error", 0, 0, 0, command, _tail(output))
    log(f"tests: {command}")
    code, output = _run(runner, command, checkout, deadline)
    run, passed, failed = test_summary_parse(output)
    status = _status(code, output, failed)
    log(f"tests: {status} (exit {code}): {run} run, {passed} passed, {failed} failed")
    return TestResult(status, run, passed, failed, command, _tail(output))


def _run(runner: Runner, command: str, checkout: Path, deadline: float) -> tuple[int | None, str]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None, ""
    # The command is shell text (``npm ci && npm test``); sh runs it from the checkout whatever
    # the runner's working directory, with the checkout passed as an argument, not spliced in.
    argv = ["sh", "-c", 'cd -- "$1" || exit 126; eval "$2"', "whim-tests", str(checkout), command]
    try:
        return runner(argv, remaining)
    except OSError as exc:
        return 127, f"the command could not be started: {exc.strerror or exc}"


def _status(code: int | None, output: str, failed: int) -> str:
    if code is None:
        return "timeout"
    if code in NOT_RUNNABLE:
        return "error"
    if code == PYTEST_NO_TESTS and "no tests ran" in output:
        return "skipped"
    if code != 0 or failed > 0:
        return "failed"
    return "passed"


def _tail(output: str) -> str:
    lines = strip_ansi(output).rstrip().splitlines()[-TAIL_LINES:]
    cut = [line if len(line) <= TAIL_LINE_CHARS else line[:TAIL_LINE_CHARS] + "…" for line in lines]
    return mask("\n".join(cut))


# --- reading the summaries -------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
PYTEST = re.compile(
    r"^=*\s*(?P<body>\d+ [a-z]+(?:, \d+ [a-z]+)*) in \d+(?:\.\d+)?s(?: \([\d:]+\))?\s*=*$"
)
PYTEST_PASSED = ("passed", "xfailed", "xpassed")
PYTEST_FAILED = ("failed", "error", "errors")
JEST = re.compile(r"^Tests:\s+(?P<body>(?:\d+ [a-z]+, )*)\d+ total$")
VITEST = re.compile(r"^Tests\s+(?P<body>\d+ [a-z]+(?: \| \d+ [a-z]+)*) \(\d+\)$")
# node --test: the TAP reporter's "# pass 3", the spec reporter's "\u2139 pass 3" (info sign).
NODE_TEST = re.compile(r"^[#\u2139] (?P<word>pass|fail) (?P<count>\d+)$")
MOCHA = re.compile(r"^(?P<count>\d+) (?P<word>passing|failing)\b")
CARGO = re.compile(r"^test result: (?:ok|FAILED)\. (?P<passed>\d+) passed; (?P<failed>\d+) failed;")
GO_TEST = re.compile(r"^--- (?P<word>PASS|FAIL): ")  # top level only: subtests are indented
# The package lines go test prints: "ok  \t<pkg>\t0.01s" and "FAIL\t<pkg>\t0.01s" (a tab:
# jest's "FAIL src/a.test.js" uses a space).
GO_PACKAGE = re.compile(r"^(?P<word>ok  |FAIL)\t\S+")
COUNT_WORD = re.compile(r"(\d+) ([a-z]+)")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def test_summary_parse(output: str) -> tuple[int, int, int]:
    """(run, passed, failed) from every test summary found in ``output``, added up."""
    passed = failed = 0
    lines = strip_ansi(output).replace("\r", "\n").splitlines()
    for raw in lines:
        line = raw.strip()
        if match := PYTEST.match(line):
            counts = _counts(match["body"])
            passed += sum(counts.get(word, 0) for word in PYTEST_PASSED)
            failed += sum(counts.get(word, 0) for word in PYTEST_FAILED)
        elif (match := JEST.match(line)) or (match := VITEST.match(line)):
            counts = _counts(match["body"])
            passed += counts.get("passed", 0)
            failed += counts.get("failed", 0)
        elif (match := NODE_TEST.match(line)) or (match := MOCHA.match(line)):
            if match["word"].startswith("pass"):
                passed += int(match["count"])
            else:
                failed += int(match["count"])
        elif match := CARGO.match(line):
            passed += int(match["passed"])
            failed += int(match["failed"])
    go_passed, go_failed = _go_counts(lines)
    passed += go_passed
    failed += go_failed
    return passed + failed, passed, failed


test_summary_parse.__test__ = False  # type: ignore[attr-defined]


def _counts(body: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for number, word in COUNT_WORD.findall(body):
        counts[word] = counts.get(word, 0) + int(number)
    return counts


def _go_counts(lines: list[str]) -> tuple[int, int]:
    """go test lists a package's tests (failures only, without -v) and then its result line.
    A package line with no test lines before it stands for one test (passed or failed: a build
    failure has no test lines), so a quiet passing package still counts."""
    passed = failed = 0
    seen_passed = seen_failed = 0
    for line in lines:
        if match := GO_TEST.match(line):
            if match["word"] == "PASS":
                seen_passed += 1
            else:
                seen_failed += 1
        elif match := GO_PACKAGE.match(line):
            if match["word"] == "FAIL":
                failed += seen_failed or 1
                passed += seen_passed
            elif "[no tests to run]" not in line:
                passed += seen_passed or 1
                failed += seen_failed
            seen_passed = seen_failed = 0
    return passed + seen_passed, failed + seen_failed
