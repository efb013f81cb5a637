"""The harness in verification mode (``WORKER_MODE=verification``): the pushed branch is
checked out, tested and judged by the agent's ``[VERIFY:RESULT]``; nothing is committed or
pushed. Run as a real process with the fake agents, like tests/test_harness_loop.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import test_harness as base
from tests.fakes.orchestrator import FakeOrchestrator
from tests.test_harness import BRANCH, Remote, explain, git, run_harness
from tests.test_harness_loop import agent_env, calls, complete_body, item

remote = base.remote
work_item = base.work_item
orchestrator = base.orchestrator
harness_env = base.harness_env

PARENT_SPEC = "# Add the widget\n\nThe widget spins.\n"
TESTS = 'echo "===== 3 passed in 0.02s ====="'


def push_branch(remote: Remote, tmp_path: Path) -> str:
    """The parent's work: ``BRANCH`` with one commit on top of main."""
    work = tmp_path / "parent"
    git("clone", "--quiet", str(remote.bare), str(work), cwd=tmp_path)
    (work / "widget.txt").write_text("spins\n")
    git("add", "widget.txt", cwd=work)
    git("-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", "parent", cwd=work)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=work)
    head = remote.head(BRANCH)
    assert head is not None
    return head


def verifying(env: dict[str, str], tmp_path: Path, scenario: dict[str, Any]) -> dict[str, str]:
    env = agent_env(env, tmp_path, scenario)
    env = item(
        env,
        type="verification",
        spec=None,
        description=PARENT_SPEC,
        prNumber=5,
        metadata={"testCommand": TESTS},
    )
    return {**env, "WORKER_MODE": "verification"}


@pytest.mark.parametrize(
    ("verdict", "passed"),
    [("PASS", True), ("FAIL", False), ("PASS-WORD", True), ("FAIL-WORD", False)],
)
def test_the_verdict_is_reported_and_nothing_is_pushed(
    harness_env: dict[str, str],
    remote: Remote,
    orchestrator: FakeOrchestrator,
    tmp_path: Path,
    verdict: str,
    passed: bool,
) -> None:
    head = push_branch(remote, tmp_path)

    result = run_harness(verifying(harness_env, tmp_path, {"verify": verdict}))

    assert result.returncode == 0, explain(result)
    body = complete_body(orchestrator)
    assert body["verificationPassed"] is passed
    assert "commitSha" not in body
    metrics = body["metrics"]
    assert (metrics["testStatus"], metrics["testsRun"], metrics["testsPassed"]) == ("passed", 3, 3)
    assert metrics["tokensIn"] > 0 and metrics["costUsd"] == pytest.approx(0.01)
    assert remote.head(BRANCH) == head  # nothing pushed
    assert "lock" not in orchestrator.actions()
    [made] = calls(tmp_path)
    assert made["kind"] == "verify"
    assert "The widget spins." in made["prompt"]  # the parent's spec
    assert "pull request #5" in made["prompt"]
    assert "3 passed" in made["prompt"]  # the test results


def test_no_verdict_is_an_agent_error(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    push_branch(remote, tmp_path)

    result = run_harness(verifying(harness_env, tmp_path, {"verify": "none"}))

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "AGENT_ERROR"
    assert "[VERIFY:RESULT]" in fail.body["error"]


def test_a_branch_that_was_never_pushed_is_a_clone_error(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    result = run_harness(verifying(harness_env, tmp_path, {"verify": "PASS"}))

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "CLONE_ERROR"
    assert "nothing to verify" in fail.body["error"]
    assert calls(tmp_path) == []


def test_the_work_item_is_read_for_verification(harness_env: dict[str, str]) -> None:
    from workers.harness.harness.config import WorkItem

    data = json.loads(harness_env["WORK_ITEM"])
    parsed = WorkItem.from_json(
        {**data, "type": "verification", "spec": None, "description": PARENT_SPEC, "prNumber": 5}
    )
    assert (parsed.type, parsed.pr_number, parsed.spec) == ("verification", 5, PARENT_SPEC)
    assert (
        WorkItem.from_json({**data, "source": "github", "sourceRef": "issue:12"}).issue_number == 12
    )
    assert (
        WorkItem.from_json({**data, "source": "api", "sourceRef": "issue:12"}).issue_number is None
    )
    assert (
        WorkItem.from_json({**data, "source": "github", "sourceRef": "pr:3"}).issue_number is None
    )


def test_a_pass_verdict_with_failing_tests_is_a_fail(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    push_branch(remote, tmp_path)
    env = verifying(harness_env, tmp_path, {"verify": "PASS"})
    failing = 'echo "===== 1 failed, 2 passed in 0.02s ====="; exit 1'
    env = item(env, metadata={"testCommand": failing})

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    body = complete_body(orchestrator)
    assert body["verificationPassed"] is False
    assert body["metrics"]["testStatus"] == "failed"


def test_the_fakes_scenario_can_differ_by_the_items_repo(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    # by_repo (keyed by $WHIM_REPO) lets one scenario serve several items of an e2e test.
    push_branch(remote, tmp_path)
    scenario = {
        "verify": "PASS",
        "by_repo": {base.REPO: {"verify": "FAIL"}, "acme/other": {"verify": "none"}},
    }

    result = run_harness(verifying(harness_env, tmp_path, scenario))

    assert result.returncode == 0, explain(result)
    assert complete_body(orchestrator)["verificationPassed"] is False
