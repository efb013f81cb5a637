"""The worker network's firewall: what an attempt's container may reach (iptables).

Docker already keeps the worker network's containers from each other (the network is made
with inter-container traffic off) and from other Docker networks. These rules add the rest,
per worker network (by its bridge interface):

- Traffic *to this host* (chain ``INPUT``): replies to connections the host opened, and the
  callback listener's port (``WHIM_CALLBACK_PORT``, which serves ``/w/…`` only) — nothing
  else. A database, a broker or an admin page bound to 0.0.0.0 is not reachable from a
  container through the gateway.
- Traffic *through this host* (chain ``DOCKER-USER``, which Docker consults first):
  link-local addresses (169.254.0.0/16, where clouds serve instance credentials) are dropped
  in every mode; then ``WORKER_EGRESS`` decides: ``none`` drops everything, ``allowlist``
  accepts only ``WORKER_EGRESS_ALLOW`` (host names resolved when the rules are applied) and
  drops the rest, ``open`` leaves the rest to Docker (the explicit opt-out).

The rules live in chains of our own (``WHIM-I-<bridge>``, ``WHIM-O-<bridge>``), flushed and
refilled on every apply — applying twice is the same as once — with one jump into each from
``INPUT`` / ``DOCKER-USER``. Installing them needs root and iptables (the same backend as
dockerd's); without them the runtime logs a warning and containers run unfirewalled.
IPv4 only: the worker network has no IPv6.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable

from orchestration.choices import WorkerEgress

logger = logging.getLogger(__name__)

EGRESS_MODES: tuple[str, ...] = tuple(WorkerEgress.values)
LINK_LOCAL = "169.254.0.0/16"
DOCKER_USER = "DOCKER-USER"
ESTABLISHED = ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED")


@dataclasses.dataclass(frozen=True)
class Policy:
    """The rules' inputs for one worker network."""

    bridge: str  # the network's bridge interface on this host
    callback_port: int
    egress: str  # one of EGRESS_MODES
    allow: tuple[str, ...] = ()  # addresses or networks (resolved), for allowlist


def chains(bridge: str) -> tuple[str, str]:
    """Our two chains for ``bridge`` (iptables chain names are at most 28 characters)."""
    return f"WHIM-I-{bridge}"[:28], f"WHIM-O-{bridge}"[:28]


def rules(policy: Policy) -> dict[str, list[list[str]]]:
    """Every rule, per chain, in order (iptables arguments after ``-A <chain>``)."""
    into, out = chains(policy.bridge)
    inbound = [
        [*ESTABLISHED, "-j", "ACCEPT"],
        ["-p", "tcp", "--dport", str(policy.callback_port), "-j", "ACCEPT"],
        ["-j", "DROP"],
    ]
    outbound = [["-d", LINK_LOCAL, "-j", "DROP"]]
    if policy.egress == WorkerEgress.OPEN:
        outbound.append(["-j", "RETURN"])
    else:
        if policy.egress == WorkerEgress.ALLOWLIST:
            outbound += [["-d", address, "-j", "ACCEPT"] for address in policy.allow]
        outbound.append(["-j", "DROP"])
    return {into: inbound, out: outbound}


def jumps(policy: Policy) -> list[tuple[str, list[str]]]:
    """The rules that send the bridge's traffic into our chains (chain, rule)."""
    into, out = chains(policy.bridge)
    return [
        ("INPUT", ["-i", policy.bridge, "-j", into]),
        (DOCKER_USER, ["-i", policy.bridge, "-j", out]),
        # Replies to an allowed connection come back in through Docker's isolation rules,
        # which would drop them when the far end is on another Docker network.
        (DOCKER_USER, ["-o", policy.bridge, *ESTABLISHED, "-j", "ACCEPT"]),
    ]


def resolve(hosts: Iterable[str]) -> tuple[str, ...]:
    """IPv4 addresses and networks for ``hosts``: literals kept, names looked up now (an
    unresolvable name is skipped with a warning: it allows nothing)."""
    out: list[str] = []
    for host in hosts:
        host = host.strip()
        if not host:
            continue
        try:
            out.append(str(ipaddress.IPv4Network(host, strict=False)))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, family=socket.AF_INET)
        except OSError:
            logger.warning("egress allowlist: %s does not resolve; it allows nothing", host)
            continue
        out += sorted({f"{info[4][0]}/32" for info in infos})
    return tuple(dict.fromkeys(out))


def usable() -> bool:
    """Whether this process can install rules (root, iptables and iptables-restore)."""
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("iptables", "iptables-restore"))


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "10", *args], capture_output=True, text=True, timeout=30, check=check
    )


def apply(policy: Policy) -> None:
    """Install (or refresh) the rules for ``policy.bridge``. Idempotent."""
    if policy.egress not in EGRESS_MODES:
        raise ValueError(f"WORKER_EGRESS must be one of {', '.join(EGRESS_MODES)}")
    if _iptables("-n", "-L", DOCKER_USER, check=False).returncode != 0:
        _iptables("-N", DOCKER_USER)  # dockerd makes it; an engine started without it did not
        _iptables("-A", DOCKER_USER, "-j", "RETURN")
    # Our chains are emptied and refilled in one atomic commit (iptables-restore declares
    # each, which empties it, and --noflush leaves every other chain alone): a running
    # container never sees them half-written, with the jumps into them already in place.
    lines = ["*filter"]
    lines += [f":{chain} - [0:0]" for chain in rules(policy)]
    for chain, chain_rules in rules(policy).items():
        lines += [" ".join(["-A", chain, *rule]) for rule in chain_rules]
    lines.append("COMMIT")
    subprocess.run(
        ["iptables-restore", "--noflush"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for parent, rule in reversed(jumps(policy)):
        if _iptables("-C", parent, *rule, check=False).returncode != 0:
            _iptables("-I", parent, "1", *rule)


def remove(bridge: str, *, callback_port: int = 0) -> None:
    """Take the rules for ``bridge`` out again (its network is gone). Tolerates absence."""
    policy = Policy(bridge=bridge, callback_port=callback_port, egress=WorkerEgress.NONE)
    for parent, rule in jumps(policy):
        while _iptables("-C", parent, *rule, check=False).returncode == 0:
            _iptables("-D", parent, *rule, check=False)
    for chain in chains(bridge):
        _iptables("-F", chain, check=False)
        _iptables("-X", chain, check=False)


def installed(bridge: str) -> dict[str, list[str]]:
    """The rules installed now for ``bridge``, as ``iptables -S`` prints them, per chain."""
    out: dict[str, list[str]] = {}
    for chain in (*chains(bridge), "INPUT", DOCKER_USER):
        listed = _iptables("-S", chain, check=False)
        lines = listed.stdout.splitlines() if listed.returncode == 0 else []
        out[chain] = [ln for ln in lines if chain in chains(bridge) or bridge in ln]
    return out
