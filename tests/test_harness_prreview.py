"""The harness in review mode (``WORKER_MODE=review``, the review bot's job): the pull request's
head is checked out (its branch, else ``refs/pull/N/head``), the diff from its base goes to the
reviewer as a judge, and ``complete`` carries the findings, the head sha and the diff's
new-side lines; a head the remote does not have is a CLONE_ERROR; nothing is pushed. Run as a
real process with the fake agents, like tests/test_harness_verify.py; ``diff_lines_parse`` on
its own below."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests import test_harness as base
from tests.fakes.orchestrator import FakeOrchestrator
from tests.test_harness import BRANCH, Remote, explain, git, run_harness
from tests.test_harness_loop import agent_env, calls, complete_body, item
from workers.harness.harness.prreview import diff_lines_parse

remote = base.remote
work_item = base.work_item
orchestrator = base.orchestrator
harness_env = base.harness_env


def push_pull(remote: Remote, tmp_path: Path, ref: str) -> str:
    """A pull request's head: one commit on top of main, pushed to ``ref``."""
    work = tmp_path / "author"
    git("clone", "--quiet", str(remote.bare), str(work), cwd=tmp_path)
    (work / "widget.txt").write_text("one\ntwo\nthree\n")
    git("add", "widget.txt", cwd=work)
    git("-c", "user.name=A", "-c", "user.email=a@example.com", "commit", "-qm", "pr", cwd=work)
    git("push", "--quiet", "origin", f"HEAD:{ref}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def reviewing(env: dict[str, str], tmp_path: Path, head: str, **fields: Any) -> dict[str, str]:
    env = agent_env(env, tmp_path, {"review": "good"})
    env = item(
        env,
        type="review",
        spec="# Add the widget\n\nThe widget counts to three.\n",
        prNumber=12,
        metadata={"headSha": head, "baseRef": "main"},
        **fields,
    )
    return {**env, "WORKER_MODE": "review"}


def test_the_pull_requests_head_is_reviewed_and_nothing_is_pushed(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    head = push_pull(remote, tmp_path, f"refs/heads/{BRANCH}")

    result = run_harness(reviewing(harness_env, tmp_path, head))

    assert result.returncode == 0, explain(result)
    body = complete_body(orchestrator)
    assert body["commitSha"] == head
    assert body["diffLines"] == {"widget.txt": [[1, 3]]}
    assert body["review"]["findings"]["codeQuality"]["score"] == "good"
    assert remote.head(BRANCH) == head  # nothing pushed
    [made] = calls(tmp_path)
    assert made["kind"] == "review"
    assert "The widget counts to three." in made["prompt"] and "+three" in made["prompt"]


def test_a_fork_head_comes_from_refs_pull(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    head = push_pull(remote, tmp_path, "refs/pull/12/head")

    result = run_harness(reviewing(harness_env, tmp_path, head, branch="contributor-main"))

    assert result.returncode == 0, explain(result)
    assert complete_body(orchestrator)["commitSha"] == head


def test_a_head_the_remote_does_not_have_is_a_clone_error(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    push_pull(remote, tmp_path, f"refs/heads/{BRANCH}")

    result = run_harness(reviewing(harness_env, tmp_path, "a" * 40))

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "CLONE_ERROR"
    assert not orchestrator.of("complete")


DIFF = """\
diff --git a/src/a.py b/src/a.py
index 1..2 100644
--- a/src/a.py
+++ b/src/a.py
@@ -1,3 +1,4 @@
 x
+++ b/not-a-header.py
+y
 z
@@ -40 +41,0 @@ def f():
-gone
@@ -50,2 +50,3 @@
 a
+b
 c
diff --git a/old.txt b/old.txt
deleted file mode 100644
--- a/old.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-1
-2
diff --git a/with space.txt b/with space.txt
new file mode 100644
--- /dev/null
+++ b/with space.txt\t
@@ -0,0 +1 @@
+hi
diff --git "a/caf\\303\\251.txt" "b/caf\\303\\251.txt"
--- "a/caf\\303\\251.txt"
+++ "b/caf\\303\\251.txt"
@@ -1 +1 @@
-a
+b
"""


def test_diff_lines_are_the_new_side_of_each_hunk() -> None:
    assert diff_lines_parse(DIFF) == {
        "src/a.py": [[1, 4], [50, 52]],  # the pure deletion hunk has no new lines
        "with space.txt": [[1, 1]],
    }


def test_diff_lines_are_bounded_like_complete_accepts_them() -> None:
    many_files = "".join(
        f"diff --git a/f{n} b/f{n}\n--- a/f{n}\n+++ b/f{n}\n@@ -1 +1 @@\n-a\n+b\n"
        for n in range(1100)
    )
    many_hunks = "diff --git a/f b/f\n--- a/f\n+++ b/f\n" + "".join(
        f"@@ -{n} +{n} @@\n-a\n+b\n" for n in range(1, 300)
    )
    assert len(diff_lines_parse(many_files)) == 1000
    assert len(diff_lines_parse(many_hunks)["f"]) == 200
