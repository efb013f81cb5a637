"""Issue 10's pipeline end to end, part A, on real parts: the API, PostgreSQL, Celery, dockerd,
the worker image and its harness, and a fake ``claude`` (tests/fakes/agents/claude) bound in
through WHIM_AGENT_PATH_DIR that speaks Claude Code's stream-json, edits the checkout over
several iterations and answers review prompts: the loop pushed iteration by iteration with its
tokens and cost on every surface, failing tests and their fix pass, a needs-work review with its
fix pass and its comment on a fake GitHub's pull request, a killed container resumed from its
pushed commit, and learnings carried from one item to the next. Part B (verification, the cost
cap, misbehaving agents) is tests/test_docker_pipeline_b.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount

from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemEvent, WorkItemStatus
from tests.conftest import ROOT
from tests.docker_stack import DockerStack, git, make_bare_repo
from tests.helpers import logged_in_client, wait_for
from tests.test_docker_e2e import finished, submit

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

FAKE = ROOT / "tests" / "fakes" / "agents" / "claude"
REPO = "acme/widgets"
# What one invocation of the fake reports: two turns of this usage, and this cost.
TURN = {"input_tokens": 1000, "output_tokens": 200, "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 7}  # fmt: skip
PER_CALL_IN = 2 * (1000 + 30 + 7)  # input + cache creation + cache read, per turn
PER_CALL_OUT = 2 * 200
PER_CALL_COST = 0.0125
STEPS = [{"write": {f"step{n}.txt": f"step {n}\n"}} for n in (1, 2, 3)]


# -- the stack, the repository, and reading what the product shows -------------------------


def agent_dir(root: Path, scenario: dict[str, Any]) -> Path:
    """A WHIM_AGENT_PATH_DIR: a copy of the fake ``claude`` (a symlink would point outside
    the container) and its scenario, readable and runnable by the container's users."""
    bin_dir = root / "agent-bin"
    bin_dir.mkdir()
    shutil.copy(FAKE, bin_dir / "claude")
    (bin_dir / "scenario.json").write_text(
        json.dumps({"usage": TURN, "cost": PER_CALL_COST, **scenario})
    )
    bin_dir.chmod(0o755)
    (bin_dir / "claude").chmod(0o755)
    (bin_dir / "scenario.json").chmod(0o644)
    return bin_dir


def pipeline_stack(
    docker_stack: Any, tmp_path: Path, scenario: dict[str, Any], **env: str
) -> DockerStack:
    stack: DockerStack = docker_stack(
        WHIM_AGENT="claude", WHIM_AGENT_PATH_DIR=str(agent_dir(tmp_path, scenario)), **env
    )
    return stack


def seed_repo(stack: DockerStack, files: dict[str, str] | None = None) -> Path:
    """The bare repository, with ``files`` committed on main, and every push to it kept in
    its reflog (so "pushed after each iteration" can be read off it)."""
    bare = make_bare_repo(stack.repos, REPO)
    git("--git-dir", str(bare), "config", "core.logAllRefUpdates", "true")
    if files:  # one more commit on main, made in the bare repository itself
        with tempfile.TemporaryDirectory() as scratch:
            env = {**os.environ, "GIT_INDEX_FILE": f"{scratch}/index", "GIT_AUTHOR_NAME": "t",
                   "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                   "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

            def plumb(*args: str, stdin: str | None = None) -> str:
                done = subprocess.run(
                    ["git", "-c", "safe.directory=*", "--git-dir", str(bare), *args],
                    input=stdin, env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                return done.stdout.strip()

            plumb("read-tree", "main")
            for path, content in files.items():
                blob = plumb("hash-object", "-w", "--stdin", stdin=content)
                plumb("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
            commit = plumb("commit-tree", plumb("write-tree"), "-p", "main", "-m", "setup")
            plumb("update-ref", "refs/heads/main", commit)
    subprocess.run(["chown", "-R", "1000:1000", str(stack.repos)], check=True)
    return bare


def commits(bare: Path, branch: str) -> list[tuple[str, str, list[str]]]:
    """``(sha, subject, files changed)`` of the branch's commits past main, oldest first."""
    shas = git("--git-dir", str(bare), "rev-list", "--reverse", f"main..{branch}").split()
    out = []
    for sha in shas:
        subject = git("--git-dir", str(bare), "log", "-1", "--format=%s", sha)
        files = git("--git-dir", str(bare), "diff-tree", "--no-commit-id", "--name-only", "-r",
                    sha).split()  # fmt: skip
        out.append((sha, subject, sorted(files)))
    return out


def pushes(bare: Path, branch: str) -> list[str]:
    """The branch heads each push left, oldest first (the bare repository's reflog)."""
    if not (bare / "logs" / "refs" / "heads" / branch).is_file():
        return []  # not pushed yet
    return git("--git-dir", str(bare), "reflog", "--format=%H", f"refs/heads/{branch}").split()[
        ::-1
    ]


def api(stack: DockerStack, path: str) -> Any:
    req = urllib.request.Request(f"{stack.base_url}{path}", headers={"X-API-Key": stack.api_key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def page(stack: DockerStack, path: str, user: Any) -> str:
    """A console page as the web server renders it for ``user`` (a session made here)."""
    session = logged_in_client(user).cookies["sessionid"].value
    req = urllib.request.Request(
        f"{stack.base_url}{path}", headers={"Cookie": f"sessionid={session}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and resp.url.endswith(path), resp.url  # not the login page
        return str(resp.read().decode())


def text_of(html: str) -> str:
    """The page's text, tags dropped and white space squeezed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def completed(item_id: uuid.UUID, timeout: float = 180) -> WorkItem:
    item: WorkItem = wait_for(
        lambda: finished(item_id), timeout=timeout, interval=0.5, what="the item to finish"
    )
    assert item.status == WorkItemStatus.COMPLETED, f"{item.error_category}: {item.error}"
    return item


# -- 1. the loop, and what it cost ------------------------------------------------------------


def test_three_iterations_each_pushed_and_the_fakes_cost_on_every_surface(
    docker_stack: Any, tmp_path: Path, user: Any
) -> None:
    stack = pipeline_stack(docker_stack, tmp_path, {"steps": STEPS})
    bare = seed_repo(stack)

    item_id = submit(stack, repo=REPO, spec="# Add widgets\n\nThree steps.")

    item = completed(item_id)
    made = commits(bare, item.branch)
    assert [subject for _, subject, _ in made] == [
        f"whim: iteration {n} — Add widgets" for n in (1, 2, 3)
    ]
    assert [files for _, _, files in made] == [[f"step{n}.txt"] for n in (1, 2, 3)]
    # One push per iteration: the remote's branch moved to each iteration's commit in turn.
    assert pushes(bare, item.branch) == [sha for sha, _, _ in made]
    assert item.commit_sha == made[-1][0] == stack.branch_head(REPO, item.branch)
    assert Worker.objects.get(work_item_id=item_id).status == WorkerStatus.COMPLETED

    # Three work invocations and the self-review: the fake's totals, on every surface.
    calls = 4
    tokens_in, tokens_out, cost = calls * PER_CALL_IN, calls * PER_CALL_OUT, calls * PER_CALL_COST
    detail = api(stack, f"/api/work/{item_id}")
    assert detail["costUsd"] == pytest.approx(cost)
    metrics = detail["metrics"]
    assert (metrics["tokensIn"], metrics["tokensOut"]) == (tokens_in, tokens_out)
    assert metrics["costUsd"] == pytest.approx(cost)
    assert (metrics["iterations"], metrics["filesModified"]) == (3, 3)
    assert api(stack, "/api/metrics")["tokenUsage"] == {
        "tokensIn": tokens_in,
        "tokensOut": tokens_out,
        "estimatedCostUsd": pytest.approx(cost),
    }
    dollars = f"${cost:.4f}"
    dashboard = text_of(page(stack, "/dashboard/", user))
    assert f"today {dollars} ({tokens_in + tokens_out} tokens)" in dashboard
    for name in (REPO, "claude-fake-1"):  # the by-repo and the by-model tables
        row = f"{name} {tokens_in + tokens_out} {dollars} {tokens_in + tokens_out} {dollars}"
        assert row in dashboard
    item_page = text_of(page(stack, f"/work/{item_id}/", user))
    assert f"Cost {dollars} · {tokens_in} in / {tokens_out} out tokens" in item_page


# -- 2. failing tests and the fix pass -----------------------------------------------------------

CHECK = """\
passed=0; failed=0
for f in step1.txt README.md FIXED.md; do
  if [ -f "$f" ]; then passed=$((passed + 1))
  else failed=$((failed + 1)); echo "FAILED $f missing"; fi
done
if [ "$failed" -gt 0 ]; then echo "===== $failed failed, $passed passed in 0.01s ====="; exit 1; fi
echo "===== $passed passed in 0.01s ====="
"""


def test_tests_failing_after_the_loop_get_one_fix_iteration_and_pass(
    docker_stack: Any, tmp_path: Path, user: Any
) -> None:
    scenario = {"steps": STEPS[:1], "fix": {"write": {"FIXED.md": "fixed\n"}}}
    stack = pipeline_stack(docker_stack, tmp_path, scenario)
    config = 'test_command = "sh check.sh"\nreview = false\n'
    bare = seed_repo(stack, {".whim/config.toml": config, "check.sh": CHECK})

    item_id = submit(stack, repo=REPO, spec="# Fix the checks\n\nMake them pass.")

    item = completed(item_id)
    assert [(subject, files) for _, subject, files in commits(bare, item.branch)] == [
        ("whim: iteration 1 — Fix the checks", ["step1.txt"]),
        ("whim: fix 1 — failing tests", ["FIXED.md"]),
    ]
    metrics = api(stack, f"/api/work/{item_id}")["metrics"]
    assert metrics["testStatus"] == "passed"
    assert (metrics["testsRun"], metrics["testsPassed"], metrics["testsFailed"]) == (3, 3, 0)
    assert metrics["iterations"] == 2
    tests = text_of(page(stack, f"/work/{item_id}/", user)).split(" Tests ", 1)[1]
    assert tests.startswith("Status passed Run / passed / failed 3 / 3 / 0 Files modified 2")
    wait_for(  # before the fix pass; the container's log is kept once it is removed
        lambda: (
            "tests: failed (2 passed, 1 failed of 3)"
            in Worker.objects.get(work_item_id=item_id).log_tail
        ),
        timeout=30,
        interval=0.5,
        what="the attempt's log",
    )


# -- 3. a needs-work review, its fix pass, and the pull request's comment ---------------------

GITHUB_TOKEN = "ghp_fake0123456789abcdefghijklmnopqrstuv"  # the fake GitHub's
# The fake, seeded with issues from $FAKE_GITHUB_SEED; GET /_fake/state answers its labels and
# comments; every request it serves is printed as a JSON line.
FAKE_GITHUB = """
import json, os, threading, time
from tests.fakes.github import FakeGitHub

# One line per request: the server's threads print one at a time (two prints at once could
# put two objects on one line).
_printing = threading.Lock()

class Recording(FakeGitHub):
    def _handle(self, request):
        if request.path == "/_fake/state":
            with self._lock:
                labels = {r: {str(n): v for n, v in by.items()} for r, by in self.labels.items()}
                comments = {r: {str(n): [c["body"] for c in v] for n, v in by.items()}
                            for r, by in self.comments.items()}
                return 200, {"labels": labels, "comments": comments}
        status, answer = super()._handle(request)
        line = json.dumps({"method": request.method, "path": request.path, "body": request.body,
                           "authorization": request.authorization, "status": status})
        with _printing:
            print(line, flush=True)
        return status, answer

fake = Recording(host="0.0.0.0", port=8080)
for issue in json.loads(os.environ.get("FAKE_GITHUB_SEED", "{}")).get("issues", []):
    fake.add_issue(issue.pop("repo"), issue.pop("number"), **issue)
fake.start()
print("listening", flush=True)
while True:
    time.sleep(3600)
"""


@contextlib.contextmanager
def fake_github_in_a_container(seed: dict[str, Any] | None = None) -> Iterator[tuple[str, Any]]:
    """tests/fakes/github.py in a container on a network of its own (the worker network's
    containers reach it only through the egress allowlist), seeded with ``seed``'s issues.
    Yields its address and a function returning the requests it served, as JSON objects."""
    client = docker.from_env()
    tag = uuid.uuid4().hex[:8]
    network = client.networks.create(f"whim-fakegh-{tag}", driver="bridge")
    container = None
    try:
        container = client.containers.run(
            os.environ.get("WORKER_IMAGE", "whim-worker:latest"),
            entrypoint=["python3", "-c", FAKE_GITHUB],
            name=f"whim-fakegh-{tag}",
            user="0",
            environment={
                "PYTHONPATH": "/srv",
                "PYTHONDONTWRITEBYTECODE": "1",
                "FAKE_GITHUB_SEED": json.dumps(seed or {}),
            },
            mounts=[Mount("/srv/tests", str(ROOT / "tests"), type="bind", read_only=True)],
            network=network.name,
            detach=True,
        )
        wait_for(
            lambda: b"listening" in container.logs(),
            timeout=30,
            interval=0.2,
            what="the fake GitHub to listen",
        )
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

        def served() -> list[dict[str, Any]]:
            lines = container.logs(stderr=False).decode().splitlines()
            return [json.loads(line) for line in lines if line.startswith("{")]

        yield address, served
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()


def test_a_needs_work_review_gets_one_fix_pass_and_its_findings_are_stored_and_posted(
    docker_stack: Any, tmp_path: Path, user: Any
) -> None:
    scenario = {
        "steps": STEPS[:1],
        "review": "needs-work",  # the re-review too: one fix pass, not more
        "review_fix": {"write": {"REVIEWED.md": "addressed\n"}},
    }
    with fake_github_in_a_container() as (address, served):
        stack = pipeline_stack(
            docker_stack,
            tmp_path,
            scenario,
            # The worker network reaches the fake GitHub and nothing else (workers/firewall.py).
            WORKER_EGRESS="allowlist",
            WORKER_EGRESS_ALLOW=address,
            GITHUB_TOKEN=GITHUB_TOKEN,
            GITHUB_API_URL=f"http://{address}:8080",
        )
        bare = seed_repo(stack)

        item_id = submit(stack, repo=REPO, spec="# Review widgets\n\nPlease.")

        item = completed(item_id)
        requests = served()
    assert [(subject, files) for _, subject, files in commits(bare, item.branch)] == [
        ("whim: iteration 1 — Review widgets", ["step1.txt"]),
        ("whim: review fix — Review widgets", ["REVIEWED.md"]),
    ]
    # The pull request, then the review as its comment, with the harness's token.
    pulls = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/pulls")]
    assert len(pulls) == 1, Worker.objects.get(work_item_id=item_id).log_tail
    [pull] = pulls
    assert pull["path"] == f"/repos/{REPO}/pulls" and pull["status"] == 201
    assert (pull["body"]["head"], pull["body"]["base"]) == (item.branch, "main")
    assert "## Review" in pull["body"]["body"]
    assert (item.pr_number, item.pr_url) == (7, f"https://github.example/{REPO}/pull/7")
    [comment] = [r for r in requests if r["path"].endswith("/comments")]
    assert comment["path"] == f"/repos/{REPO}/issues/7/comments" and comment["status"] == 201
    assert {pull["authorization"], comment["authorization"]} == {f"Bearer {GITHUB_TOKEN}"}
    posted = comment["body"]["body"]
    assert "Needs work before merging." in posted and "REVIEWED.md is missing" in posted

    # Stored in Whim's shape, on every surface.
    [review] = api(stack, f"/api/reviews/work-item/{item_id}")
    assert review["workItemId"] == str(item_id) and review["prNumber"] == 7
    assert review["modelUsed"] == "claude-fake-1" and review["repo"] == REPO
    findings = review["findings"]
    assert findings == {
        "specAlignment": {"score": "misaligned", "summary": "A task is missing.",
                          "gaps": ["REVIEWED.md is missing"], "extras": []},
        "codeQuality": {"score": "needs-work", "summary": "Needs another pass.",
                        "concerns": [{"file": "a.txt", "line": 1, "issue": "too terse",
                                      "suggestion": "say more"}]},
        "overallSummary": "Needs work before merging.",
    }  # fmt: skip
    assert api(stack, "/api/reviews") == [review]
    assert api(stack, "/api/reviews/pr/7") == review
    shown = page(stack, f"/work/{item_id}/", user)
    assert 'class="badge score-misaligned"' in shown and 'class="badge score-needs-work"' in shown
    text = text_of(shown)
    assert "Needs work before merging." in text and "REVIEWED.md is missing" in text
    assert "a.txt:1 too terse" in text and "Suggestion: say more" in text


# -- 4. a killed container, resumed from its pushed commit ------------------------------------


def test_a_container_killed_after_iteration_two_resumes_from_the_pushed_commit(
    docker_stack: Any, tmp_path: Path, user: Any
) -> None:
    # Step 3 waits first (only while the attempt's notes exist: not in the resumed attempt),
    # so the container is killed mid-iteration with two iterations pushed.
    steps = [*STEPS[:2], {**STEPS[2], "sleep": 120}]
    stack = pipeline_stack(docker_stack, tmp_path, {"steps": steps})
    bare = seed_repo(stack)

    item_id = submit(
        stack, repo=REPO, spec="# Resume widgets\n\nThree steps.", metadata={"review": False}
    )

    branch = wait_for(
        lambda: WorkItem.objects.get(pk=item_id).branch, timeout=60, what="the branch"
    )
    wait_for(
        lambda: len(pushes(bare, branch)) >= 2,
        timeout=120,
        interval=0.2,
        what="two iterations pushed",
    )
    pushed = stack.branch_head(REPO, branch)
    assert len(pushes(bare, branch)) == 2
    [container] = [c for c in stack.containers() if c.status == "running"]
    container.kill()  # the real thing: SIGKILL, no goodbye from the harness

    item = completed(item_id)
    first, second = Worker.objects.filter(work_item_id=item_id).order_by("created_at")
    assert first.status == WorkerStatus.FAILED and first.error_category == "CRASHED"
    assert second.status == WorkerStatus.COMPLETED
    made = commits(bare, branch)
    assert [(subject, files) for _, subject, files in made] == [
        ("whim: iteration 1 — Resume widgets", ["step1.txt"]),
        ("whim: iteration 2 — Resume widgets", ["step2.txt"]),
        ("whim: iteration 1 — Resume widgets", ["step3.txt"]),  # the retry's first and only
    ]
    assert made[1][0] == pushed and item.commit_sha == made[2][0]
    assert pushes(bare, branch) == [sha for sha, _, _ in made]  # nothing rewound or redone
    [resumed] = WorkItemEvent.objects.filter(work_item_id=item_id, kind="resumed")
    assert resumed.worker_id == second.pk and resumed.data["commitSha"] == pushed
    assert set(resumed.data) == {"commitSha", "requestId"}  # the heartbeat callback's id
    assert f"resumed from commit {pushed[:7]}" in text_of(page(stack, f"/work/{item_id}/", user))


# -- 5. learnings, from one item to the next ---------------------------------------------------

LEARNT = ["The widgets are counted in widgets.txt.", "Run sh check.sh before pushing."]


def test_learnings_round_trip_from_one_item_to_the_next(
    docker_stack: Any, tmp_path: Path, user: Any
) -> None:
    # The fake's log is a file in the checkout, so each invocation's record is pushed with it.
    scenario = {"steps": STEPS[:1], "learnings": LEARNT, "log": "AGENT_LOG.jsonl"}
    stack = pipeline_stack(docker_stack, tmp_path, scenario)
    seed_repo(stack)
    meta = {"review": False}

    first_id = submit(stack, repo=REPO, spec="# First widgets", metadata=meta)
    first = completed(first_id)
    [seen_first] = [json.loads(x) for x in stack.show(REPO, first.commit_sha, "AGENT_LOG.jsonl")
                    .splitlines()]  # fmt: skip
    assert seen_first["learnings"] is None  # nothing learnt yet

    learnt = api(stack, f"/api/learnings?repo={REPO}")
    assert sorted(entry["content"] for entry in learnt) == sorted(LEARNT)
    for entry in learnt:
        assert entry["repo"] == REPO and entry["workItemId"] == str(first_id)
        assert entry["spec"] == "# First widgets" and entry["embedding"] is None
    assert api(stack, "/api/learnings?repo=acme/other") == []
    shown = text_of(page(stack, f"/work/{first_id}/", user))
    assert all(line in shown for line in LEARNT)

    second_id = submit(stack, repo=REPO, spec="# Second widgets", metadata=meta)
    second = completed(second_id)
    [seen] = [json.loads(x) for x in stack.show(REPO, second.commit_sha, "AGENT_LOG.jsonl")
              .splitlines()]  # fmt: skip
    assert all(line in seen["learnings"] for line in LEARNT)
    assert ".whim/learnings.md" in seen["prompt"]
    assert len(api(stack, f"/api/learnings?repo={REPO}")) == 2 * len(LEARNT)
