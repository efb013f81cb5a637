"""Network by policy (issue 9): a worker container reaches the callback listener and what
WORKER_EGRESS allows — not its neighbours, not this host's other services, not the admin.

Traffic goes only to this machine's own containers, networks and listeners that these tests
make; that link-local and other addresses are blocked is checked by reading the rules the
runtime installed, never by sending them a packet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from django.test import Client

from orchestration.choices import WorkerEgress
from tests.conftest import ROOT, free_ports, start_web, stop_processes
from tests.helpers import wait_for
from workers import firewall
from workers.docker_runtime import DockerRuntime, bridge_name

IMAGE = os.environ.get("WORKER_IMAGE", "whim-worker:latest")


# --- the rules, as data --------------------------------------------------------------------


def policy(egress: str, allow: tuple[str, ...] = ()) -> firewall.Policy:
    return firewall.Policy(bridge="whimtest", callback_port=8001, egress=egress, allow=allow)


def test_only_the_callback_port_of_this_host_is_open_to_containers() -> None:
    into, _ = firewall.chains("whimtest")
    assert firewall.rules(policy("open"))[into] == [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-p", "tcp", "--dport", "8001", "-j", "ACCEPT"],
        ["-j", "DROP"],
    ]


@pytest.mark.parametrize("egress", firewall.EGRESS_MODES)
def test_link_local_addresses_are_dropped_first_in_every_mode(egress: str) -> None:
    _, out = firewall.chains("whimtest")
    assert firewall.rules(policy(egress, ("10.9.8.7/32",)))[out][0] == [
        "-d",
        "169.254.0.0/16",
        "-j",
        "DROP",
    ]


def test_each_egress_mode_ends_as_it_says() -> None:
    _, out = firewall.chains("whimtest")
    listed = ("192.0.2.10/32", "198.51.100.0/24")
    assert firewall.rules(policy("none", listed))[out][1:] == [["-j", "DROP"]]
    assert firewall.rules(policy("allowlist", listed))[out][1:] == [
        ["-d", "192.0.2.10/32", "-j", "ACCEPT"],
        ["-d", "198.51.100.0/24", "-j", "ACCEPT"],
        ["-j", "DROP"],
    ]
    assert firewall.rules(policy("open", listed))[out][1:] == [["-j", "RETURN"]]


def test_address_literals_in_the_allowlist_are_kept_without_a_lookup() -> None:
    assert firewall.resolve(["192.0.2.10", " 198.51.100.0/24 ", ""]) == (
        "192.0.2.10/32",
        "198.51.100.0/24",
    )


# --- the callback listener -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/", "/metrics", "/api/status", "/", "/accounts/login/"])
def test_the_callback_listener_answers_404_to_everything_but_worker_callbacks(
    settings: Any, path: str
) -> None:
    settings.WHIM_CALLBACK_PORT = 8123
    resp = Client().get(path, SERVER_PORT="8123")
    assert resp.status_code == 404
    assert resp.json()["code"] == "NOT_FOUND"


@pytest.mark.django_db
def test_the_callback_listener_serves_worker_callbacks(settings: Any) -> None:
    settings.WHIM_CALLBACK_PORT = 8123
    resp = Client().post(
        f"/w/{'0' * 64}/api/worker/{uuid.uuid4()}/heartbeat",
        data={"iteration": 1},
        content_type="application/json",
        SERVER_PORT="8123",
    )
    assert resp.status_code == 401  # reached the callback view: the token is not a worker's


@pytest.mark.django_db
def test_the_web_port_still_serves_everything(settings: Any) -> None:
    settings.WHIM_CALLBACK_PORT = 8123
    assert Client().get("/health", SERVER_PORT="8000").status_code == 200


# --- real containers, real rules -------------------------------------------------------------


@pytest.fixture
def worker_network(settings: Any) -> Iterator[dict[str, Any]]:
    """The worker network of a fresh instance, made and firewalled by the runtime itself."""
    if not firewall.usable():
        pytest.fail("these tests install iptables rules: they need root and iptables")
    instance = f"net-{uuid.uuid4().hex[:8]}"
    network = f"whim-{instance}"
    callback_port, web_port, spare_port = free_ports(3)
    settings.WHIM_INSTANCE, settings.WHIM_DOCKER_NETWORK = instance, network
    settings.WHIM_CALLBACK_PORT, settings.WORKER_EGRESS = callback_port, "none"
    client = docker.from_env()
    gateway = DockerRuntime().ensure_network()
    made: dict[str, list[Any]] = {"containers": [], "networks": []}
    yield {
        "client": client,
        "network": network,
        "bridge": bridge_name(network),
        "gateway": gateway,
        "callback_port": callback_port,
        "web_port": web_port,
        "spare_port": spare_port,
        "instance": instance,
        "made": made,
    }
    for container in made["containers"]:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    for other in made["networks"]:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            other.remove()
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.networks.get(network).remove()
    firewall.remove(bridge_name(network))


def listener(net: dict[str, Any], *, network: str | None = None) -> tuple[Any, str]:
    """A container serving HTTP on port 8080; returns it and its address on ``network``."""
    name = network or net["network"]
    box = net["client"].containers.run(
        IMAGE,
        entrypoint=["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"],  # noqa: S104
        detach=True,
        network=name,
        labels={"whim.instance": net["instance"]},
    )
    net["made"]["containers"].append(box)
    box.reload()
    address = box.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
    wait_for(lambda: host_can_connect(address, 8080), timeout=30, what="the listener")
    return box, address


def host_can_connect(host: str, port: int) -> bool:
    """From this host (the control: the listener is up and answers)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def can_connect(net: dict[str, Any], host: str, port: int) -> bool:
    """Whether a container on the worker network can open a TCP connection to host:port."""
    probe = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout(3)\n"
        f"try:\n s.connect(({host!r},{port})); print('OPEN')\n"
        "except OSError as e: print('CLOSED', e)\n"
    )
    out = net["client"].containers.run(
        IMAGE,
        entrypoint=["python3", "-c", probe],
        network=net["network"],
        remove=True,
        labels={"whim.instance": net["instance"]},
    )
    return bool(out.decode().startswith("OPEN"))


@contextlib.contextmanager
def tcp_listener(host: str, port: int) -> Iterator[None]:
    """A plain TCP listener on this host that accepts and closes connections."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


@pytest.mark.docker
def test_the_runtime_installs_the_rules_and_turns_inter_container_traffic_off(
    worker_network: dict[str, Any],
) -> None:
    net = worker_network
    options = net["client"].networks.get(net["network"]).attrs["Options"]
    assert options["com.docker.network.bridge.enable_icc"] == "false"
    assert options["com.docker.network.bridge.name"] == net["bridge"]
    into, out = firewall.chains(net["bridge"])
    rules = firewall.installed(net["bridge"])
    assert f"-A {into} -p tcp -m tcp --dport {net['callback_port']} -j ACCEPT" in rules[into]
    assert rules[into][-1] == f"-A {into} -j DROP"
    assert f"-A {out} -d 169.254.0.0/16 -j DROP" in rules[out]
    assert rules[out][-1] == f"-A {out} -j DROP"  # WORKER_EGRESS=none
    assert f"-A INPUT -i {net['bridge']} -j {into}" in rules["INPUT"]
    assert f"-A DOCKER-USER -i {net['bridge']} -j {out}" in rules["DOCKER-USER"]


@pytest.mark.docker
def test_a_container_reaches_the_callback_port_but_no_other_host_listener(
    worker_network: dict[str, Any],
) -> None:
    net = worker_network
    other_port = net["spare_port"]
    everywhere = "0.0.0.0"  # noqa: S104  (a host service bound to every address: the attack)
    with tcp_listener(everywhere, other_port), tcp_listener(net["gateway"], net["callback_port"]):
        assert can_connect(net, net["gateway"], net["callback_port"])  # the control
        assert not can_connect(net, net["gateway"], other_port)


@pytest.mark.docker
def test_a_container_cannot_reach_its_neighbour_even_with_egress_open(
    worker_network: dict[str, Any],
) -> None:
    net = worker_network
    # With egress open the firewall lets forwarded traffic through: only the network's
    # inter-container switch (off) keeps neighbours apart.
    firewall.apply(
        firewall.Policy(
            bridge=net["bridge"], callback_port=net["callback_port"], egress=WorkerEgress.OPEN
        )
    )
    _, neighbour = listener(net)
    assert not can_connect(net, neighbour, 8080)


@pytest.mark.docker
def test_an_outside_host_is_reachable_only_when_allowlisted(
    worker_network: dict[str, Any], settings: Any
) -> None:
    net = worker_network
    outside_net = net["client"].networks.create(
        f"whim-outside-{net['instance']}", labels={"whim.instance": net["instance"]}
    )
    net["made"]["networks"].append(outside_net)
    _, outside = listener(net, network=outside_net.name)
    assert not can_connect(net, outside, 8080)  # none

    allowlisted = firewall.Policy(
        bridge=net["bridge"],
        callback_port=net["callback_port"],
        egress="allowlist",
        allow=(f"{outside}/32",),
    )
    firewall.apply(allowlisted)
    assert can_connect(net, outside, 8080)

    firewall.apply(dataclasses.replace(allowlisted, allow=()))
    assert not can_connect(net, outside, 8080)


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_from_a_container_the_callback_listener_hides_the_admin_and_metrics(
    worker_network: dict[str, Any], celery_workers: Any
) -> None:
    net = worker_network
    env = {
        **celery_workers().env,
        "WHIM_CALLBACK_PORT": str(net["callback_port"]),
        "ALLOWED_HOSTS": "*",
    }
    web_port = net["web_port"]
    web = start_web(
        env={**env, "PORT": str(web_port)},
        binds=[f"127.0.0.1:{web_port}", f"{net['gateway']}:{net['callback_port']}"],
        log=ROOT / "test-artifacts" / f"{net['instance']}-web.log",
    )
    try:
        base = f"http://{net['gateway']}:{net['callback_port']}"
        fetch = (
            "import sys,urllib.request,urllib.error\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            f"        r = urllib.request.urlopen({base!r} + path, timeout=5)\n"
            "        print(path, r.status)\n"
            "    except urllib.error.HTTPError as e: print(path, e.code)\n"
        )
        out = net["client"].containers.run(
            IMAGE,
            entrypoint=["python3", "-c", fetch],
            command=[
                "/admin/login/",
                "/metrics",
                "/api/status",
                f"/w/nope/api/worker/{uuid.uuid4()}/heartbeat",
            ],
            network=net["network"],
            remove=True,
            labels={"whim.instance": net["instance"]},
        )
        answers = dict(line.split() for line in out.decode().splitlines())
        assert answers["/admin/login/"] == "404"
        assert answers["/metrics"] == "404"
        assert answers["/api/status"] == "404"
        callback = next(v for k, v in answers.items() if k.startswith("/w/"))
        assert callback in ("401", "405")  # the callback view answered, not the 404 guard
        assert not can_connect(net, net["gateway"], web_port)  # the web port is not bound there
    finally:
        stop_processes([web], grace=10)
