"""The Docker runtime: one hardened, labelled container per attempt (docker-py).

Hardening (all configurable sizes): non-root user, every capability dropped,
no-new-privileges, read-only root filesystem with tmpfs /tmp and a size-limited tmpfs
/workspace (WORKER_WORKSPACE_SIZE), memory with no swap, CPU and PID limits, no privileged
mode, no host network or PID namespace, no Docker socket, the instance's own bridge network
with inter-container traffic off and a firewall (``workers/firewall.py``): a container
reaches the callback listener and what ``WORKER_EGRESS`` allows, nothing else. Of
WHIM_LOCAL_REPOS_DIR, only the item's own bare repository, its hooks hidden and its top level
read-only (``repo_mounts.py``). The environment holds only what the job needs (see
``worker_environment``): never SECRET_KEY, database or broker URLs; the token and the keys
come on stdin, never in the container's configuration (``_deliver``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import docker
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from orchestration.choices import WorkerEgress
from orchestration.models import Worker, WorkItem
from workers import firewall, github_app
from workers.agent_bin import container_agent_bin
from workers.docker_state import container_state, parse_statfs
from workers.repo_mounts import repository_mounts
from workers.runtime import (
    LABEL_NODE,
    SECRETS_ON_STDIN,
    ContainerRuntime,
    ContainerState,
    DiskUsage,
    register,
    split_secrets,
    worker_environment,
)

logger = logging.getLogger(__name__)

LABEL_WORKER = "whim.worker"
LABEL_WORK_ITEM = "whim.work_item"
LABEL_INSTANCE = "whim.instance"
WORKSPACE = "/workspace"


def container_name(worker_id: object) -> str:
    """Deterministic per worker, so a retried create finds the container it already made."""
    return f"whim-{settings.WHIM_INSTANCE}-{worker_id}"


ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def bridge_name(network: str, node: str | None = None) -> str:
    """A stable interface name for the network's bridge (at most 15 characters), so the
    firewall can name it. Derived from the node (WHIM_NODE) too: two engines on one host
    share the kernel's interface names, and each makes its own network."""
    key = f"{network}\0{node or settings.WHIM_NODE}"
    return "whim" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _revoke_unused_token(env: dict[str, str]) -> None:
    if env.get("WHIM_GITHUB_TOKEN_REVOCABLE") == "1":
        github_app.token_revoke(env["GITHUB_TOKEN"])


@functools.cache
def _firewall_once(bridge: str, callback_port: int, egress: str, gateway: str) -> None:
    """Apply the network policy once per process and policy (a start calls this each time)."""
    if not firewall.usable():
        logger.warning(
            "not root or no iptables: the worker network %s has no firewall (containers can "
            "reach this host's services and any address; README, Security model)",
            bridge,
        )
        return
    allow = (
        firewall.resolve(settings.WORKER_EGRESS_ALLOW) if egress == WorkerEgress.ALLOWLIST else ()
    )
    callback_host = urlsplit(settings.WHIM_CALLBACK_URL).hostname or gateway
    if callback_host != gateway:  # callbacks to another host go out through the FORWARD path
        allow = (*allow, *firewall.resolve([callback_host]))
    firewall.apply(
        firewall.Policy(bridge=bridge, callback_port=callback_port, egress=egress, allow=allow)
    )


@register("docker")
class DockerRuntime(ContainerRuntime):
    name = "docker"

    @classmethod
    def usable(cls) -> bool:
        return docker_available()

    def __init__(self) -> None:
        self.client = docker.from_env(timeout=settings.DOCKER_TIMEOUT)
        # The worker network's gateway, by network name, once per process (a start looked
        # the network up twice, ~4 ms each); dropped when a create finds the network gone.
        self._gateways: dict[str, str] = {}

    # -- network ---------------------------------------------------------------------------
    def ensure_network(self) -> str:
        """The instance's worker network's gateway address; the network is created on first
        use (inter-container traffic off, a bridge name of our own) and its firewall
        (``workers/firewall.py``) applied once per process. Looked up once per process and
        network name (``_gateways``)."""
        name = settings.WHIM_DOCKER_NETWORK
        cached = self._gateways.get(name)
        if cached is not None:
            return cached
        try:
            network = self.client.networks.get(name)
        except NotFound:
            try:
                network = self.client.networks.create(
                    name,
                    driver="bridge",
                    labels={LABEL_INSTANCE: settings.WHIM_INSTANCE},
                    options={
                        ICC_OPTION: "false",
                        BRIDGE_NAME_OPTION: bridge_name(name),
                    },
                )
            except APIError:  # created concurrently
                network = self.client.networks.get(name)
            network.reload()
        configs = network.attrs.get("IPAM", {}).get("Config") or [{}]
        gateway: str = configs[0].get("Gateway", "")
        options = network.attrs.get("Options") or {}
        if options.get(ICC_OPTION) != "false":
            logger.warning(
                "worker network %s lets containers reach each other (made before Whim turned "
                "inter-container traffic off): remove it so the next start makes it anew",
                name,
            )
        bridge = options.get(BRIDGE_NAME_OPTION) or f"br-{(network.id or '')[:12]}"
        _firewall_once(bridge, settings.WHIM_CALLBACK_PORT, settings.WORKER_EGRESS, gateway)
        self._gateways[name] = gateway
        return gateway

    def callback_base(self) -> str:
        """The orchestrator URL as seen from a container (WHIM_CALLBACK_URL wins)."""
        if settings.WHIM_CALLBACK_URL:
            return str(settings.WHIM_CALLBACK_URL).rstrip("/")
        return f"http://{self.ensure_network()}:{settings.WHIM_CALLBACK_PORT}"

    # -- lifecycle -------------------------------------------------------------------------
    def _find(self, container_id: str) -> Container | None:
        try:
            return self.client.containers.get(container_id)
        except NotFound:
            return None

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        """Create and start the attempt's container, hardened and labelled, and give it its
        secrets on stdin (``_deliver``). A name conflict (409): an earlier try or a concurrent
        start made it, and it is adopted (``_adopt``) and given them. No lookup before the
        create: the first try, by far the most common, pays one round trip less."""
        name = container_name(worker.pk)
        options, env = self.container_options(worker=worker, work_item=work_item, token=token)
        try:
            try:
                container = self.client.containers.run(**options)
            except NotFound as exc:
                if isinstance(exc, ImageNotFound) or not self._gateways:
                    raise
                # The network went away since this process looked it up: anew, once (its
                # gateway, so the callback URL, may have changed).
                _revoke_unused_token(env)
                self._gateways.clear()
                options, env = self.container_options(
                    worker=worker, work_item=work_item, token=token
                )
                container = self.client.containers.run(**options)
        except APIError as exc:
            if exc.status_code != 409:
                _revoke_unused_token(env)  # no container of ours will use it
                raise
            container = self._adopt(name)  # an earlier try's, or a concurrent start's
            if container.status in ("exited", "dead"):
                _revoke_unused_token(env)
                return container.id or name
            # The start that made it may have given it its secrets, or died first: one line
            # more is harmless (its supervisor reads the first), one less leaves it waiting.
        container_id = container.id or name
        self._deliver(container_id, env)
        return container_id

    def _deliver(self, container_id: str, env: dict[str, str]) -> None:
        """Its secrets (``split_secrets``) on the container's stdin, one JSON line its
        supervisor reads before it starts anything. A delivery that fails removes the
        container (it would wait, then exit) and raises: the start is retried."""
        _, secrets = split_secrets(env)
        try:
            sock = self.client.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            raw = getattr(sock, "_sock", sock)  # docker-py hands over a SocketIO for a socket
            try:
                raw.sendall(json.dumps(secrets).encode() + b"\n")
            finally:
                raw.close()
        except (DockerException, OSError):
            _revoke_unused_token(env)
            with contextlib.suppress(DockerException):
                self.client.api.remove_container(container_id, force=True)
            raise

    def container_options(
        self, *, worker: Worker, work_item: WorkItem, token: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """docker-py's ``containers.run`` arguments for the attempt's container (every
        hardening option), and its whole environment: ``options["environment"]`` holds what
        is not secret, and says the rest comes on stdin (``_deliver``). The benchmark's bare
        docker-py baseline starts the same container from these."""
        # The network, with the firewall of this process's settings (once per process), even
        # when WHIM_CALLBACK_URL spares us the gateway: a process that only set the callback
        # URL (scripts/run.sh, compose) must not start containers under another's policy.
        self.ensure_network()
        env = worker_environment(
            worker=worker, work_item=work_item, token=token, callback_base=self.callback_base()
        )
        # WHIM_AGENT_PATH_DIR, read-only and first on PATH (agent_bin.py).
        agent_mounts, agent_env = container_agent_bin()
        env.update(agent_env)
        public, _ = split_secrets(env)
        options: dict[str, Any] = {
            "image": settings.WORKER_IMAGE,
            "name": container_name(worker.pk),
            "detach": True,
            "environment": {**public, SECRETS_ON_STDIN: "1"},
            # Open, for the one line of secrets (``_deliver``); its supervisor then closes it.
            "stdin_open": True,
            "labels": {
                LABEL_WORKER: str(worker.pk),
                LABEL_WORK_ITEM: str(work_item.pk),
                LABEL_INSTANCE: settings.WHIM_INSTANCE,
                LABEL_NODE: worker.node_id or settings.WHIM_NODE,
            },
            # The supervisor starts as root to run the harness and the agent as two users
            # (uid 1000 and 1001): those three capabilities are all it keeps.
            "user": "0:0",
            "cap_drop": ["ALL"],
            "cap_add": ["SETUID", "SETGID", "KILL"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            # /workspace is a tmpfs of WORKER_WORKSPACE_SIZE, not a volume: an anonymous volume
            # lives on the host's disk with no limit, and a size-limited volume needs a storage
            # driver with quotas (overlay2 on xfs with pquota, a loop device), which most hosts
            # lack. A tmpfs has a hard size everywhere and never touches the host's disk; its
            # pages count against the container's memory, hence WORKER_MEMORY includes it
            # (W010). ``exec``: the repository's own scripts and tests run from the checkout.
            "tmpfs": {
                "/tmp": f"rw,nosuid,nodev,size={settings.WORKER_TMPFS_SIZE},mode=1777",  # noqa: S108
                "/home/whim": "rw,nosuid,nodev,size=64m,uid=1000,gid=1000,mode=0700",
                "/home/agent": "rw,nosuid,nodev,size=256m,uid=1001,gid=1001,mode=0700",
                # The harness's and the agent's shared checkout: group whimwork, setgid and
                # sticky (neither can rename what the other made; the image's /workspace too).
                WORKSPACE: f"rw,exec,nosuid,nodev,size={settings.WORKER_WORKSPACE_SIZE},"
                "uid=1000,gid=1002,mode=3770",
            },
            "mounts": [],
            "mem_limit": settings.WORKER_MEMORY,
            "memswap_limit": settings.WORKER_MEMORY,
            "nano_cpus": int(settings.WORKER_CPUS * 1_000_000_000),
            "pids_limit": settings.WORKER_PIDS,
            # What the agent prints is capped on the host's disk too: two rotated files, each
            # at least the tail Whim keeps (the engine's default json-file log is unbounded).
            "log_config": {
                "type": "json-file",
                "config": {"max-size": f"{max(settings.LOG_TAIL_BYTES, 1 << 20)}", "max-file": "2"},
            },
            "privileged": False,
            "network": settings.WHIM_DOCKER_NETWORK,
            "init": True,
        }
        # Its own repository only, and none of it that can run code (repo_mounts.py).
        options["mounts"] += repository_mounts(settings.WHIM_LOCAL_REPOS_DIR, work_item.repo)
        options["mounts"] += agent_mounts
        if settings.WHIM_DOCKER_RUNTIME:
            options["runtime"] = settings.WHIM_DOCKER_RUNTIME
        return options, env

    def _adopt(self, name: str) -> Container:
        """The container a concurrent start is creating under ``name``, started if it is only
        ``created`` (docker-py may have timed out after the daemon created it).

        The daemon reserves the name before the container can be looked up, so a 409 on
        create may briefly be followed by 404 on inspect: wait for it (bounded).
        """
        deadline = time.monotonic() + settings.DOCKER_TIMEOUT
        while True:
            container = self._find(name)
            if container is not None:
                if container.status == "created":
                    with contextlib.suppress(APIError):  # the other start may win the race
                        container.start()
                return container
            if time.monotonic() > deadline:
                raise RuntimeError(f"container {name} was reserved but never appeared")
            time.sleep(0.1)

    def stop(self, *, container_id: str, grace_seconds: int = 10) -> None:
        container = self._find(container_id)
        if container is not None and container.status in ("running", "restarting", "paused"):
            try:
                container.stop(timeout=grace_seconds)
            except NotFound:
                pass  # removed meanwhile: stopped enough
            except APIError as exc:
                if exc.status_code != 409:  # 409: already stopping or stopped
                    raise

    def kill(self, *, container_id: str) -> None:
        container = self._find(container_id)
        if container is not None and container.status == "running":
            try:
                container.kill()
            except (NotFound, APIError) as exc:  # 409: not running any more
                logger.info("kill of %s: %s", container_id[:12], type(exc).__name__)

    def remove(self, *, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, v=True, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    def inspect(self, *, container_id: str) -> ContainerState | None:
        container = self._find(container_id)
        return container_state(container) if container is not None else None

    def list_labelled(self) -> list[ContainerState]:
        found = self.client.containers.list(
            all=True,
            ignore_removed=True,  # one removed meanwhile is not an error
            filters={"label": f"{LABEL_INSTANCE}={settings.WHIM_INSTANCE}"},
        )
        return [container_state(c) for c in found]

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        """The last ``lines`` lines, read as a stream and capped at LOG_TAIL_BYTES, so a
        container that printed gigabytes never grows this process's memory."""
        try:
            stream = self.client.api.logs(
                container_id, stdout=True, stderr=True, stream=True, follow=False, tail=lines
            )
            budget = settings.LOG_TAIL_BYTES
            chunks: collections.deque[bytes] = collections.deque()
            size = 0
            for chunk in stream:
                chunks.append(chunk)
                size += len(chunk)
                while size > budget and chunks:
                    size -= len(chunks.popleft())
        except NotFound:
            return None
        text = b"".join(chunks).decode("utf-8", errors="replace")
        return text.splitlines()[-lines:]

    def workspace_usage(self, *, container_id: str) -> DiskUsage | None:
        """``stat -f`` on /workspace inside a running container (one short exec, as the
        container's user; bounded by DOCKER_TIMEOUT). None when it is not running or the exec
        fails (a container at its PID limit, say)."""
        container = self._find(container_id)
        if container is None or container.status != "running":
            return None
        try:
            result = container.exec_run(
                ["stat", "-f", "-c", "%S %b %a", WORKSPACE], user="1000:1000", stderr=False
            )
        except (APIError, DockerException, OSError) as exc:
            logger.info("workspace of %s: %s", container_id[:12], type(exc).__name__)
            return None
        output = result.output if isinstance(result.output, bytes) else None  # not streamed
        return parse_statfs(result.exit_code, output)


def docker_available() -> bool:
    """True when a Docker engine answers (used to pick the default runtime)."""
    try:
        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except (DockerException, OSError):
        return False
