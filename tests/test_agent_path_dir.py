"""WHIM_AGENT_PATH_DIR (workers/agent_bin.py): an operator's directory of agent executables is
bound read-only at /opt/whim/agent-bin and put first on a worker container's PATH; the local
runtime puts it first on the harness's PATH; a value that is not an existing absolute
directory is a startup error (orchestration.E071)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest import mock

import docker
import pytest

from orchestration.checks import check_agent_path_dir
from tests.conftest import ROOT
from tests.factories import WorkerFactory
from tests.test_docker_runtime_unit import runtime_with
from workers import local_runtime
from workers.agent_bin import AGENT_BIN, IMAGE_PATH, local_path

pytestmark = pytest.mark.django_db


def started_options(settings: Any) -> dict[str, Any]:
    settings.WHIM_CALLBACK_URL = "http://10.9.8.7:8000"  # no network to look the gateway up on
    worker = WorkerFactory.create()
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.return_value.id = "abc"
    runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t0k")
    options: dict[str, Any] = client.containers.run.call_args.kwargs
    return options


def test_the_directory_is_bound_read_only_and_first_on_the_containers_path(
    settings: Any, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    settings.WHIM_AGENT_PATH_DIR = str(tmp_path / "link")

    options = started_options(settings)

    binds = [m for m in options["mounts"] if m["Target"] == AGENT_BIN]
    assert binds == [
        {
            "Target": AGENT_BIN,
            "Source": str(tmp_path / "real"),  # what the link named when the container started
            "Type": "bind",
            "ReadOnly": True,
        }
    ]
    path = options["environment"]["PATH"].split(":")
    assert path[0] == AGENT_BIN
    assert path[1:] == IMAGE_PATH.split(":")  # whim-lock's /opt/whim/bin and the rest stay
    assert "/opt/whim/bin" in path


def test_without_the_setting_nothing_is_mounted_and_the_images_path_is_kept(
    settings: Any,
) -> None:
    settings.WHIM_AGENT_PATH_DIR = ""

    options = started_options(settings)

    assert not [m for m in options["mounts"] if m["Target"] == AGENT_BIN]
    assert "PATH" not in options["environment"]


def test_the_runtimes_path_is_the_images_own() -> None:
    dockerfile = (ROOT / "workers" / "image" / "Dockerfile").read_text()
    match = re.search(r"^\s*PATH=(\S+)\s*$", dockerfile, re.MULTILINE)
    assert match is not None, "the Dockerfile sets no PATH"
    assert match[1] == IMAGE_PATH


def test_the_local_runtime_puts_the_directory_first_on_the_harness_path(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WHIM_AGENT_PATH_DIR = str(tmp_path)
    settings.RUN_DIR = str(tmp_path / "run")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    worker = WorkerFactory.create()
    with mock.patch.object(local_runtime.subprocess, "Popen") as popen:
        popen.return_value.pid = 4242
        popen.return_value.wait.return_value = 0
        local_runtime.LocalRuntime().start(worker=worker, work_item=worker.work_item, token="t")

    assert popen.call_args.kwargs["env"]["PATH"] == f"{tmp_path}:/usr/bin:/bin"
    settings.WHIM_AGENT_PATH_DIR = ""
    assert local_path("/usr/bin:/bin") == "/usr/bin:/bin"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("agent-bin", "is not an absolute path"),
        ("/nonexistent/whim/agent-bin", "is not an existing directory"),
        ("FILE", "is not an existing directory"),
    ],
)
def test_a_path_dir_that_is_not_an_existing_absolute_directory_is_an_error(
    settings: Any, tmp_path: Path, value: str, problem: str
) -> None:
    if value == "FILE":
        value = str(tmp_path / "claude")
        Path(value).write_text("#!/bin/sh\n")
    settings.WHIM_AGENT_PATH_DIR = value

    errors = check_agent_path_dir(None)

    assert [e.id for e in errors] == ["orchestration.E071"]
    assert "WHIM_AGENT_PATH_DIR" in errors[0].msg and problem in errors[0].msg


@pytest.mark.parametrize("value", ["", "DIR"])
def test_an_empty_or_existing_absolute_path_dir_passes(
    settings: Any, tmp_path: Path, value: str
) -> None:
    settings.WHIM_AGENT_PATH_DIR = str(tmp_path) if value == "DIR" else value

    assert check_agent_path_dir(None) == []
