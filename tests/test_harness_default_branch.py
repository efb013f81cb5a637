"""A bare repository whose HEAD names a branch it does not have (git's ``master`` default
while only ``main`` was pushed) is worked on from its only branch, or ``main`` (issue 14),
instead of failing "no default branch". Real git, real bare repositories; the end-to-end case
runs the harness as a process against a fake orchestrator, like tests/test_harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import test_harness as base
from tests.fakes.orchestrator import FakeOrchestrator
from tests.test_harness import BRANCH, Remote, explain, git, run_harness
from workers.harness.harness.gitops import Git, GitError, git_env

remote = base.remote
work_item = base.work_item
orchestrator = base.orchestrator
harness_env = base.harness_env


def dangle_head(remote: Remote, *branches: str, drop_main: bool = False) -> None:
    """Add ``branches`` (at main's commit), optionally drop main, point HEAD at ``master``."""
    for branch in branches:
        git("branch", branch, "main", cwd=remote.bare)
    if drop_main:
        git("branch", "-D", "main", cwd=remote.bare)
    git("symbolic-ref", "HEAD", "refs/heads/master", cwd=remote.bare)


def cloned(remote: Remote, tmp_path: Path) -> Git:
    env = git_env(
        base_url=f"file://{remote.base}/", token=None, author_name="t", author_email="t@t"
    )
    checkout = Git(workdir=tmp_path / "repo", env=env)
    checkout.clone(f"file://{remote.bare}")
    return checkout


@pytest.mark.parametrize(
    ("branches", "drop_main", "expected"),
    [
        ((), False, "main"),  # only main
        (("develop",), True, "develop"),  # only one, whatever its name
        (("develop", "release"), False, "main"),  # several: main
    ],
)
def test_a_head_naming_a_missing_branch_falls_back_to_the_only_or_main_branch(
    remote: Remote, tmp_path: Path, branches: tuple[str, ...], drop_main: bool, expected: str
) -> None:
    dangle_head(remote, *branches, drop_main=drop_main)

    assert cloned(remote, tmp_path).default_branch() == expected


def test_several_branches_and_none_main_is_a_config_error_naming_the_fix(
    remote: Remote, tmp_path: Path
) -> None:
    dangle_head(remote, "develop", "release", drop_main=True)

    with pytest.raises(GitError) as caught:
        cloned(remote, tmp_path).default_branch()

    assert caught.value.category == "CONFIG_ERROR"
    assert "symbolic-ref HEAD" in str(caught.value)


def test_an_empty_repository_still_has_no_default_branch(tmp_path: Path) -> None:
    bare = tmp_path / "remotes" / "acme" / "empty.git"
    bare.mkdir(parents=True)
    git("init", "--quiet", "--bare", "--initial-branch=master", str(bare), cwd=tmp_path)
    checkout = cloned(Remote(base=tmp_path / "remotes", bare=bare), tmp_path)

    with pytest.raises(GitError, match="no default branch"):
        checkout.default_branch()


def test_the_harness_works_from_main_when_head_names_master(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    dangle_head(remote)
    main = remote.head("main")

    result = run_harness(harness_env)

    assert result.returncode == 0, explain(result)
    assert orchestrator.of("complete"), orchestrator.actions()
    pushed = remote.head(BRANCH)
    assert pushed is not None
    assert git("merge-base", "--is-ancestor", str(main), pushed, cwd=remote.bare) == ""
    assert remote.head("main") == main  # the default it chose is never pushed to
