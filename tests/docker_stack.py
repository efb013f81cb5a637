"""A real stack for end-to-end tests: dockerd, the worker image, gunicorn reachable from the
worker network, Celery worker + beat with the docker runtime, and local bare git repos."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestration.services.apikeys import apikey_create
from tests.conftest import ROOT, CeleryWorkers, free_ports, start_web, stop_processes

REPOS_ROOT = ROOT / ".run" / "test-repos"


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def make_bare_repo(root: Path, repo: str) -> Path:
    """``root/owner/name.git`` with one commit on main, writable by the container user."""
    bare = root / f"{repo}.git"
    seed = root / "seed" / repo
    seed.mkdir(parents=True)
    git("init", "-q", "-b", "main", str(seed))
    (seed / "README.md").write_text("seed\n")
    git("add", "README.md", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "seed", cwd=seed)
    bare.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "-q", "--bare", str(seed), str(bare))
    subprocess.run(["chown", "-R", "1000:1000", str(root)], check=True)
    return bare


class DockerStack:
    def __init__(
        self, workers: CeleryWorkers, base_url: str, repos: Path, instance: str, api_key: str
    ) -> None:
        self.workers = workers
        self.base_url = base_url
        self.repos = repos
        self.instance = instance
        self.api_key = api_key
        self.client = docker.from_env()

    def containers(self) -> list[Any]:
        return list(
            self.client.containers.list(
                all=True,
                ignore_removed=True,  # one removed meanwhile is not an error
                filters={"label": f"whim.instance={self.instance}"},
            )
        )

    def branch_head(self, repo: str, branch: str) -> str:
        return git(
            "--git-dir", str(self.repos / f"{repo}.git"), "rev-parse", f"refs/heads/{branch}"
        )

    def show(self, repo: str, ref: str, path: str) -> str:
        return git("--git-dir", str(self.repos / f"{repo}.git"), "show", f"{ref}:{path}")


def docker_instance(settings: Any) -> tuple[docker.DockerClient, str, str, Path]:
    """The main engine (with the worker image, else the test fails saying so), and a fresh
    instance: its name, its own worker network's name (as in production) and its bare-repos
    directory; the first two set in ``settings``."""
    client = docker.from_env()
    try:
        client.ping()
        client.images.get(os.environ.get("WORKER_IMAGE", "whim-worker:latest"))
    except Exception as exc:
        pytest.fail(f"these tests need dockerd and the worker image (`make worker-image`): {exc}")
    instance = f"test-{uuid.uuid4().hex[:8]}"
    network = f"whim-{instance}"
    settings.WHIM_INSTANCE, settings.WHIM_DOCKER_NETWORK = instance, network
    repos = REPOS_ROOT / instance
    repos.mkdir(parents=True)
    return client, instance, network, repos


@pytest.fixture
def docker_stack(celery_workers: Any, settings: Any) -> Iterator[Any]:
    """Factory: ``docker_stack(**env)`` starts gunicorn + Celery worker/beat on the docker
    runtime with ``env`` overrides, and returns a DockerStack. Everything is stopped and every
    labelled container removed afterwards."""
    client, instance, network, repos = docker_instance(settings)
    from workers import firewall
    from workers.docker_runtime import DockerRuntime, bridge_name

    procs: list[subprocess.Popen[bytes]] = []
    made: list[DockerStack] = []

    def make(**env: str) -> DockerStack:
        port, callback_port = free_ports(2)
        settings.WHIM_CALLBACK_PORT = callback_port
        gateway = DockerRuntime().ensure_network()
        overrides = {
            "WHIM_RUNTIME": "docker",
            "WHIM_INSTANCE": instance,
            "WHIM_DOCKER_NETWORK": network,
            "PORT": str(port),
            "WHIM_CALLBACK_PORT": str(callback_port),
            "WHIM_CALLBACK_URL": f"http://{gateway}:{callback_port}",
            "ALLOWED_HOSTS": "*",
            "WHIM_GIT_BASE_URL": f"file://{repos}/",
            "WHIM_LOCAL_REPOS_DIR": str(repos),
            "LOOP_INTERVAL": "1",
            "HEARTBEAT_INTERVAL": "1",
            "SWEEP_BEATS_EVERY": "1",  # coalesced heartbeats written each second
            "RETRY_DELAYS": "1,1,1",
            "WORKER_MEMORY": "512m",
            # Local repos only: nothing to allow (and no DNS queries off this machine).
            "WORKER_EGRESS": "none",
            "FAST_EXIT_SECONDS": "10",
            **env,
        }
        workers = celery_workers(**overrides)
        settings.WHIM_INSTANCE = instance
        _, key = apikey_create(name="e2e")
        procs.append(
            start_web(
                env={**workers.env, **overrides},
                binds=[f"127.0.0.1:{port}", f"{gateway}:{callback_port}"],
                log=ROOT / "test-artifacts" / f"{instance}-web.log",
            )
        )
        workers.start(concurrency=4, beat=True)
        stack = DockerStack(workers, f"http://127.0.0.1:{port}", repos, instance, key)
        made.append(stack)
        return stack

    yield make
    # Celery first: a retry falling due meanwhile would start a container nobody removes.
    for stack in made:
        stack.workers.stop_all()
    stop_processes(procs, grace=15)
    for container in client.containers.list(
        all=True,
        ignore_removed=True,  # one removed meanwhile is not an error
        filters={"label": f"whim.instance={instance}"},
    ):
        with contextlib.suppress(docker.errors.NotFound):  # the observer got there first
            container.remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.networks.get(network).remove()
    if firewall.usable():
        firewall.remove(bridge_name(network))
    shutil.rmtree(repos, ignore_errors=True)
