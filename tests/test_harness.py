"""The worker harness (workers/harness), run as a real process against a fake orchestrator,
a real bare git repository and a fake GitHub. No database, no Docker."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.git_http import FakeGitHttp
from tests.fakes.github import FakeGitHub
from tests.fakes.orchestrator import FakeOrchestrator
from tests.helpers import wait_for
from workers.harness.harness.github import pr_title
from workers.harness.harness.transport import backoff_delay

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "workers" / "harness"
WORKER_TOKEN = "wtok-" + "s3cr3t" * 4
GITHUB_TOKEN = "ghp_" + "G1thubT0ken" * 3
REPO = "acme/widget"
BRANCH = "whim/add-widget"
SPEC = "# Add the widget\n\nMake the widget spin.\n"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Remote:
    """A bare repository served as ``file://<base>acme/widget.git``."""

    base: Path
    bare: Path

    @property
    def base_url(self) -> str:
        return f"file://{self.base}/"

    def head(self, branch: str) -> str | None:
        try:
            return git("rev-parse", "--verify", f"refs/heads/{branch}", cwd=self.bare)
        except subprocess.CalledProcessError:
            return None

    def files_changed(self, sha: str) -> list[str]:
        return git("show", "--name-only", "--format=", sha, cwd=self.bare).splitlines()

    def show(self, ref: str, path: str) -> str:
        return git("show", f"{ref}:{path}", cwd=self.bare)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    base = tmp_path / "remotes"
    bare = base / "acme" / "widget.git"
    bare.mkdir(parents=True)
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("# widget\n")
    git("add", "README.md", cwd=seed)
    git("-c", "user.name=Seed", "-c", "user.email=seed@example.com", "commit", "-qm", "seed",
        cwd=seed)  # fmt: skip
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=seed)
    return Remote(base=base, bare=bare)


@pytest.fixture
def work_item() -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "repo": REPO,
        "branch": BRANCH,
        "spec": SPEC,
        "metadata": {"mock": "success", "mockSeconds": 0.5},
        "maxIterations": 50,
        "status": "assigned",
    }


@pytest.fixture
def orchestrator(work_item: dict[str, Any]) -> Iterator[FakeOrchestrator]:
    fake = FakeOrchestrator(worker_id=str(uuid.uuid4()), token=WORKER_TOKEN, work_item=work_item)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    yield fake
    fake.stop()


@pytest.fixture
def harness_env(
    tmp_path: Path, remote: Remote, orchestrator: FakeOrchestrator, work_item: dict[str, Any]
) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(HARNESS),
        "PYTHONUNBUFFERED": "1",
        "WORKER_ID": orchestrator.worker_id,
        "WORKER_TOKEN": WORKER_TOKEN,
        "ORCHESTRATOR_URL": orchestrator.url,
        "WORK_ITEM": json.dumps(work_item),
        "WHIM_AGENT": "mock",
        "WHIM_GIT_BASE_URL": remote.base_url,
        "WORKSPACE": str(tmp_path / "workspace"),
        "HEARTBEAT_INTERVAL": "0.2",
        "LOCK_WAIT_SECONDS": "10",
        "CALLBACK_RETRY_SECONDS": "20",
    }


def start_harness(env: dict[str, str], **output: Any) -> subprocess.Popen[str]:
    """The harness as a running process, for tests that act while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness"], env=env, cwd=ROOT, text=True, **output
    )


def run_harness(env: dict[str, str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def with_metadata(env: dict[str, str], **metadata: Any) -> dict[str, str]:
    item = json.loads(env["WORK_ITEM"])
    item["metadata"].update(metadata)
    return {**env, "WORK_ITEM": json.dumps(item)}


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def test_it_pushes_the_mock_change_and_reports_complete(
    harness_env: dict[str, str],
    remote: Remote,
    orchestrator: FakeOrchestrator,
    work_item: dict[str, Any],
) -> None:
    result = run_harness(harness_env)

    assert result.returncode == 0, explain(result)
    head = remote.head(BRANCH)
    assert head is not None, "the branch was not pushed"
    assert remote.files_changed(head) == ["WHIM_MOCK.md"]
    assert remote.show(head, "WHIM_MOCK.md") == f"whim mock change for {work_item['id']}"
    assert git("log", "-1", "--format=%an <%ae>%n%s", head, cwd=remote.bare) == (
        "Whim <whim@localhost>\nwhim: iteration 1 — Add the widget"
    )

    # Heartbeats go on while the harness commits and pushes, until the final callback.
    actions = orchestrator.actions()
    assert [a for a in actions if a != "heartbeat"] == ["register", "lock", "complete"]
    assert actions.index("heartbeat") < actions.index("lock")
    assert actions[-1] == "complete"
    assert orchestrator.of("register")[0].body == {"workItemId": work_item["id"]}
    assert orchestrator.of("lock")[0].body == {"repo": REPO, "files": ["WHIM_MOCK.md"]}
    complete = orchestrator.of("complete")[0].body
    assert complete["commitSha"] == head
    assert complete["branch"] == BRANCH
    assert "prUrl" not in complete and "prNumber" not in complete
    metrics = complete["metrics"]
    assert metrics["filesModified"] == 1
    assert metrics["tokensIn"] > 0 and metrics["tokensOut"] > 0
    assert metrics["duration"] >= 500
    assert all(call.bearer == WORKER_TOKEN for call in orchestrator.calls)
    assert all(call.path_token == WORKER_TOKEN for call in orchestrator.calls)


def test_heartbeats_show_the_mock_agents_progress(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    result = run_harness(with_metadata(harness_env, mockSeconds=1.2))

    assert result.returncode == 0, explain(result)
    beats = [call.body for call in orchestrator.of("heartbeat")]
    assert set(beats[0]) == {"iteration", "tokensIn", "tokensOut", "costUsd", "model"}
    assert max(beat["iteration"] for beat in beats) >= 2
    assert beats[-1]["tokensIn"] >= beats[0]["tokensIn"]


def test_a_per_attempt_app_token_is_revoked_when_the_attempt_ends(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator, github: FakeGitHub
) -> None:
    token = "ghs_fake" + "1".zfill(36)
    github.minted[token] = {"repositories": ["widget"]}
    env = {
        **harness_env,
        "GITHUB_TOKEN": token,
        "GITHUB_API_URL": github.url,
        "WHIM_GITHUB_TOKEN_REVOCABLE": "1",
    }

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    assert github.revoked == [token]
    [pull] = github.pulls_created()  # used for the pull request first, revoked after
    assert pull.authorization == f"Bearer {token}"
    assert orchestrator.of("complete")
    assert token not in result.stdout + result.stderr


def test_it_opens_a_pull_request_and_never_prints_the_tokens(
    harness_env: dict[str, str],
    remote: Remote,
    orchestrator: FakeOrchestrator,
    github: FakeGitHub,
    work_item: dict[str, Any],
) -> None:
    env = {**harness_env, "GITHUB_TOKEN": GITHUB_TOKEN, "GITHUB_API_URL": github.url}

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    [pull] = github.pulls_created()
    assert pull.path == "/repos/acme/widget/pulls"
    assert pull.authorization == f"Bearer {GITHUB_TOKEN}"
    assert pull.body["title"] == "Add the widget"
    assert pull.body["head"] == BRANCH
    assert pull.body["base"] == "main"
    assert "Make the widget spin." in pull.body["body"]
    assert work_item["id"] in pull.body["body"]
    complete = orchestrator.of("complete")[0].body
    assert complete["prUrl"] == "https://github.example/acme/widget/pull/7"
    assert complete["prNumber"] == 7
    assert complete["commitSha"] == remote.head(BRANCH)
    for secret in (WORKER_TOKEN, GITHUB_TOKEN):
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_it_finds_the_pull_request_that_already_exists(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator, github: FakeGitHub
) -> None:
    github.existing = {"html_url": "https://github.example/acme/widget/pull/3", "number": 3}
    env = {**harness_env, "GITHUB_TOKEN": GITHUB_TOKEN, "GITHUB_API_URL": github.url}

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    lookup = [r for r in github.requests if r.method == "GET"]
    assert lookup and lookup[0].query["head"] == [f"acme:{BRANCH}"]
    complete = orchestrator.of("complete")[0].body
    assert (complete["prUrl"], complete["prNumber"]) == (
        "https://github.example/acme/widget/pull/3",
        3,
    )


def test_it_opens_no_pull_request_without_a_github_api_for_a_local_remote(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator, github: FakeGitHub
) -> None:
    result = run_harness({**harness_env, "GITHUB_TOKEN": GITHUB_TOKEN})

    assert result.returncode == 0, explain(result)
    assert github.requests == []
    assert "prUrl" not in orchestrator.of("complete")[0].body


def test_it_reports_fail_when_the_mock_agent_fails(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    result = run_harness(with_metadata(harness_env, mock="fail"))

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "AGENT_ERROR"
    assert "mock agent failed" in fail.body["error"]
    assert fail.body["iteration"] >= 1
    assert "complete" not in orchestrator.actions()
    assert remote.head(BRANCH) is None


def test_it_reports_stuck_when_the_mock_agent_is_stuck(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    result = run_harness(with_metadata(harness_env, mock="stuck"))

    assert result.returncode == 2, explain(result)
    [stuck] = orchestrator.of("stuck")
    assert "stuck" in stuck.body["reason"]
    assert stuck.body["attempts"] >= 1
    assert orchestrator.actions()[-1] == "stuck"


def test_it_stops_at_once_when_a_heartbeat_is_fenced(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    orchestrator.answer_next("heartbeat", 200, {"success": True})
    orchestrator.answer_next("heartbeat", 409)
    started = time.monotonic()

    result = run_harness(with_metadata(harness_env, mockSeconds=30), timeout=20)

    assert result.returncode == 3, explain(result)
    assert time.monotonic() - started < 10
    fenced_at = orchestrator.of("heartbeat", status=409)[0].at
    assert not [call for call in orchestrator.calls if call.at > fenced_at]
    assert not set(orchestrator.actions()) & {"lock", "complete", "fail", "stuck"}
    assert remote.head(BRANCH) is None


def test_it_stops_at_once_when_a_command_agents_heartbeat_is_fenced(
    harness_env: dict[str, str], tmp_path: Path, orchestrator: FakeOrchestrator
) -> None:
    pid_file = tmp_path / "agent.pid"
    env = {
        **harness_env,
        "WHIM_AGENT": "command",
        "WHIM_AGENT_COMMAND": f"echo $$ > {pid_file}; exec sleep 30",
    }
    proc = start_harness(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Fence it only once the agent runs (the clone before it takes a variable time).
        wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip(),
            timeout=20,
            what="the agent to start",
        )
        orchestrator.answer_next("heartbeat", 409)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 3, f"exit {proc.returncode}\n{out}\n{err}"
    pid = int(pid_file.read_text())
    wait_for(lambda: not alive(pid), timeout=5, what="the agent to be gone with the harness")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_it_retries_complete_after_a_500(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    orchestrator.answer_next("complete", 500)

    result = run_harness(harness_env)

    assert result.returncode == 0, explain(result)
    assert [call.status for call in orchestrator.of("complete")] == [500, 200]
    assert len(orchestrator.of("complete", status=200)) == 1


def test_it_retries_through_an_orchestrator_that_is_not_listening_yet(
    harness_env: dict[str, str], work_item: dict[str, Any], tmp_path: Path
) -> None:
    from tests.conftest import free_port

    port = free_port()
    late: FakeOrchestrator | None = None
    env = {**harness_env, "ORCHESTRATOR_URL": f"http://127.0.0.1:{port}/w/{WORKER_TOKEN}"}
    out = tmp_path / "harness.log"
    with open(out, "w") as sink:
        proc = start_harness(env, stdout=sink, stderr=sink)
    try:
        wait_for(
            lambda: "refused; retrying" in out.read_text(), what="a refused connection retried"
        )
        late = FakeOrchestrator(
            worker_id=harness_env["WORKER_ID"], token=WORKER_TOKEN, work_item=work_item, port=port
        ).start()
        assert proc.wait(timeout=60) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if late is not None:
            late.stop()

    assert late is not None
    assert [call.status for call in late.of("register")] == [201]  # once, after the refusals
    assert len(late.of("complete", status=200)) == 1


def test_it_waits_for_a_refused_lock_and_then_completes(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    orchestrator.lock_refusals = 2

    result = run_harness(harness_env)

    assert result.returncode == 0, explain(result)
    assert len(orchestrator.of("lock")) == 3
    assert orchestrator.actions()[-1] == "complete"
    assert remote.head(BRANCH) == orchestrator.of("complete")[0].body["commitSha"]


def test_it_reports_stuck_and_pushes_nothing_when_the_lock_never_comes(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    orchestrator.lock_refusals = math.inf

    result = run_harness({**harness_env, "LOCK_WAIT_SECONDS": "2"})

    assert result.returncode == 2, explain(result)
    [stuck] = orchestrator.of("stuck")
    assert stuck.body["attempts"] == len(orchestrator.of("lock")) >= 2
    assert "WHIM_MOCK.md" in stuck.body["reason"]
    assert "complete" not in orchestrator.actions()
    assert remote.head(BRANCH) is None


def test_the_command_agent_commits_a_new_file(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    env = {**harness_env, "WHIM_AGENT": "command", "WHIM_AGENT_COMMAND": "echo hi > NEW.txt"}

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    head = remote.head(BRANCH)
    assert head is not None
    assert remote.files_changed(head) == ["NEW.txt"]
    assert remote.show(head, "NEW.txt") == "hi"
    assert orchestrator.of("lock")[0].body["files"] == ["NEW.txt"]
    assert orchestrator.of("complete")[0].body["commitSha"] == head


def test_the_command_agent_gets_a_prompt_with_the_spec_on_stdin_and_no_github_token(
    harness_env: dict[str, str], remote: Remote
) -> None:
    env = {
        **harness_env,
        "GITHUB_TOKEN": GITHUB_TOKEN,
        "WHIM_AGENT": "command",
        "WHIM_AGENT_COMMAND": 'cat > PROMPT.md; echo "token=${GITHUB_TOKEN:-none}" > env.txt',
    }

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    prompt = remote.show(BRANCH, "PROMPT.md")
    assert SPEC.strip() in prompt
    assert "<promise>COMPLETE</promise>" in prompt  # the loop's instruction
    # The spec is in the checkout too, and never committed.
    assert ".whim/spec.md" not in remote.files_changed(remote.head(BRANCH) or "")
    assert remote.show(BRANCH, "env.txt") == "token=none"


def test_it_keeps_what_the_command_agent_committed_itself(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    env = {
        **harness_env,
        "WHIM_AGENT": "command",
        "WHIM_AGENT_COMMAND": "echo a > A.txt && git add A.txt && git commit -qm 'agent commit'",
    }

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    assert orchestrator.of("lock")[0].body["files"] == ["A.txt"]
    assert remote.show(BRANCH, "A.txt") == "a"


def test_it_continues_a_branch_that_already_exists_on_the_remote(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    assert run_harness(harness_env).returncode == 0
    first = remote.head(BRANCH)

    result = run_harness(harness_env)

    assert result.returncode == 0, explain(result)
    second = remote.head(BRANCH)
    assert second != first
    assert git("rev-parse", f"{second}^", cwd=remote.bare) == first
    assert len(remote.show(BRANCH, "WHIM_MOCK.md").splitlines()) == 2


@pytest.mark.parametrize("hook", ["pre-receive", "update", "post-receive", "post-update"])
def test_its_push_never_runs_the_remote_repositorys_hooks(
    harness_env: dict[str, str], remote: Remote, tmp_path: Path, hook: str
) -> None:
    # git drops GIT_CONFIG_* (the harness's core.hooksPath) for a local push's receive-pack.
    marker = tmp_path / "hook-ran"
    script = remote.bare / "hooks" / hook
    script.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    script.chmod(0o755)

    result = run_harness(harness_env)

    assert result.returncode == 0, explain(result)
    assert remote.head(BRANCH) is not None, "the branch was not pushed"
    assert not marker.exists(), f"the repository's {hook} hook ran"


def test_a_failing_command_agent_is_an_agent_error_with_masked_output(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    env = {
        **harness_env,
        "WHIM_AGENT": "command",
        # The agent never has the token (env: empty); one it prints anyway is masked.
        "WHIM_AGENT_COMMAND": f'echo "env:$WORKER_TOKEN:"; echo "oops {WORKER_TOKEN}"; exit 4',
    }

    result = run_harness(env)

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "AGENT_ERROR"
    assert "exited with code 4" in fail.body["error"]
    assert "env::" in fail.body["error"]
    assert "oops ***" in fail.body["error"]
    assert WORKER_TOKEN not in json.dumps(fail.body)
    assert WORKER_TOKEN not in result.stdout


def test_a_missing_agent_binary_is_a_config_error(
    harness_env: dict[str, str], tmp_path: Path, orchestrator: FakeOrchestrator
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["which", tool], capture_output=True, text=True, check=True)
        (bin_dir / tool).symlink_to(found.stdout.strip())
    env = {**harness_env, "WHIM_AGENT": "claude", "PATH": str(bin_dir)}

    result = run_harness(env)

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "CONFIG_ERROR"
    assert "claude" in fail.body["error"]


def test_no_changes_is_reported_as_a_failure(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    env = {**harness_env, "WHIM_AGENT": "command", "WHIM_AGENT_COMMAND": "true"}

    result = run_harness(env)

    assert result.returncode == 1, explain(result)
    assert orchestrator.of("fail")[0].body["category"] == "NO_CHANGES"
    assert "lock" not in orchestrator.actions()


def test_a_missing_repository_is_a_clone_error(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator, work_item: dict[str, Any]
) -> None:
    env = {**harness_env, "WORK_ITEM": json.dumps({**work_item, "repo": "acme/nope"})}

    result = run_harness(env)

    assert result.returncode == 1, explain(result)
    [fail] = orchestrator.of("fail")
    assert fail.body["category"] == "CLONE_ERROR"
    assert fail.body["iteration"] == 0
    assert "stack" not in fail.body


def test_an_unknown_agent_is_reported_as_a_config_error(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    result = run_harness({**harness_env, "WHIM_AGENT": "gpt-9"})

    assert result.returncode == 1, explain(result)
    assert orchestrator.actions() == ["fail"]
    assert orchestrator.of("fail")[0].body["category"] == "CONFIG_ERROR"


def test_a_409_on_register_stops_without_callbacks(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    orchestrator.answer_next("register", 409)

    result = run_harness(harness_env)

    assert result.returncode == 3, explain(result)
    assert orchestrator.actions() == ["register"]


def test_sigterm_kills_the_agent_and_reports_terminated(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    env = {**harness_env, "WHIM_AGENT": "command", "WHIM_AGENT_COMMAND": "sleep 30"}
    proc = start_harness(env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: orchestrator.of("heartbeat"), what="a heartbeat")
        wait_for(lambda: list(Path(env["WORKSPACE"]).glob("repo/README.md")), what="the clone")
        time.sleep(0.3)
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 1, out
    assert orchestrator.of("fail")[0].body["category"] == "TERMINATED"


def test_whim_lock_lets_the_agent_lock_files_itself(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator
) -> None:
    env = {
        **harness_env,
        "WHIM_AGENT": "command",
        "WHIM_AGENT_COMMAND": (
            "mkdir -p src && whim-lock src/a.py > lock.json && echo x > src/a.py"
            " && whim-unlock src/a.py > /dev/null"
        ),
    }

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    assert orchestrator.actions().count("lock") == 2
    assert orchestrator.of("lock")[0].body == {"repo": REPO, "files": ["src/a.py"]}
    assert orchestrator.of("unlock")[0].body == {"repo": REPO, "files": ["src/a.py"]}


def test_whim_lock_exits_1_when_another_worker_holds_the_file(
    harness_env: dict[str, str], tmp_path: Path, orchestrator: FakeOrchestrator
) -> None:
    orchestrator.lock_refusals = 1
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {**harness_env, "WHIM_REPO": REPO, "WHIM_REPO_DIR": str(checkout)}

    result = subprocess.run(
        [str(HARNESS / "bin" / "whim-lock"), "docs/x.md"],
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 1, explain(result)
    answer = json.loads(result.stdout)
    assert answer["acquired"] is False
    assert answer["blockedFiles"] == ["docs/x.md"]


def test_https_git_authenticates_with_a_header_never_a_url(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    server = FakeGitHttp(root=remote.base, token=GITHUB_TOKEN).start()
    try:
        env = {**harness_env, "WHIM_GIT_BASE_URL": server.url, "GITHUB_TOKEN": GITHUB_TOKEN}

        result = run_harness(env)
    finally:
        server.stop()

    assert result.returncode == 0, explain(result)
    assert remote.head(BRANCH) == orchestrator.of("complete")[0].body["commitSha"]
    assert {r.method for r in server.requests} == {"GET", "POST"}  # fetched and pushed
    assert all(r.authorized for r in server.requests)
    assert not any(GITHUB_TOKEN in r.path for r in server.requests)
    # The git directory lives apart from the checkout (the harness's alone).
    checkout_config = (tmp_path / "workspace" / ".whim-git" / "config").read_text()
    assert GITHUB_TOKEN not in checkout_config
    assert "x-access-token" not in checkout_config
    assert GITHUB_TOKEN not in result.stdout + result.stderr


def test_https_git_without_a_token_is_a_clone_error_not_a_prompt(
    harness_env: dict[str, str], remote: Remote, orchestrator: FakeOrchestrator
) -> None:
    server = FakeGitHttp(root=remote.base, token=GITHUB_TOKEN).start()
    try:
        result = run_harness({**harness_env, "WHIM_GIT_BASE_URL": server.url}, timeout=30)
    finally:
        server.stop()

    assert result.returncode == 1, explain(result)
    assert orchestrator.of("fail")[0].body["category"] == "CLONE_ERROR"


def test_the_pull_request_title_is_the_specs_first_heading() -> None:
    assert pr_title("intro\n\n## Fix the login ##\n# Later", fallback="x") == "Fix the login"
    assert pr_title("\n  just a line\nmore", fallback="x") == "just a line"
    assert pr_title("", fallback="Whim: b") == "Whim: b"


def test_backoff_grows_with_jitter_up_to_a_cap() -> None:
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (20, 30.0)]:
        delays = [backoff_delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_the_git_directory_is_the_harness_s_alone_and_a_planted_config_never_runs(
    harness_env: dict[str, str], orchestrator: FakeOrchestrator, tmp_path: Path
) -> None:
    marker = tmp_path / "fsmonitor-ran"
    # The agent rewrites what a checkout's .git would hold: a config whose fsmonitor runs a
    # command on `git status`, and a pre-commit hook.
    plant = (
        "rm -f .git; mkdir -p .git/hooks; "
        f"printf '[core]\\n\\tfsmonitor = touch {marker}\\n' > .git/config; "
        f"printf '#!/bin/sh\\ntouch {marker}\\n' > .git/hooks/pre-commit; "
        "chmod +x .git/hooks/pre-commit; echo change > CHANGED.md"
    )
    env = {**harness_env, "WHIM_AGENT": "command", "WHIM_AGENT_COMMAND": plant}

    result = run_harness(env)

    assert result.returncode == 0, explain(result)
    assert not marker.exists()
    git_dir = tmp_path / "workspace" / ".whim-git"
    assert git_dir.is_dir() and git_dir.stat().st_mode & 0o777 == 0o700
    [complete] = orchestrator.of("complete")
    assert complete.body["commitSha"]
