"""The repository's tests after the loop (issue 10): the command is detected from the checkout's
files, setup runs first, one deadline bounds both, and the counts are read from real summaries
of pytest, jest, vitest, node's test runner, go test and cargo test (tests/samples/testrun/:
captured from the tools themselves; go's from the format cmd/go prints)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from workers.harness.harness import testrun
from workers.harness.harness.logs import Logger, add_secret

SAMPLES = Path(__file__).parent / "samples" / "testrun"


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


# --- reading summaries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("pytest_failed", (4, 2, 2)),  # 1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error
        ("pytest_failed_q", (4, 2, 2)),
        ("pytest_passed", (1, 1, 0)),
        ("pytest_none", (0, 0, 0)),
        ("jest_failed", (4, 3, 1)),  # 1 failed, 1 skipped, 1 todo, 3 passed, 6 total
        ("jest_passed", (2, 2, 0)),
        ("vitest_failed", (4, 3, 1)),  # coloured: 1 failed | 3 passed | 1 skipped (5)
        ("vitest_failed_plain", (4, 3, 1)),
        ("vitest_passed", (2, 2, 0)),
        ("node_tap", (2, 1, 1)),
        ("cargo_failed", (5, 4, 1)),  # three test binaries: 1+2+1 passed, 1 failed
        ("cargo_passed", (5, 5, 0)),
        ("go_failed", (4, 1, 3)),  # 2 failed tests, a quiet ok package, a build failure
        ("go_passed_verbose", (3, 3, 0)),  # top-level tests only; the skip is not run
    ],
)
def test_the_summary_of_each_runner_is_read(name: str, counts: tuple[int, int, int]) -> None:
    assert testrun.test_summary_parse(sample(name)) == counts


def test_the_inline_summaries_of_the_contract_are_read() -> None:
    parse = testrun.test_summary_parse
    assert parse("=== 3 failed, 10 passed, 1 skipped in 0.5s ===") == (13, 10, 3)
    assert parse("Tests:       1 failed, 4 passed, 5 total") == (5, 4, 1)
    assert parse(" Tests  1 failed | 4 passed (5)") == (5, 4, 1)
    assert parse("  12 passing (40ms)\n  2 failing\n") == (14, 12, 2)
    assert parse("==== 7 passed, 2 warnings in 65.38s (0:01:05) ====") == (7, 7, 0)
    assert parse("\u2139 tests 3\n\u2139 pass 2\n\u2139 fail 1\n") == (3, 2, 1)


def test_make_test_running_several_runners_adds_them_up() -> None:
    output = (
        "make test\n" + sample("pytest_failed") + sample("cargo_passed") + sample("jest_passed")
    )
    assert testrun.test_summary_parse(output) == (4 + 5 + 2, 2 + 5 + 2, 2)


def test_output_without_a_summary_counts_nothing() -> None:
    assert testrun.test_summary_parse("all good\nFAIL src/x.test.js\nok done\n") == (0, 0, 0)


# --- detection ---------------------------------------------------------------------------


def put(root: Path, name: str, text: str = "") -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


@pytest.mark.parametrize(
    ("files", "command"),
    [
        ({"pyproject.toml": "[project]\nname='x'\n"}, "python3 -m pytest"),
        ({"setup.cfg": ""}, "python3 -m pytest"),
        ({"pytest.ini": ""}, "python3 -m pytest"),
        ({"tox.ini": ""}, "python3 -m pytest"),
        ({"tests/test_a.py": "def test_a(): pass\n"}, "python3 -m pytest"),
        ({"package.json": json.dumps({"scripts": {"test": "vitest run"}})}, "npm test"),
        ({"go.mod": "module example.com/x\n"}, "go test ./..."),
        ({"Cargo.toml": "[package]\nname='x'\n"}, "cargo test"),
        ({"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./run-tests\n"}, "make test"),
        ({"Makefile": "test:\n\t./t\n", "go.mod": "module x\n"}, "go test ./..."),
    ],
)
def test_the_command_is_detected_from_the_checkout(
    tmp_path: Path, files: dict[str, str], command: str
) -> None:
    for name, text in files.items():
        put(tmp_path, name, text)
    assert testrun.test_command_detect(tmp_path) == command


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"README.md": "hello"},
        {
            "package.json": json.dumps(
                {"scripts": {"test": 'echo "Error: no test specified" && exit 1'}}
            )
        },
        {"package.json": json.dumps({"scripts": {"build": "tsc"}})},
        {"package.json": "{not json"},
        {"package.json": "[1, 2]"},
        {"Makefile": "TEST := 1\nbuild:\n\tcc x.c\n"},
        {"Makefile": "test := yes\n"},
        {"tests/data.json": "{}"},
    ],
)
def test_nothing_is_detected_without_a_sign_of_tests(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        put(tmp_path, name, text)
    assert testrun.test_command_detect(tmp_path) is None


def test_detection_does_not_follow_symlinks_out_of_the_checkout(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    put(outside, "package.json", json.dumps({"scripts": {"test": "jest"}}))
    put(outside, "go.mod", "module x\n")
    checkout = tmp_path / "repo"
    checkout.mkdir()
    (checkout / "package.json").symlink_to(outside / "package.json")
    (checkout / "go.mod").symlink_to(outside / "go.mod")
    (checkout / "tests").symlink_to(outside)
    assert testrun.test_command_detect(checkout) is None


def test_detection_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "package.json")
    assert testrun.test_command_detect(tmp_path) is None


# --- running -----------------------------------------------------------------------------


class FakeRunner:
    """Answers each call with the next canned (exit code, output) and records the calls."""

    def __init__(self, *answers: tuple[int | None, str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        self.calls.append((argv, timeout))
        return self.answers.pop(0)


def shell_runner(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """Runs argv for real (from / : the command must cd into the checkout itself)."""
    try:
        done = subprocess.run(
            argv, cwd="/", capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return None, ""
    return done.returncode, done.stdout + done.stderr


def run(runner: testrun.Runner, command: str | None, setup: str | None = None, **kw: object):
    stream = io.StringIO()
    result = testrun.tests_run(
        command=command,
        setup_command=setup,
        checkout=kw.get("checkout", Path("/tmp")),  # type: ignore[arg-type]
        timeout=kw.get("timeout", 60.0),  # type: ignore[arg-type]
        runner=runner,
        log=Logger("[t]", stream),
    )
    return result, stream.getvalue()


def test_no_command_is_skipped_without_running_anything() -> None:
    runner = FakeRunner()
    result, log = run(runner, None)
    assert (result.status, result.run, result.command) == ("skipped", 0, None)
    assert runner.calls == []
    assert "skipped" in log


def test_passing_tests_report_their_counts() -> None:
    result, _ = run(FakeRunner((0, sample("pytest_passed"))), "python3 -m pytest")
    assert (result.status, result.run, result.passed, result.failed) == ("passed", 1, 1, 0)
    assert result.command == "python3 -m pytest"
    assert "1 passed" in result.tail


def test_failing_tests_report_their_counts_and_tail() -> None:
    result, _ = run(FakeRunner((1, sample("jest_failed"))), "npm test")
    assert (result.status, result.run, result.passed, result.failed) == ("failed", 4, 3, 1)
    assert "Expected: 4" in result.tail


def test_a_summary_with_failures_fails_even_when_the_exit_code_is_zero() -> None:
    result, _ = run(FakeRunner((0, sample("cargo_failed"))), "make test")
    assert (result.status, result.failed) == ("failed", 1)


def test_exit_zero_without_a_summary_passes_with_no_counts() -> None:
    result, _ = run(FakeRunner((0, "everything fine\n")), "./check.sh")
    assert (result.status, result.run, result.passed, result.failed) == ("passed", 0, 0, 0)


def test_pytest_finding_no_tests_is_skipped() -> None:
    result, _ = run(FakeRunner((5, sample("pytest_none"))), "python3 -m pytest")
    assert result.status == "skipped"


def test_a_missing_test_program_is_an_error_not_a_failure() -> None:
    result, _ = run(FakeRunner((127, "sh: 1: pytest: not found\n")), "pytest")
    assert result.status == "error"
    assert "not found" in result.tail


def test_a_runner_that_cannot_start_is_an_error() -> None:
    def broken(argv: list[str], timeout: float) -> tuple[int | None, str]:
        raise FileNotFoundError(2, "No such file or directory")

    result, _ = run(broken, "pytest")
    assert result.status == "error"


def test_a_timeout_is_reported_as_timeout() -> None:
    result, _ = run(FakeRunner((None, "=== RUN TestSlow\n")), "go test ./...")
    assert result.status == "timeout"


def test_setup_runs_first_and_its_failure_is_an_error_with_its_tail() -> None:
    runner = FakeRunner((1, "npm ERR! missing script: ci-setup\n"))
    result, _ = run(runner, "npm test", setup="npm run ci-setup")
    assert (result.status, result.command) == ("error", "npm test")
    assert "missing script" in result.tail
    assert len(runner.calls) == 1  # the tests did not run
    assert runner.calls[0][0][-1] == "npm run ci-setup"


def test_setup_timing_out_is_a_timeout() -> None:
    result, _ = run(FakeRunner((None, "")), "npm test", setup="npm ci")
    assert result.status == "timeout"


def test_setup_and_tests_share_one_deadline(tmp_path: Path) -> None:
    result, _ = run(shell_runner, "sleep 5", setup="sleep 0.6", timeout=1.0, checkout=tmp_path)
    assert result.status == "timeout"


def test_the_commands_run_in_the_checkout_as_shell_text(tmp_path: Path) -> None:
    put(tmp_path, "marker", "here")
    result, _ = run(
        shell_runner,
        "cat marker && echo '1 passed, 0 failed' && echo \"=== 2 passed in 0.1s ===\"",
        setup="test -f marker && touch setup-ran",
        checkout=tmp_path,
    )
    assert (result.status, result.passed) == ("passed", 2)
    assert "here" in result.tail
    assert (tmp_path / "setup-ran").exists()


def test_a_checkout_path_with_shell_characters_is_not_interpreted(tmp_path: Path) -> None:
    checkout = tmp_path / "a dir; touch pwned"
    checkout.mkdir()
    result, _ = run(shell_runner, "pwd", checkout=checkout)
    assert result.status == "passed"
    assert str(checkout) in result.tail
    assert not (Path("/") / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_the_tail_is_bounded_masked_and_free_of_colour() -> None:
    add_secret("sk-test-secret-in-output")
    output = "".join(f"line {n}\n" for n in range(500))
    output += "\x1b[31mred\x1b[39m token sk-test-secret-in-output\n" + "x" * 5000 + "\n"
    result, _ = run(FakeRunner((1, output)), "make test")
    lines = result.tail.splitlines()
    assert len(lines) == testrun.TAIL_LINES
    assert lines[0] == "line 422"
    assert "red token ***" in result.tail and "sk-test" not in result.tail
    assert "\x1b" not in result.tail
    assert len(lines[-1]) <= testrun.TAIL_LINE_CHARS + 1
