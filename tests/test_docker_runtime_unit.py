"""The Docker runtime against a faked Docker client (the boundary): options and bounds."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import docker
import pytest

from tests.factories import WorkerFactory
from workers import docker_runtime, firewall
from workers.docker_runtime import (
    BRIDGE_NAME_OPTION,
    ICC_OPTION,
    DockerRuntime,
    container_name,
)
from workers.docker_state import container_state
from workers.runtime import FORBIDDEN_ENV, worker_environment

pytestmark = pytest.mark.django_db


def runtime_with(api: Any) -> DockerRuntime:
    """A runtime on the mock ``api``, its worker network taken as made and firewalled."""
    with mock.patch("workers.docker_runtime.docker.from_env") as from_env:
        from_env.return_value = api
        runtime = DockerRuntime()
    runtime.ensure_network = mock.Mock(return_value="172.30.0.1")  # type: ignore[method-assign]
    return runtime


def delivered(client: Any) -> dict[str, str]:
    """The secrets the runtime wrote on the (mock) container's stdin: one JSON line."""
    [attach] = client.api.attach_socket.call_args_list
    assert attach.kwargs["params"] == {"stdin": 1, "stream": 1}
    raw = client.api.attach_socket.return_value._sock
    [write] = raw.sendall.call_args_list
    line: bytes = write.args[0]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    raw.close.assert_called_once()
    return dict(json.loads(line))


def test_logs_of_a_container_that_printed_gigabytes_stay_within_the_byte_bound(
    settings: Any,
) -> None:
    settings.LOG_TAIL_BYTES = 64 * 1024
    chunk = b"x" * 1023 + b"\n"

    def endless(*args: Any, **kwargs: Any) -> Any:
        return (chunk for _ in range(1024 * 1024))  # 1 GiB, produced lazily

    client = mock.Mock()
    client.api.logs.side_effect = endless
    lines = runtime_with(client).logs(container_id="c", lines=1_000_000)

    assert lines is not None
    assert sum(len(line) + 1 for line in lines) <= settings.LOG_TAIL_BYTES
    assert client.api.logs.call_args.kwargs["stream"] is True


def test_start_hardens_labels_and_names_the_container(settings: Any) -> None:
    settings.WHIM_CALLBACK_URL = "http://10.9.8.7:8000"
    settings.WHIM_DOCKER_RUNTIME = "runsc"
    worker = WorkerFactory.create()
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.return_value.id = "abc"

    assert runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t0k")

    options = client.containers.run.call_args.kwargs
    assert options["name"] == container_name(worker.pk)
    # Root only to start the harness and the agent as two users: three capabilities, no more.
    assert options["user"] == "0:0" and options["cap_drop"] == ["ALL"]
    assert sorted(options["cap_add"]) == ["KILL", "SETGID", "SETUID"]
    assert options["security_opt"] == ["no-new-privileges:true"] and options["read_only"]
    assert options["privileged"] is False and options["runtime"] == "runsc"
    assert options["mem_limit"] == options["memswap_limit"]
    # A container printing without end cannot fill the host's disk with its log.
    assert options["log_config"]["type"] == "json-file"
    assert options["log_config"]["config"]["max-file"] == "2"
    assert int(options["log_config"]["config"]["max-size"]) <= 2 * max(
        settings.LOG_TAIL_BYTES, 1 << 20
    )
    assert options["labels"]["whim.worker"] == str(worker.pk)
    assert options["labels"]["whim.work_item"] == str(worker.work_item_id)
    assert "network_mode" not in options and "pid_mode" not in options
    assert not any("docker.sock" in str(m.get("Source")) for m in options["mounts"])
    assert not options.get("volumes")
    env = options["environment"]
    assert not {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} & set(env)
    # The token is not in the container's configuration: it comes on stdin.
    assert options["stdin_open"] is True and env["WHIM_SECRETS_ON_STDIN"] == "1"
    assert not {"ORCHESTRATOR_URL", "WORKER_TOKEN"} & set(env)
    assert not any("t0k" in value for value in env.values())
    assert delivered(client) == {
        "ORCHESTRATOR_URL": "http://10.9.8.7:8000/w/t0k",
        "WORKER_TOKEN": "t0k",
    }


def test_secrets_named_in_whim_agent_env_are_still_never_passed(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = sorted(FORBIDDEN_ENV)
    for name in [*secrets, "GITHUB_TOKEN"]:
        monkeypatch.setenv(name, f"value-of-{name}")
    settings.WHIM_AGENT_ENV = [*secrets, "GITHUB_TOKEN"]
    worker = WorkerFactory.create()

    env = worker_environment(
        worker=worker, work_item=worker.work_item, token="t0k", callback_base="http://h:1"
    )

    assert "GITHUB_WEBHOOK_SECRET" in secrets and "SECRET_KEY" in secrets
    assert not set(secrets) & set(env)
    assert env["GITHUB_TOKEN"] == "value-of-GITHUB_TOKEN"


def test_the_state_says_how_long_a_finished_container_ran_by_the_daemons_clock() -> None:
    container = mock.Mock(id="abc", status="exited", labels={"whim.worker": "w"})
    container.attrs = {
        "State": {
            "ExitCode": 7,
            "OOMKilled": False,
            "StartedAt": "2026-11-22T09:00:00.123456789Z",
            "FinishedAt": "2026-11-22T09:00:00.373456789Z",
        }
    }
    state = container_state(container)
    assert state.ran_seconds == pytest.approx(0.25)
    assert (state.exit_code, state.labels) == (7, {"whim.worker": "w"})

    container.attrs["State"]["FinishedAt"] = "0001-01-01T00:00:00Z"  # still running
    assert container_state(container).ran_seconds is None
    container.attrs["State"]["FinishedAt"] = "2026-11-22T09:00:01Z"
    for garbage in ("garbage", "2026-11-22T25:00:00Z", "2026-11-22T09:00:00+25:00", None):
        container.attrs["State"]["StartedAt"] = garbage
        assert container_state(container).ran_seconds is None, garbage


@pytest.mark.parametrize("status", [404, 409])
def test_stop_tolerates_a_container_already_gone_or_stopping(status: int) -> None:
    client = mock.Mock()
    container = client.containers.get.return_value
    container.status = "running"
    error = docker.errors.NotFound if status == 404 else docker.errors.APIError
    container.stop.side_effect = error("gone", response=mock.Mock(status_code=status))

    runtime_with(client).stop(container_id="abc", grace_seconds=1)

    container.stop.assert_called_once_with(timeout=1)


def test_stop_reports_a_daemon_that_refuses_for_another_reason() -> None:
    client = mock.Mock()
    container = client.containers.get.return_value
    container.status = "running"
    container.stop.side_effect = docker.errors.APIError("boom", response=mock.Mock(status_code=500))

    with pytest.raises(docker.errors.APIError):
        runtime_with(client).stop(container_id="abc", grace_seconds=1)


def name_taken(status: str) -> tuple[Any, Any]:
    """A client whose create finds the name taken (409) by a container in ``status``."""
    client = mock.Mock()
    existing = client.containers.get.return_value
    existing.status = status
    existing.id = "made-before"
    client.containers.run.side_effect = docker.errors.APIError(
        "Conflict", response=mock.Mock(status_code=409)
    )
    return client, existing


def test_a_retried_start_adopts_the_container_the_first_try_created() -> None:
    worker = WorkerFactory.create()
    client, existing = name_taken("created")

    container_id = runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t")

    assert container_id == "made-before"
    existing.start.assert_called_once()
    client.containers.run.assert_called_once()  # the name conflicted: adopted, not made twice
    assert delivered(client)["WORKER_TOKEN"] == "t"  # its maker died before giving them


def test_a_start_installs_this_processs_egress_policy_though_the_callback_url_is_set(
    settings: Any,
) -> None:
    # scripts/run.sh sets WHIM_CALLBACK_URL, so the gateway is never looked up: the process
    # starting containers must still install the firewall its own settings ask for.
    settings.WHIM_CALLBACK_URL = "http://10.9.8.7:8000"
    settings.WHIM_CALLBACK_PORT = 8123
    settings.WORKER_EGRESS = "allowlist"
    settings.WORKER_EGRESS_ALLOW = ["192.0.2.10"]
    worker = WorkerFactory.create()
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.return_value.id = "abc"
    client.networks.get.return_value.attrs = {
        "IPAM": {"Config": [{"Gateway": "172.30.0.1"}]},
        "Options": {ICC_OPTION: "false", BRIDGE_NAME_OPTION: "whimunit00001"},
    }
    docker_runtime._firewall_once.cache_clear()
    with (
        mock.patch("workers.docker_runtime.docker.from_env", return_value=client),
        mock.patch.object(firewall, "usable", return_value=True),
        mock.patch.object(firewall, "apply") as apply,
    ):
        DockerRuntime().start(worker=worker, work_item=worker.work_item, token="t0k")
    docker_runtime._firewall_once.cache_clear()

    apply.assert_called_once_with(
        firewall.Policy(
            bridge="whimunit00001",
            callback_port=8123,
            egress="allowlist",
            allow=("192.0.2.10/32", "10.9.8.7/32"),  # and the callback host, not the gateway
        )
    )
    assert client.containers.run.call_args.kwargs["network"] == settings.WHIM_DOCKER_NETWORK


def _network_client(gateway: str) -> Any:
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.return_value.id = "abc"
    client.networks.get.return_value.attrs = {
        "IPAM": {"Config": [{"Gateway": gateway}]},
        "Options": {ICC_OPTION: "false", BRIDGE_NAME_OPTION: "whimunit00002"},
    }
    return client


def test_a_start_looks_the_worker_network_up_once_per_process(settings: Any) -> None:
    settings.WHIM_CALLBACK_URL = ""  # the gateway is the callback host: looked up too
    client = _network_client("172.30.0.1")
    with (
        mock.patch("workers.docker_runtime.docker.from_env", return_value=client),
        mock.patch.object(firewall, "usable", return_value=False),
    ):
        runtime = DockerRuntime()
        for _ in range(3):
            worker = WorkerFactory.create()
            runtime.start(worker=worker, work_item=worker.work_item, token="t0k")

    assert client.networks.get.call_count == 1  # was two a start
    sent = client.api.attach_socket.return_value._sock.sendall.call_args.args[0]
    assert json.loads(sent)["ORCHESTRATOR_URL"].startswith("http://172.30.0.1:")


def test_a_start_that_finds_the_network_gone_looks_it_up_again(settings: Any) -> None:
    settings.WHIM_CALLBACK_URL = ""
    client = _network_client("172.30.0.1")
    worker = WorkerFactory.create()
    with (
        mock.patch("workers.docker_runtime.docker.from_env", return_value=client),
        mock.patch.object(firewall, "usable", return_value=False),
    ):
        runtime = DockerRuntime()
        runtime.start(worker=worker, work_item=worker.work_item, token="t0k")
        # Removed and made anew (another gateway): the next create is refused once.
        client.networks.get.return_value.attrs["IPAM"]["Config"][0]["Gateway"] = "172.31.0.1"
        client.containers.run.side_effect = [
            docker.errors.NotFound("network not found"),
            mock.DEFAULT,
        ]
        worker = WorkerFactory.create()
        assert runtime.start(worker=worker, work_item=worker.work_item, token="t0k") == "abc"

    assert client.networks.get.call_count == 2
    sent = client.api.attach_socket.return_value._sock.sendall.call_args.args[0]
    assert json.loads(sent)["ORCHESTRATOR_URL"].startswith("http://172.31.0.1:")  # new gateway


def test_a_start_whose_image_is_missing_is_not_retried(settings: Any) -> None:
    client = _network_client("172.30.0.1")
    client.containers.run.side_effect = docker.errors.ImageNotFound("no image")
    worker = WorkerFactory.create()
    with (
        mock.patch("workers.docker_runtime.docker.from_env", return_value=client),
        mock.patch.object(firewall, "usable", return_value=False),
        pytest.raises(docker.errors.ImageNotFound),
    ):
        DockerRuntime().start(worker=worker, work_item=worker.work_item, token="t0k")
    assert client.containers.run.call_count == 1


# --- bounded disk (issue 9) -------------------------------------------------------------------


def test_the_workspace_is_a_size_limited_tmpfs_not_a_volume_on_the_hosts_disk(
    settings: Any,
) -> None:
    settings.WORKER_WORKSPACE_SIZE = "3g"
    settings.WHIM_CALLBACK_URL = "http://10.9.8.7:8000"
    worker = WorkerFactory.create()
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.return_value.id = "abc"

    runtime_with(client).start(worker=worker, work_item=worker.work_item, token="t0k")

    options = client.containers.run.call_args.kwargs
    workspace = options["tmpfs"]["/workspace"].split(",")
    assert "size=3g" in workspace
    # The harness's (uid 1000) and the agent's (group whimwork) shared, setgid and sticky.
    assert {"uid=1000", "gid=1002", "mode=3770", "nosuid", "nodev"} <= set(workspace)
    assert not options.get("mounts"), "no anonymous volume: it would live on the host's disk"
    assert "volumes" not in options


def test_workspace_usage_asks_stat_inside_a_running_container() -> None:
    container = mock.Mock(status="running")
    container.exec_run.return_value = mock.Mock(exit_code=0, output=b"4096 16384 0\n")
    client = mock.Mock()
    client.containers.get.return_value = container

    usage = runtime_with(client).workspace_usage(container_id="abc")

    assert usage is not None and usage.full
    assert (usage.size_bytes, usage.used_bytes) == (64 * 1024 * 1024, 64 * 1024 * 1024)
    argv = container.exec_run.call_args.args[0]
    assert argv[:2] == ["stat", "-f"] and argv[-1] == "/workspace"
    assert container.exec_run.call_args.kwargs["user"] == "1000:1000"


@pytest.mark.parametrize(
    ("status", "exit_code", "output"),
    [
        ("exited", 0, b"4096 16384 0\n"),  # not running: never exec'd
        ("running", 1, b""),  # stat failed
        ("running", 0, b"garbage"),
        ("running", 0, b""),
    ],
)
def test_workspace_usage_is_none_when_it_cannot_tell(
    status: str, exit_code: int, output: bytes
) -> None:
    container = mock.Mock(status=status)
    container.exec_run.return_value = mock.Mock(exit_code=exit_code, output=output)
    client = mock.Mock()
    client.containers.get.return_value = container

    assert runtime_with(client).workspace_usage(container_id="abc") is None
    if status != "running":
        container.exec_run.assert_not_called()


def test_workspace_usage_survives_an_exec_the_daemon_refuses() -> None:
    container = mock.Mock(status="running")
    container.exec_run.side_effect = docker.errors.APIError("pids limit reached")
    client = mock.Mock()
    client.containers.get.return_value = container

    assert runtime_with(client).workspace_usage(container_id="abc") is None
