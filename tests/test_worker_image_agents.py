"""The worker image's agents, for real (issue 10): the Claude Code and Codex CLIs installed by
`make worker-image` (workers/image/install-agents.sh) run as the agent user and report the
versions pinned in the Dockerfile; an operator's WHIM_AGENT_PATH_DIR comes first on the
agent's PATH in a container the real runtime started, and the agent cannot write into it."""

from __future__ import annotations

import os
import re
import stat
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import ContainerError, ImageNotFound

from orchestration.models import WorkItemStatus
from tests.conftest import ROOT
from tests.docker_stack import make_bare_repo
from tests.helpers import wait_for
from tests.test_docker_e2e import finished, submit

pytestmark = pytest.mark.docker

DOCKERFILE = ROOT / "workers" / "image" / "Dockerfile"
PINS = {"claude": "CLAUDE_CODE_VERSION", "codex": "CODEX_VERSION"}


def pinned(agent: str) -> str:
    match = re.search(rf"^ARG {PINS[agent]}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match is not None, f"the Dockerfile pins no {PINS[agent]}"
    return match[1]


def requested() -> tuple[set[str], str]:
    """The agents the image was asked to hold, as build.sh reads WORKER_AGENTS: unset or empty
    means both (what `make test` builds)."""
    raw = re.sub(r"\s", "", os.environ.get("WORKER_AGENTS", "")).lower()
    if not raw:
        return set(PINS), raw
    return ({name for name in raw.split(",") if name} - {"none"}), raw


@pytest.mark.parametrize("agent", sorted(PINS))
def test_the_images_agent_cli_runs_as_the_agent_user_and_reports_its_pinned_version(
    agent: str,
) -> None:
    wanted, raw = requested()
    if agent not in wanted:
        pytest.skip(f"WORKER_AGENTS={raw!r} builds the worker image without {agent} on purpose")
    image = os.environ.get("WORKER_IMAGE", "whim-worker:latest")
    client = docker.from_env()
    try:
        client.images.get(image)
    except (ImageNotFound, docker.errors.DockerException) as exc:
        pytest.fail(f"these tests need dockerd and the worker image (`make worker-image`): {exc}")
    run = partial(
        client.containers.run,
        image,
        remove=True,
        user="1001:1001",  # the agent user, as the supervisor runs it
        network_mode="none",  # no API key, no network: --version must not need either
        read_only=True,
        tmpfs={"/tmp": "rw,size=64m,mode=1777"},
        environment={"HOME": "/tmp"},
    )
    # Through sh, so a missing CLI is a failed run (removed) that says why, not a failed start.
    script = (
        'command -v "$0" >/dev/null || { echo "$0 is not in the image. /etc/whim/agents:"; '
        'cat /etc/whim/agents || echo "(none: built before the agents)"; exit 127; } >&2; '
        'exec "$0" --version'
    )
    try:
        out = run(entrypoint=["sh", "-c", script, agent]).decode()
    except ContainerError as exc:
        pytest.fail(f"{agent} --version failed in {image}: {exc}")

    assert re.search(rf"(^|\s){re.escape(pinned(agent))}(\s|$)", out), out


# The operator's own `claude`: reports what the agent sees, then tries to change the mount.
PROBE = """#!/bin/sh
cat >/dev/null
{
  echo "claude=$(command -v claude)"
  echo "whim-lock=$(command -v whim-lock)"
  echo "uid=$(id -u)"
  touch /opt/whim/agent-bin/planted 2>/dev/null && echo "create=allowed" || echo "create=denied"
  { echo pwned >> /opt/whim/agent-bin/claude; } 2>/dev/null && echo "rewrite=allowed" \
    || echo "rewrite=denied"
} > AGENT-BIN.txt
"""


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_the_agent_path_dir_is_first_on_the_agents_path_and_read_only(
    docker_stack: Any, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "agent-bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text(PROBE)
    # Writable by everyone on the host: only the read-only mount can stop the agent.
    claude.chmod(0o777)
    bin_dir.chmod(0o777)
    stack = docker_stack(
        WHIM_AGENT="command", WHIM_AGENT_COMMAND="claude", WHIM_AGENT_PATH_DIR=str(bin_dir)
    )
    make_bare_repo(stack.repos, "acme/widgets")

    item_id = submit(stack, repo="acme/widgets", spec="# Probe", branch="probe")

    item = wait_for(partial(finished, item_id), timeout=180, interval=0.5, what="the probe")
    assert item.status == WorkItemStatus.COMPLETED, item.error
    report = dict(
        line.split("=", 1)
        for line in stack.show("acme/widgets", item.commit_sha, "AGENT-BIN.txt").splitlines()
    )
    assert report["claude"] == "/opt/whim/agent-bin/claude"  # before the image's own claude
    assert report["whim-lock"] == "/opt/whim/bin/whim-lock"
    assert report["uid"] == "1001"
    assert report["create"] == report["rewrite"] == "denied"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["claude"]
    assert claude.read_text() == PROBE
    assert stat.S_IMODE(claude.stat().st_mode) == 0o777
