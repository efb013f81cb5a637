"""A Docker instance of the bench's own: an instance name, its worker network (with the
firewall, as in production) and the environment for processes that start containers on it;
``close()`` removes every container labelled with it, the network and its firewall rules."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.conf import settings

from bench import procs
from bench.core import Context


class DockerInstance:
    def __init__(self, ctx: Context) -> None:
        import docker

        from workers.docker_runtime import DockerRuntime

        self.client = docker.from_env()
        self.instance = f"bench-{uuid.uuid4().hex[:8]}"
        self.network = f"whim-{self.instance}"
        self.callback_port = procs.free_port()
        self.saved = {
            k: getattr(settings, k)
            for k in ("WHIM_INSTANCE", "WHIM_DOCKER_NETWORK", "WHIM_CALLBACK_PORT", "WORKER_EGRESS")
        }
        settings.WHIM_INSTANCE, settings.WHIM_DOCKER_NETWORK = self.instance, self.network
        settings.WHIM_CALLBACK_PORT, settings.WORKER_EGRESS = self.callback_port, "none"
        self.runtime = DockerRuntime()
        self.gateway = self.runtime.ensure_network()
        self.env = {
            "WHIM_RUNTIME": "docker",
            "WHIM_INSTANCE": self.instance,
            "WHIM_DOCKER_NETWORK": self.network,
            "WHIM_CALLBACK_PORT": str(self.callback_port),
            "WHIM_CALLBACK_URL": f"http://{self.gateway}:{self.callback_port}",
            "WORKER_EGRESS": "none",
            "WORKER_MEMORY": "512m",
            "ALLOWED_HOSTS": "*",
        }
        settings.WHIM_CALLBACK_URL = self.env["WHIM_CALLBACK_URL"]

    def remove(self, name_or_id: str) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.client.api.remove_container(name_or_id, v=True, force=True)

    def containers(self) -> list[Any]:
        return list(
            self.client.containers.list(
                all=True, ignore_removed=True, filters={"label": f"whim.instance={self.instance}"}
            )
        )

    def close(self) -> None:
        import docker

        from workers import firewall
        from workers.docker_runtime import bridge_name

        for container in self.containers():
            self.remove(container.id)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.client.networks.get(self.network).remove()
        if firewall.usable():
            firewall.remove(bridge_name(self.network))
        for key, value in self.saved.items():
            setattr(settings, key, value)
