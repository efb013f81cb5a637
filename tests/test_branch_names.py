"""The name rules, checked against their authorities: branch names against real
``git check-ref-format --branch``, and the orchestrator's rules (``orchestration.forms``)
against the harness's copy (``workers/harness/harness/refs.py``) on the same tables.

Whim accepts a branch exactly when git accepts it *and* it keeps to Whim's character set
(``BRANCH_RE``: ASCII letters, digits, ``/ _ . -``, a letter or digit first). So the table
holds names git refuses (Whim must too), names git accepts inside the set (Whim must too) and
names git accepts outside it (Whim refuses: the deliberate narrowing).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestration.forms import branches as server_branches
from orchestration.forms import repos as server_repos
from workers.harness.harness import refs as harness_refs

BRANCHES = [
    # git refuses these (issue 9 names the first ones)
    "HEAD",
    "a//b",
    "a/.hidden",
    "foo.lock/bar",
    "foo.lock",
    "a/b.lock/c",
    ".lock",
    "a/",
    "a.",
    "a/b.",
    "a..b",
    "..",
    ".",
    "a/./b",
    "a/../b",
    ".x",
    "/x",
    "-x",
    "-",
    "a@{b",
    "@{-1}",
    "a b",
    "a\tb",
    "a\x7fb",
    "a\x01b",
    "a~1",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    # git accepts these, and they are inside Whim's set
    "main",
    "head",
    "HEAD/x",
    "x/HEAD",
    "refs/heads/x",
    "a.lock.b",
    "a/-b",
    "a/b-c_d.e",
    "0day",
    "feature/x_y-z.1",
    "a" * 250,
    # git accepts these, outside Whim's set: Whim refuses them on purpose
    "@",
    "x@y",
    "é",
    "feat#1",
    "a+b",
    "_x",
    "a{b}",
    "it's",
]


def git_accepts_branch(name: str, cwd: Path) -> bool:
    result = subprocess.run(
        ["git", "check-ref-format", "--branch", name], cwd=cwd, capture_output=True, check=False
    )
    return result.returncode == 0


def test_the_table_covers_all_three_kinds_of_name(tmp_path: Path) -> None:
    verdicts = [
        (git_accepts_branch(n, tmp_path), bool(server_branches.BRANCH_RE.match(n)))
        for n in BRANCHES
    ]
    assert (False, True) in verdicts  # git refuses though the characters look harmless
    assert (True, True) in verdicts
    assert (True, False) in verdicts
    assert len(BRANCHES) >= 40


@pytest.mark.parametrize("name", BRANCHES, ids=repr)
def test_whim_accepts_a_branch_exactly_when_git_does_within_its_character_set(
    name: str, tmp_path: Path
) -> None:
    expected = git_accepts_branch(name, tmp_path) and bool(server_branches.BRANCH_RE.match(name))

    server = server_branches.branch_error(name)
    harness = harness_refs.branch_error(name)

    assert (server is None) == expected, f"server says {server!r}"
    assert (harness is None) == expected, f"harness says {harness!r}"
    assert harness == server  # one wording, on both sides


def test_text_git_cannot_take_as_an_argument_is_refused_on_both_sides() -> None:
    for name in ("a\x00b", "a\ud800b", "ma\u0131n"):
        assert server_branches.branch_error(name) is not None
        assert harness_refs.branch_error(name) is not None


# --- repositories: GitHub's rules ------------------------------------------------------------

REPOS = [
    ("acme/widgets", True),
    ("a-c-m-e/my_repo.js", True),
    ("9acme/.dotfiles", True),
    ("acme/...", True),
    ("acme/.github", True),
    ("acme/x.gitx", True),
    ("a" * 39 + "/" + "w" * 100, True),
    ("acme/..", False),
    ("acme/.", False),
    ("acme/.git", False),
    ("acme/x.git", False),
    ("acme/x.GIT", False),
    ("a" * 40 + "/w", False),
    ("acme/" + "w" * 101, False),
    ("ac--me/w", False),
    ("acme-/w", False),
    ("-acme/w", False),
    ("ac_me/w", False),
    ("acme", False),
    ("acme/", False),
    ("/w", False),
    ("acme/w/x", False),
    ("acme/w x", False),
    ("acme/w\x00", False),
    ("acme/wé", False),
]


@pytest.mark.parametrize(("repo", "ok"), REPOS, ids=[repr(r) for r, _ in REPOS])
def test_the_server_and_the_harness_agree_on_github_repo_names(repo: str, ok: bool) -> None:
    server = server_repos.repo_error(repo)
    harness = harness_refs.repo_error(repo)

    assert (server is None) == ok, server
    assert (harness is None) == ok, harness


# --- protected names ----------------------------------------------------------------------

PROTECTED = [
    ("main", "main"),
    ("Main", "main"),
    ("MASTER", "master"),
    ("develop", "develop"),
    ("trunk", "trunk"),
    ("release/1.0", "release/*"),
    ("release/1.0/hotfix", "release/*"),
    ("Release/2", "release/*"),
    ("HEAD", "HEAD"),
    ("head", "HEAD"),
    ("mainline", None),
    ("main2", None),
    ("feature/main", None),
    ("release", None),
    ("releases/1", None),
    ("whim/main", None),
]


@pytest.mark.parametrize(("branch", "rule"), PROTECTED, ids=[b for b, _ in PROTECTED])
def test_the_default_globs_protect_the_same_names_on_both_sides(
    branch: str, rule: str | None
) -> None:
    assert server_branches.protected_globs() == server_branches.DEFAULT_PROTECTED
    assert harness_refs.DEFAULT_PROTECTED == server_branches.DEFAULT_PROTECTED

    assert server_branches.protected_rule(branch) == rule
    assert harness_refs.protected_rule(branch, harness_refs.DEFAULT_PROTECTED) == rule


def test_the_harness_reads_the_globs_as_the_orchestrator_writes_them() -> None:
    written = ",".join(server_branches.protected_globs([" main", "release/*", "", "x/* "]))
    assert harness_refs.parse_globs(written) == ("main", "release/*", "x/*")
    assert harness_refs.parse_globs("") == ()
    assert harness_refs.parse_globs(None) == harness_refs.DEFAULT_PROTECTED
