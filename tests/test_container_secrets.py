"""The Docker runtime hands a container its secrets on stdin (``DockerRuntime._deliver``),
never in its configuration, against a faked Docker client (the boundary); the supervisor's
side is ``test_harness_secrets.py``, the real engine's ``test_docker_e2e.py``."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import docker
import pytest

from tests.factories import WorkerFactory
from tests.test_docker_runtime_unit import delivered, name_taken, runtime_with

pytestmark = pytest.mark.django_db


def test_keys_and_passed_through_credentials_come_on_stdin_only(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ANTHROPIC_API_KEY = "sk-ant-key"
    settings.OPENAI_API_KEY = "sk-openai-key"
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_token")
    monkeypatch.setenv("NPM_TOKEN", "npm_token")
    settings.WHIM_AGENT_ENV = ["GITHUB_TOKEN", "NPM_TOKEN"]
    worker = WorkerFactory.create()
    client = mock.Mock()
    client.containers.run.return_value.id = "abc"

    runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t0k")

    secrets = delivered(client)
    env = client.containers.run.call_args.kwargs["environment"]
    for name, value in [
        ("ANTHROPIC_API_KEY", "sk-ant-key"),
        ("OPENAI_API_KEY", "sk-openai-key"),
        ("GITHUB_TOKEN", "ghp_token"),
        ("NPM_TOKEN", "npm_token"),
    ]:
        assert secrets[name] == value
        assert name not in env and value not in json.dumps(env)
    assert env["WHIM_AGENT"] and env["WORKER_ID"] == str(worker.pk)  # the rest stays


def test_a_delivery_that_fails_removes_the_container_and_raises() -> None:
    worker = WorkerFactory.create()
    client = mock.Mock()
    client.containers.run.return_value.id = "abc"
    client.api.attach_socket.side_effect = docker.errors.APIError(
        "attach failed", response=mock.Mock(status_code=500)
    )

    with pytest.raises(docker.errors.APIError):
        runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t0k")

    client.api.remove_container.assert_called_once_with("abc", force=True)


def test_an_adopted_container_that_already_exited_gets_no_secrets() -> None:
    worker = WorkerFactory.create()
    client, existing = name_taken("exited")

    assert runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t") == (
        "made-before"
    )

    existing.start.assert_not_called()
    client.api.attach_socket.assert_not_called()
