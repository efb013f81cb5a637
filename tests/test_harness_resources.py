"""The harness tells an agent the OOM killer ended from an agent that failed (issue 9): exit
137 / -9 while the cgroup's ``oom_kill`` counter rose is ``RESOURCE_ERROR`` (infrastructure,
counted for quarantine); the counter unchanged is the agent's own ``AGENT_ERROR``; no counter
to read falls back to the exit code. And a ``complete`` the orchestrator refuses (400) is
reported as a failure, not left to look like a crash.

The cgroup is a fake directory (``WHIM_CGROUP_DIR``) whose counter the test's agent bumps.
"""

# ruff: noqa: F401, F811 - the harness fixtures are imported from test_harness and used by name

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.orchestrator import FakeOrchestrator
from tests.test_harness import (  # fixtures, used by name
    explain,
    harness_env,
    orchestrator,
    remote,
    run_harness,
    work_item,
)
from workers.harness.harness.resources import killed_by_oom, oom_kills

V2_EVENTS = "low 0\nhigh 0\nmax 12\noom 2\noom_kill {n}\noom_group_kill 0\n"
V1_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"


def test_it_reads_the_oom_counter_of_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text(V2_EVENTS.format(n=3))

    assert oom_kills(tmp_path) == 3


def test_it_reads_the_oom_counter_of_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.oom_control").write_text(V1_CONTROL.format(n=5))

    assert oom_kills(tmp_path) == 5


@pytest.mark.parametrize("content", [None, "", "oom_kill lots\n", "oom_group_kill 4\n"])
def test_no_readable_counter_is_none(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "memory.events").write_text(content)

    assert oom_kills(tmp_path) is None


@pytest.mark.parametrize(
    ("code", "before", "after", "oom"),
    [
        (137, 0, 1, True),
        (-9, 4, 5, True),
        (137, 1, 1, False),  # a SIGKILL from someone else
        (-9, 2, 2, False),
        (137, None, None, True),  # no counter: the exit code alone
        (-9, None, 3, True),
        (1, 0, 1, False),  # not killed by SIGKILL: an ordinary failure
        (143, 0, 1, False),
    ],
)
def test_what_counts_as_killed_by_the_oom_killer(
    code: int, before: int | None, after: int | None, oom: bool
) -> None:
    assert killed_by_oom(code, before=before, after=after) is oom


def kill_itself(cgroup: Path, *, bump: bool) -> str:
    """A command agent that (optionally) bumps the fake counter, then SIGKILLs itself."""
    write = f"printf '{V2_EVENTS.format(n=1)}' > {cgroup}/memory.events; " if bump else ""
    return f"echo allocating; {write}kill -9 $$"


@pytest.mark.parametrize(
    ("counter", "bump", "category"),
    [
        pytest.param(True, True, "RESOURCE_ERROR", id="oom_kill_rose"),
        pytest.param(True, False, "AGENT_ERROR", id="oom_kill_unchanged"),
        pytest.param(False, False, "RESOURCE_ERROR", id="no_counter_exit_code_alone"),
    ],
)
def test_an_agent_killed_by_sigkill_is_classified_by_the_oom_counter(
    harness_env: dict[str, str],
    orchestrator: FakeOrchestrator,
    tmp_path: Path,
    counter: bool,
    bump: bool,
    category: str,
) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    if counter:
        (cgroup / "memory.events").write_text(V2_EVENTS.format(n=0))
    env = {
        **harness_env,
        "WHIM_CGROUP_DIR": str(cgroup),
        "WHIM_AGENT": "command",
        "WHIM_AGENT_COMMAND": kill_itself(cgroup, bump=bump),
    }

    result = run_harness(env)

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == category, fail.body
    assert "allocating" in fail.body["error"]
    if category == "RESOURCE_ERROR":
        assert "out of memory" in fail.body["error"]


def test_a_refused_completion_is_reported_as_a_failure(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    orchestrator.answer_next(
        "complete",
        400,
        {
            "error": "The reported commit is not on the pushed branch",
            "code": "VALIDATION_ERROR",
            "details": {"commitSha": "commit 0123 is not on branch x"},
        },
    )

    result = run_harness(harness_env)

    assert result.returncode == 1, explain(result)
    assert orchestrator.actions()[-2:] == ["complete", "fail"]
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "PUSH_ERROR"
    assert "refused complete" in fail.body["error"]
