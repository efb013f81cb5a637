"""Before its final callback the harness sends one last heartbeat when its progress moved
since the last one delivered: what an attempt that ends by ``fail`` (or ``stuck``) spent is
charged (the iteration that reached the cost cap, say), and a resumed attempt quicker than one
heartbeat interval still reports the commit it resumed from. Run as a real process with the
fake agents, like tests/test_harness_loop.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import test_harness as base
from tests.fakes.orchestrator import FakeOrchestrator
from tests.test_harness import BRANCH, explain, run_harness
from tests.test_harness_loop import PER_CALL_IN, STEPS, agent_env

remote = base.remote
work_item = base.work_item
orchestrator = base.orchestrator
harness_env = base.harness_env


@pytest.mark.parametrize(
    ("scenario", "cap", "category", "calls"),
    [
        ({}, "0.015", "COST_CAP", 2),  # 0.02 spent: no third iteration
        ({"misbehave": "exit:1"}, "", "AGENT_ERROR", 1),  # answered, then exited 1
    ],
)
def test_an_attempt_that_fails_reports_what_it_spent_since_its_last_heartbeat(
    harness_env: dict[str, str],
    remote: base.Remote,
    orchestrator: FakeOrchestrator,
    tmp_path: Path,
    scenario: dict[str, Any],
    cap: str,
    category: str,
    calls: int,
) -> None:
    env = agent_env(harness_env, tmp_path, {"steps": STEPS, "cost": 0.01, **scenario})
    # No tick after the first: only a last heartbeat before ``fail`` can carry the spend.
    env = {**env, "HEARTBEAT_INTERVAL": "60", "WHIM_REVIEWER": "none"}

    result = run_harness({**env, "WHIM_COST_CAP_USD": cap} if cap else env)

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == category
    beats = [c.body for c in orchestrator.of("heartbeat") if c.at <= fail.at]
    assert beats[-1]["costUsd"] == pytest.approx(0.01 * calls)
    assert beats[-1]["tokensIn"] == PER_CALL_IN * calls
    assert orchestrator.actions()[-1] == "fail"  # nothing after the final callback


def test_a_quick_resumed_attempt_still_reports_the_commit_it_resumed_from(
    harness_env: dict[str, str],
    remote: base.Remote,
    orchestrator: FakeOrchestrator,
    tmp_path: Path,
) -> None:
    env = agent_env(harness_env, tmp_path, {"steps": STEPS, "cost": 0.01})
    env = {**env, "HEARTBEAT_INTERVAL": "60", "WHIM_REVIEWER": "none"}
    first = run_harness({**env, "WHIM_COST_CAP_USD": "0.015"})  # two iterations pushed
    assert first.returncode == 1, explain(first)
    pushed = remote.head(BRANCH)
    ended = orchestrator.of("fail")[0].at

    second = run_harness(env)  # the third step, well within one heartbeat interval

    assert second.returncode == 0, explain(second)
    [done] = orchestrator.of("complete")
    beats = [c.body for c in orchestrator.of("heartbeat") if ended < c.at <= done.at]
    assert beats[-1]["resumedFrom"] == pushed
    assert beats[-1]["costUsd"] == pytest.approx(0.01)
