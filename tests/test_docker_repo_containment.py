"""A hostile agent in a real container reaches its own repository and nothing else, and nothing
it writes there runs anywhere (workers/repo_mounts.py, the harness's hook-less receive-pack)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from orchestration.models import WorkItemStatus
from tests.docker_stack import DockerStack, make_bare_repo
from tests.helpers import wait_for
from tests.test_docker_e2e import finished, submit

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

# Run by the `command` agent in the checkout of acme/widgets. Each attempt is recorded in
# ATTACK.txt as DONE or blocked; the file is the agent's change, so the harness pushes it. The
# checkout's git directory is the harness's alone, so the agent pushes from a repository of
# its own making in /tmp.
HOSTILE = r"""
if [ "$WHIM_BRANCH" != attack ]; then echo next > NEXT.txt; exit 0; fi
R="${WHIM_GIT_BASE_URL#file://}"; R="${R%/}"
OWN="$R/acme/widgets.git"; VIC="$R/victim/other.git"; SEC="$R/acme/secret.git"
OUT="$PWD/ATTACK.txt"; : > "$OUT"
git init -q /tmp/mine && cd /tmp/mine
git -c user.name=a -c user.email=a@a commit -q --allow-empty -m mine
HOOK='#!/bin/sh
touch "'"$R"'/PWNED-hook" "$PWD/objects/PWNED-hook" 2>/dev/null
exit 0
'
export R OWN VIC SEC HOOK
try() {
  if sh -c "$2" >/dev/null 2>&1; then echo "$1=DONE" >> "$OUT"; else echo "$1=blocked" >> "$OUT"; fi
}
# objects/ must stay writable for pushes: stage a hooks dir and a whole common dir there.
mkdir -p "$OWN/objects/evil/hooks" "$OWN/objects/evil/refs" "$OWN/objects/evil/objects"
printf '%s' "$HOOK" > "$OWN/objects/evil/hooks/post-receive"
chmod +x "$OWN/objects/evil/hooks/post-receive"
printf '[core]\n\trepositoryformatversion = 0\n\tbare = true\n' > "$OWN/objects/evil/config"
echo "ref: refs/heads/main" > "$OWN/objects/evil/HEAD"

try push_victim 'git push -q -f "file://$VIC" HEAD:refs/heads/main'
try push_victim_path 'git push -q -f "$VIC" HEAD:refs/heads/pwned'
try rewind_secret 'git push -q -f "file://$SEC" HEAD:refs/heads/main'
try write_secret_ref 'git rev-parse HEAD > "$SEC/refs/heads/main"'
try read_victim_clone 'git clone -q "file://$VIC" /tmp/steal && cat /tmp/steal/README.md'
try read_victim_file 'cat "$VIC/HEAD"'
try list_other_owner 'ls "$R/victim"'
try own_hook 'printf "%s" "$HOOK" > "$OWN/hooks/update" && chmod +x "$OWN/hooks/update"'
try victim_hook 'printf "%s" "$HOOK" > "$VIC/hooks/update" && chmod +x "$VIC/hooks/update"'
try own_hooks_replaced 'rm -rf "$OWN/hooks" && mkdir "$OWN/hooks"'
try own_config_hookspath 'git config --file "$OWN/config" core.hooksPath "$OWN/objects/evil/hooks"'
try own_config_fsmonitor 'git config --file "$OWN/config" core.fsmonitor "touch $R/PWNED-fsmonitor"'
try own_config_append 'printf "[core]\n\tfsmonitor = touch $R/PWNED-fsmonitor\n" >> "$OWN/config"'
try victim_config 'git config --file "$VIC/config" core.hooksPath "$OWN/objects/evil/hooks"'
try own_commondir 'echo objects/evil > "$OWN/commondir"'
try own_attributes 'mkdir -p "$OWN/info" && echo "* filter=evil" >> "$OWN/info/attributes"'
try write_repos_root 'touch "$R/PWNED-file"'
try write_owner_dir 'touch "$R/acme/PWNED-file"'
try write_own_top 'touch "$OWN/PWNED-file"'
# Only the harness pushes, even to the agent's own repository (it runs as another user).
try own_push 'git push -q "file://$OWN" HEAD:refs/heads/agent-side'
try own_main_ref 'git rev-parse HEAD > "$OWN/refs/heads/main"'
# Controls: what the agent may do.
try own_read 'cat "$OWN/HEAD"'
try tmp_write 'touch /tmp/ok'
exit 0
"""
# An administrator's hook: it runs when a person (here root) pushes on the host, never in a
# container (uid 1000).
ADMIN_HOOK = """#!/bin/sh
if [ "$(id -u)" = 1000 ]; then touch "$PWD/objects/ADMIN-HOOK-in-container"
else touch "$PWD/objects/ADMIN-HOOK-on-host"; fi
exit 0
"""
ATTACKS = {
    "push_victim",
    "push_victim_path",
    "rewind_secret",
    "write_secret_ref",
    "read_victim_clone",
    "read_victim_file",
    "list_other_owner",
    "own_hook",
    "victim_hook",
    "own_hooks_replaced",
    "own_config_hookspath",
    "own_config_fsmonitor",
    "own_config_append",
    "victim_config",
    "own_commondir",
    "own_attributes",
    "write_repos_root",
    "write_owner_dir",
    "write_own_top",
    "own_push",
    "own_main_ref",
}
CONTROLS = {"own_read", "tmp_write"}
REPOS = ("acme/widgets", "victim/other")


def snapshot(root: Path, *, skip: set[Path]) -> dict[str, str]:
    """Every path under ``root`` (but ``skip``) with a hash of its kind, mode and content."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        info = path.lstat()
        if path.is_symlink():
            body = os.readlink(path).encode()
        elif path.is_file():
            body = path.read_bytes()
        else:
            body = b""
        found[str(path.relative_to(root))] = hashlib.sha256(
            f"{info.st_mode:o}:".encode() + body
        ).hexdigest()
    return found


def markers(root: Path) -> list[str]:
    """Whatever a hook, or an admin hook inside a container, left behind."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith("PWNED") or p.name == "ADMIN-HOOK-in-container"
    )


def host_push(stack: DockerStack, repo: str, tmp: Path) -> None:
    """A person pushing on the host, the repository's hooks enabled as usual."""
    home = tmp / f"home-{repo.replace('/', '-')}"
    home.mkdir()
    (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    checkout = home / "checkout"
    url = f"file://{stack.repos}/{repo}.git"
    for args in (
        ["clone", "-q", url, str(checkout)],
        [
            "-C",
            str(checkout),
            "-c",
            "user.name=p",
            "-c",
            "user.email=p@p",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "a person's push",
        ],
        ["-C", str(checkout), "push", "-q", "origin", "HEAD:refs/heads/by-a-person"],
    ):
        subprocess.run(["git", *args], env=env, check=True, capture_output=True)


def test_a_hostile_agent_reaches_only_its_own_repository_and_plants_nothing(
    docker_stack: Any, tmp_path: Path
) -> None:
    stack = docker_stack(WHIM_AGENT="command", WHIM_AGENT_COMMAND=HOSTILE)
    own = make_bare_repo(stack.repos, "acme/widgets")
    victim = make_bare_repo(stack.repos, "victim/other")
    make_bare_repo(stack.repos, "acme/secret")
    for bare in (own, victim):
        (bare / "hooks" / "post-receive").write_text(ADMIN_HOOK)
        (bare / "hooks" / "post-receive").chmod(0o755)
    # A push writes objects, refs and reflogs of its own repository; nothing else may change.
    pushed_into = {own / "objects", own / "refs", own / "logs"}
    before = snapshot(stack.repos, skip=pushed_into)
    victim_main = stack.branch_head("victim/other", "main")
    own_main = stack.branch_head("acme/widgets", "main")

    item_id = submit(stack, repo="acme/widgets", spec="# Attack", branch="attack")

    item = wait_for(partial(finished, item_id), timeout=180, interval=0.5, what="the attack")
    assert item.status == WorkItemStatus.COMPLETED, item.error
    report = dict(
        line.split("=", 1)
        for line in stack.show("acme/widgets", item.commit_sha, "ATTACK.txt").splitlines()
    )
    assert set(report) == ATTACKS | CONTROLS
    assert {name for name in ATTACKS if report[name] != "blocked"} == set()
    assert {name for name in CONTROLS if report[name] != "DONE"} == set()
    after = snapshot(stack.repos, skip=pushed_into)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], "written outside the agent's checkout and /tmp"
    assert stack.branch_head("acme/widgets", "main") == own_main  # its default branch too
    assert markers(stack.repos) == []

    # The next agents' harnesses push into both repositories: nothing planted runs there.
    nexts = [submit(stack, repo=repo, spec="# Next", branch="next") for repo in REPOS]
    for next_id in nexts:
        done = wait_for(partial(finished, next_id), timeout=180, interval=0.5, what="next")
        assert done.status == WorkItemStatus.COMPLETED, done.error
    assert markers(stack.repos) == []

    # Nor when a person pushes on the host, where the administrator's hook does run.
    for repo in REPOS:
        host_push(stack, repo, tmp_path)
        assert (stack.repos / f"{repo}.git" / "objects" / "ADMIN-HOOK-on-host").exists()
    assert markers(stack.repos) == []
    assert stack.branch_head("victim/other", "main") == victim_main
