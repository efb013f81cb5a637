"""Review mode (``WORKER_MODE=review``): the review bot's job, one pull request at one head.

The item names the pull request (``prNumber``), its head branch (``branch``) and, in its
metadata, ``headSha`` (what is reviewed), ``baseRef`` (what it is diffed against):

1. Clone the repository; the head commit comes from the head branch when the clone has it, else
   from ``refs/pull/N/head`` (a fork's pull request). A head not found — the branch moved on, a
   newer push supersedes this job — is a ``CLONE_ERROR``. The checkout is detached at it.
2. The repository's settings from the default branch's ``.whim/config.toml`` (``Session``);
   the PR's title and body are the "spec" the change is judged against.
3. The diff ``baseRef...headSha`` (what the pull request adds since it forked) goes to the
   reviewer exactly as a self-review's does (``review.review_run``: the agent as a judge, with
   the default branch's instruction files and a fresh HOME, its file changes thrown away; or
   the Messages API). A review that could not be had is an ``AGENT_ERROR`` (the job is
   retried): this job's only product is the review.
4. ``complete {review, commitSha: headSha, diffLines, metrics}``; ``diffLines`` are the
   new-side line ranges of the diff's hunks per file, where GitHub takes line comments.

Nothing is committed or pushed.
"""

from __future__ import annotations

import re
from typing import Any

from .checkout import Checkout, checkout_clone, exclude_private
from .errors import AgentError, Category, ConfigError
from .gitops import GitError
from .session import Session

SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
DIFF_FILES_MAX = 1000  # what ``complete`` accepts (orchestration.forms.callbacks)
DIFF_RANGES_MAX = 200
PATH_MAX = 1024


def diff_lines_parse(diff: str) -> dict[str, list[list[int]]]:
    """The new-side line ranges ``[start, end]`` of each file's hunks in a unified diff made
    with ``a/`` and ``b/`` prefixes. Deleted files, and paths git had to quote (odd
    characters), get none; at most DIFF_FILES_MAX files of DIFF_RANGES_MAX ranges."""
    lines: dict[str, list[list[int]]] = {}
    path: str | None = None
    header = False  # between "diff --git" and the first hunk: where "+++ b/path" is a header
    for line in diff.split("\n"):
        if line.startswith("diff --git "):
            path, header = None, True
        elif header and line.startswith("+++ "):
            target = line[4:].removesuffix("\t")  # git adds a tab after a name with spaces
            path = target[2:] if target.startswith("b/") and len(target) <= PATH_MAX else None
            if path is not None and len(lines) >= DIFF_FILES_MAX and path not in lines:
                path = None
        elif line.startswith("@@ "):
            header = False
            match = HUNK.match(line)
            if path is None or match is None:
                continue
            start, count = int(match.group(1)), int(match.group(2) or "1")
            ranges = lines.setdefault(path, [])
            if count > 0 and len(ranges) < DIFF_RANGES_MAX:
                ranges.append([start, start + count - 1])
    return {p: r for p, r in lines.items() if r}


def pull_checkout(s: Session, *, head_sha: str, base_ref: str) -> Checkout:
    """Clone; the pull request's head commit, checked out detached (see the module)."""
    item = s.item
    git, default = checkout_clone(s.config, item, log=s.log)
    commit = f"{head_sha}^{{commit}}"
    if not git.ok("cat-file", "-e", commit) and item.pr_number:
        s.log(f"fetching refs/pull/{item.pr_number}/head")
        try:
            git.run(
                "fetch",
                "--no-tags",
                "--quiet",
                "origin",
                f"+refs/pull/{item.pr_number}/head:refs/remotes/origin/whim-pull-head",
                category=Category.CLONE_ERROR,
            )
        except GitError as exc:
            s.log(f"no refs/pull/{item.pr_number}/head: {exc}")
    if not git.ok("cat-file", "-e", commit):
        raise GitError(
            f"the pull request's head {head_sha[:12]} is not on the remote (a newer push?)",
            category=Category.CLONE_ERROR,
        )
    if not git.ok("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{base_ref}"):
        raise GitError(
            f"the pull request's base branch {base_ref!r} is not on the remote",
            category=Category.CLONE_ERROR,
        )
    git.run("checkout", "--quiet", "--detach", head_sha, category=Category.CLONE_ERROR)
    s.log(f"pull request #{item.pr_number} at {head_sha[:12]} (base {base_ref})")
    exclude_private(git)
    return Checkout(git=git, default=default, existed=True, start=head_sha)


def pull_review_run(s: Session) -> dict[str, Any]:
    item = s.item
    head_sha = str(item.metadata.get("headSha") or "")
    base_ref = str(item.metadata.get("baseRef") or "")
    if not SHA.match(head_sha) or not base_ref or base_ref.startswith("-"):
        raise ConfigError("a review job needs metadata.headSha (a full commit id) and baseRef")
    checkout = pull_checkout(s, head_sha=head_sha, base_ref=base_ref)
    s.prepare(spec=item.spec, pushes=False, checkout=checkout)
    git = s.repo.git
    diff = git.run(
        "-c",
        "core.quotePath=true",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        f"refs/remotes/origin/{base_ref}...{head_sha}",
        "--",
        category=Category.CLONE_ERROR,
    )
    diff_lines = diff_lines_parse(diff)
    s.progress.update(iteration=1)
    outcome = s.review_diff(diff, lambda prompt: _ask_agent(s, prompt, head_sha))
    if outcome.findings is None:
        raise AgentError(f"no review of #{item.pr_number}: {outcome.note}")
    body: dict[str, Any] = {
        "review": {"modelUsed": outcome.model_used, "findings": outcome.findings},
        "commitSha": head_sha,
        "diffLines": diff_lines,
        "metrics": {"filesModified": 0, "iterations": 1},
    }
    model_used = s.repo_settings.model or s.progress.snapshot().model
    if model_used:
        body["model"] = model_used
    return body


def _ask_agent(s: Session, prompt: str, head_sha: str) -> str:
    """The agent as reviewer, as a judge; whatever it changes in the checkout is undone."""
    git = s.repo.git
    try:
        return s.invoke(prompt, purpose="review", judge=True).text
    finally:
        git.run("reset", "--hard", "--quiet", head_sha, category=Category.COMMIT_ERROR)
        git.run("clean", "-d", "--force", "--quiet", category=Category.COMMIT_ERROR)
