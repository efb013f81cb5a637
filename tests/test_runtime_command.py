"""``manage.py whim_runtime``: which runtime agents run in, and ``--gateway`` for Docker.

No Docker engine: the command's other runtimes are real, and ``--gateway`` meets a faked Docker
client (the boundary), as in ``test_docker_runtime_unit.py``.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from orchestration.models import Worker, WorkItem
from workers import runtime as runtime_registry
from workers.runtime import ContainerRuntime


def whim_runtime(*args: str) -> str:
    out = io.StringIO()
    call_command("whim_runtime", *args, stdout=out)
    return out.getvalue()


class SealedRuntime(ContainerRuntime):
    """An isolating runtime that is never asked to start anything here."""

    name = "sealed"
    isolated = True

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        raise AssertionError("whim_runtime never starts a container")


@pytest.fixture
def sealed(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """SealedRuntime registered under a name of its own and made WHIM_RUNTIME."""
    name = f"sealed-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(runtime_registry._REGISTRY, name, SealedRuntime)
    settings.WHIM_RUNTIME = name
    yield name
    runtime_registry._instance.cache_clear()  # the per-process instance of a gone name


@pytest.mark.parametrize("name", ["fake", "local"])
def test_it_prints_a_runtime_that_does_not_isolate_and_says_so(settings: Any, name: str) -> None:
    settings.WHIM_RUNTIME = name
    assert whim_runtime() == f"{name} (NOT isolated: agents run on this machine)\n"


def test_it_prints_an_isolating_runtime_as_isolated(sealed: str) -> None:
    assert whim_runtime() == f"{sealed} (isolated)\n"


def test_auto_prints_the_runtime_it_resolved_to(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WHIM_RUNTIME = "auto"
    monkeypatch.setattr(runtime_registry, "_auto_runtime", lambda: "local")
    assert whim_runtime() == "local (NOT isolated: agents run on this machine)\n"


def test_an_unknown_runtime_is_refused_with_the_known_ones(settings: Any) -> None:
    settings.WHIM_RUNTIME = "podman"
    with pytest.raises(LookupError, match=r"unknown runtime 'podman'; known: .*fake.*local"):
        whim_runtime()


@pytest.mark.parametrize("name", ["fake", "local"])
def test_gateway_is_refused_when_the_runtime_is_not_docker(settings: Any, name: str) -> None:
    settings.WHIM_RUNTIME = name
    with pytest.raises(CommandError, match=f"the runtime is '{name}', not docker"):
        whim_runtime("--gateway")


def test_gateway_is_refused_when_auto_resolved_to_another_runtime(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WHIM_RUNTIME = "auto"
    monkeypatch.setattr(runtime_registry, "_auto_runtime", lambda: "local")
    with pytest.raises(CommandError, match="the runtime is 'local', not docker"):
        whim_runtime("--gateway")


def test_gateway_prints_the_worker_networks_gateway(settings: Any) -> None:
    settings.WHIM_RUNTIME = "docker"
    settings.WHIM_DOCKER_NETWORK = "whim-workers-test"
    client = mock.Mock()
    client.networks.get.return_value.attrs = {
        "IPAM": {"Config": [{"Gateway": "172.30.0.1"}]},
        "Options": {"com.docker.network.bridge.name": "whimtest"},
    }
    with (
        mock.patch("workers.docker_runtime.docker.from_env", return_value=client),
        mock.patch("workers.firewall.usable", return_value=False),  # no rules for a fake bridge
    ):
        out = whim_runtime("--gateway")

    assert out == "172.30.0.1\n"
    client.networks.get.assert_called_once_with("whim-workers-test")
    client.networks.create.assert_not_called()
