"""Two Docker engines on one machine, for the two-node tests (tests/test_docker_nodes.py).

``second_engine`` (session): a second dockerd started by ``scripts/docker-node.sh`` with its
own socket, data root, exec root, pid file, bridge and address pool, the worker image copied
into it from the main engine. A test may kill it (a dead host) and start it again.

``two_nodes`` (per test): one gunicorn, one ``celery beat`` and two Celery workers started
as ``celery -A whim worker`` is, node ``a`` on the main engine and node ``b`` on the second,
each with its own ``DOCKER_HOST`` and a ``WHIM_CALLBACK_URL`` its engine's containers reach.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from django.conf import settings as django_settings

from orchestration.fleet import node_queue
from orchestration.services.apikeys import apikey_create
from tests.conftest import ROOT, CeleryWorkers, free_ports, start_web, stop_processes
from tests.docker_stack import docker_instance
from tests.helpers import wait_for

SCRIPT = ROOT / "scripts" / "docker-node.sh"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def _script(action: str, node: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), action, node],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Engine:
    """A dockerd this test session started (never the main one)."""

    node: str
    host: str  # unix://...

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=30)

    def answers(self) -> bool:
        return _script("status", self.node, timeout=15).returncode == 0

    def kill(self) -> None:
        """SIGKILL dockerd (and with it its containerd): the engine is gone, as on a crashed
        host, while the containers it started run on under their shims."""
        out = _script("kill", self.node)
        assert out.returncode == 0, out.stderr
        assert not self.answers()

    def start(self) -> None:
        out = _script("start", self.node, timeout=900)
        if out.returncode != 0:
            pytest.fail(f"the second engine did not start:\n{out.stderr[-3000:]}")


@pytest.fixture(scope="session")
def second_engine() -> Iterator[Engine]:
    """The second engine, started for the session (and stopped after it); skipped, with the
    reason, where this machine cannot run one."""
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    missing = [tool for tool in ("dockerd", "docker", "ip", "flock") if not shutil.which(tool)]
    if missing:
        pytest.skip(
            f"a second dockerd needs {', '.join(missing)} (scripts/docker.sh installs them)"
        )
    engine = Engine(node="b", host=_script("host", "b").stdout.strip())
    # The first start loads the worker image (about a minute for 1 GB); later ones find it.
    out = _script("start", engine.node, timeout=900)
    if out.returncode != 0:
        pytest.skip(f"this machine cannot run a second dockerd:\n{out.stderr[-2000:]}")
    yield engine
    _script("stop", engine.node, timeout=120)


@dataclass
class Node:
    """One node of the stack: its name, its engine's client and its Celery worker."""

    name: str
    engine: docker.DockerClient
    workers: CeleryWorkers
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)  # one per start of its worker


@dataclass
class TwoNodes:
    base_url: str
    api_key: str
    instance: str
    network: str
    repos: Path
    engine_b: Engine
    nodes: dict[str, Node] = field(default_factory=dict)

    def containers(self, node: str, *, live_only: bool = False) -> list[Any]:
        """This stack's containers on ``node``'s engine (running ones only if asked)."""
        return list(
            self.nodes[node].engine.containers.list(
                all=not live_only,
                ignore_removed=True,  # one removed meanwhile is not an error
                filters={"label": f"whim.instance={self.instance}"},
            )
        )

    def start_worker(self, node: str) -> None:
        """(Re)start ``node``'s Celery worker, as its host's process manager would."""
        entry = self.nodes[node]
        entry.proc = entry.workers.start(concurrency=3, **entry.env)  # type: ignore[arg-type]
        entry.logs.append(entry.workers.logs[-1])

    def kill_worker(self, node: str) -> None:
        """SIGKILL ``node``'s Celery worker and its pool (no warm shutdown, no acks)."""
        entry = self.nodes[node]
        assert entry.proc is not None
        entry.workers.kill9(entry.proc)


def _start_beat(
    env: dict[str, str], log: Path, procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """``celery -A whim beat``, added to ``procs`` at once (stopped even if it never starts)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "whim",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(log.with_suffix(".schedule")),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs.append(proc)
    wait_for(
        lambda: b"Configuration ->" in log.read_bytes() or proc.poll() is not None,
        timeout=60,
        what="celery beat to start",
    )
    if proc.poll() is not None:
        pytest.fail(f"celery beat exited early:\n{log.read_text()[-3000:]}")
    return proc


def _purge_node_queues(names: list[str]) -> None:
    """Drop what an earlier test left in the node queues (their names are not per test)."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    for name in names:
        client.delete(node_queue(name))
    client.close()


def _remove_stack(client: docker.DockerClient, instance: str, network: str) -> str | None:
    """Remove the instance's containers and worker network on one engine; the network's
    bridge name (for its firewall chains), if there was one."""
    for container in client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"whim.instance={instance}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    try:
        net = client.networks.get(network)
    except docker.errors.NotFound:
        return None
    bridge = (net.attrs.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        net.remove()
    return bridge


@pytest.fixture
def two_nodes(second_engine: Engine, celery_workers: Any, settings: Any) -> Iterator[Any]:
    """Factory: ``two_nodes(**env)`` starts the stack with ``env`` overrides for every
    process (``a_env=`` / ``b_env=`` for one node only) and returns a TwoNodes."""
    main, instance, network, repos = docker_instance(settings)
    from workers import firewall
    from workers.docker_runtime import DockerRuntime

    procs: list[subprocess.Popen[bytes]] = []
    made: list[TwoNodes] = []
    second_engine.start()  # a test before may have left it killed

    def make(
        a_env: dict[str, str] | None = None, b_env: dict[str, str] | None = None, **env: str
    ) -> TwoNodes:
        port, callback_port = free_ports(2)
        settings.WHIM_CALLBACK_PORT = callback_port
        settings.WHIM_NODE = "a"
        # Node a's worker network on the main engine is made here (its gateway is an address
        # gunicorn must bind); node b's worker makes its own on first use, on its engine,
        # and its containers call back to the second engine's bridge address, as a
        # worker-only host's containers call back to wherever the web server is.
        gateway_a = DockerRuntime().ensure_network()
        gateway_b = second_engine_gateway(second_engine)
        common = {
            "WHIM_RUNTIME": "docker",
            "WHIM_INSTANCE": instance,
            "WHIM_DOCKER_NETWORK": network,
            "PORT": str(port),
            "WHIM_CALLBACK_PORT": str(callback_port),
            "ALLOWED_HOSTS": "*",
            "WHIM_GIT_BASE_URL": f"file://{repos}/",
            "WHIM_LOCAL_REPOS_DIR": str(repos),
            "LOOP_INTERVAL": "1",
            "HEARTBEAT_INTERVAL": "1",
            "SWEEP_BEATS_EVERY": "1",  # coalesced heartbeats written each second
            "RETRY_DELAYS": "1,1,1",
            "WORKER_MEMORY": "512m",
            "WORKER_EGRESS": "none",
            "FAST_EXIT_SECONDS": "10",
            "NODE_TIMEOUT": "6",
            "NODE_HEARTBEAT_INTERVAL": "1",
            "WHIM_AGENT": "mock",
            "WHIM_NODE": "a",  # web and beat: never register a node of their own
            **env,
        }
        workers = celery_workers(**common)
        settings.WHIM_INSTANCE = instance
        _purge_node_queues(["a", "b"])
        _, key = apikey_create(name="nodes")
        base_env = {**workers.env, **common}
        procs.append(
            start_web(
                env=base_env,
                binds=[
                    f"127.0.0.1:{port}",
                    f"{gateway_a}:{callback_port}",
                    f"{gateway_b}:{callback_port}",
                ],
                log=ROOT / "test-artifacts" / f"{instance}-web.log",
            )
        )
        _start_beat(base_env, ROOT / "test-artifacts" / f"{instance}-beat.log", procs)
        stack = TwoNodes(
            base_url=f"http://127.0.0.1:{port}",
            api_key=key,
            instance=instance,
            network=network,
            repos=repos,
            engine_b=second_engine,
        )
        main_env = {k: v for k, v in os.environ.items() if k == "DOCKER_HOST"}
        node_env = {
            "a": {
                "WHIM_NODE": "a",
                "NODE_MAX_WORKERS": "2",
                "DOCKER_HOST": main_env.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                "WHIM_CALLBACK_URL": f"http://{gateway_a}:{callback_port}",
                **(a_env or {}),
            },
            "b": {
                "WHIM_NODE": "b",
                "NODE_MAX_WORKERS": "2",
                "DOCKER_HOST": second_engine.host,
                "WHIM_CALLBACK_URL": f"http://{gateway_b}:{callback_port}",
                **(b_env or {}),
            },
        }
        for name, client in (("a", main), ("b", second_engine.client())):
            stack.nodes[name] = Node(name, client, workers, node_env[name])
            stack.start_worker(name)
        made.append(stack)
        return stack

    yield make
    for stack in made:  # Celery first: a retry falling due would start a container
        stack.nodes["a"].workers.stop_all()
    stop_processes(procs, grace=15)
    bridges = [_remove_stack(main, instance, network)]
    if second_engine.answers():
        bridges.append(_remove_stack(second_engine.client(), instance, network))
    if firewall.usable():
        for bridge in bridges:
            if bridge:
                firewall.remove(bridge)
    shutil.rmtree(repos, ignore_errors=True)


def second_engine_gateway(engine: Engine) -> str:
    """The address of the second engine's own bridge on this host (scripts/docker-node.sh
    made it): where its containers' callbacks go."""
    configs = engine.client().networks.get("bridge").attrs.get("IPAM", {}).get("Config") or [{}]
    gateway = configs[0].get("Gateway")
    assert gateway, "the second engine's bridge has no address"
    return str(gateway)
