"""The harness refuses to push where Whim must not (issue 9): a protected branch
(``WHIM_PROTECTED_BRANCHES``) or the repository's real default branch is a permanent
``POLICY_ERROR``, and a repo or branch that breaks the name rules (an item stored before they
existed) a permanent ``CONFIG_ERROR``, never a ``CLONE_ERROR`` retried. Run as a real process
against a fake orchestrator and a real bare repository, like tests/test_harness.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import test_harness as base
from tests.fakes.orchestrator import FakeOrchestrator
from tests.test_harness import Remote, explain, git, run_harness
from workers.harness.harness.gitops import Git, git_env

# The fixtures of tests/test_harness.py, made visible to pytest here.
remote = base.remote
work_item = base.work_item
orchestrator = base.orchestrator
harness_env = base.harness_env


def with_item(env: dict[str, str], **fields: Any) -> dict[str, str]:
    item = json.loads(env["WORK_ITEM"])
    item.update(fields)
    return {**env, "WORK_ITEM": json.dumps(item)}


def heads(remote: Remote) -> str:
    """Every ref of the bare repository with its sha, and where HEAD points."""
    refs = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=remote.bare)
    return refs + "\nHEAD -> " + git("symbolic-ref", "HEAD", cwd=remote.bare)


def make_default(remote: Remote, branch: str) -> None:
    """Give the bare repository ``branch`` (at main's commit) as its default branch."""
    git("branch", branch, "main", cwd=remote.bare)
    git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=remote.bare)


def assert_failed_with(
    result: Any, orchestrator: FakeOrchestrator, category: str, *words: str
) -> None:
    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == category, fail.body
    for word in words:
        assert word in fail.body["error"]
    assert not {"lock", "complete"} & set(orchestrator.actions())


@pytest.mark.parametrize("branch", ["main", "Main", "release/7", "trunk"])
def test_a_protected_branch_is_a_policy_error_before_anything_is_cloned(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, branch: str
) -> None:
    before = heads(remote)

    result = run_harness(with_item(harness_env, branch=branch))

    assert_failed_with(result, orchestrator, "POLICY_ERROR", "WHIM_PROTECTED_BRANCHES", branch)
    assert "cloning" not in result.stdout
    assert heads(remote) == before


@pytest.mark.parametrize("branch", ["production", "PRODUCTION"])
def test_the_repositorys_own_default_branch_is_refused_whatever_its_name(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, branch: str
) -> None:
    make_default(remote, "production")
    before = heads(remote)

    result = run_harness(with_item(harness_env, branch=branch))

    assert_failed_with(result, orchestrator, "POLICY_ERROR", "default branch")
    assert "cloning" in result.stdout  # learnt from the clone, not from a list
    assert heads(remote) == before


def test_the_default_branch_is_refused_even_with_no_globs_at_all(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    before = heads(remote)
    env = {**with_item(harness_env, branch="main"), "WHIM_PROTECTED_BRANCHES": ""}

    result = run_harness(env)

    assert_failed_with(result, orchestrator, "POLICY_ERROR", "default branch")
    assert heads(remote) == before


def test_the_globs_come_from_the_environment(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    env = {**with_item(harness_env, branch="ops/deploy"), "WHIM_PROTECTED_BRANCHES": "ops/*"}

    result = run_harness(env)

    assert_failed_with(result, orchestrator, "POLICY_ERROR", "'ops/*'")
    assert remote.head("ops/deploy") is None


def test_an_ordinary_branch_is_still_pushed_under_the_default_globs(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    result = run_harness(with_item(harness_env, branch="feature/main-menu"))

    assert result.returncode == 0, explain(result)
    assert remote.head("feature/main-menu") is not None
    assert orchestrator.actions()[-1] == "complete"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("branch", "HEAD"),
        ("branch", "a//b"),
        ("branch", "a/.hidden"),
        ("branch", "foo.lock/bar"),
        ("branch", "x."),
        ("repo", "acme/.."),
        ("repo", "acme/.git"),
        ("repo", "acme/widget.git"),
        ("repo", "ac--me/widget"),
    ],
)
def test_a_name_git_or_github_refuses_is_a_permanent_config_error_not_a_clone_error(
    harness_env: dict[str, str],
    remote: Remote,
    orchestrator: FakeOrchestrator,
    field: str,
    value: str,
) -> None:
    before = heads(remote)

    result = run_harness(with_item(harness_env, **{field: value}))

    assert_failed_with(result, orchestrator, "CONFIG_ERROR", f"WORK_ITEM {field}")
    assert "cloning" not in result.stdout
    assert heads(remote) == before


def test_the_default_branch_is_asked_of_the_remote_when_the_clone_did_not_record_it(
    remote: Remote, tmp_path: Path
) -> None:
    make_default(remote, "stable")
    env = git_env(
        base_url=f"file://{remote.base}/", token=None, author_name="t", author_email="t@t"
    )
    checkout = Git(workdir=tmp_path / "repo", env=env)
    checkout.clone(f"file://{remote.bare}")
    git("remote", "set-head", "origin", "--delete", cwd=tmp_path / "repo")

    assert checkout.default_branch() == "stable"
