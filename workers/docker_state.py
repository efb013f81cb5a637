"""What a Docker engine says about a container, read into the runtime's terms: its state
(exit code, OOM, labels, how long it ran) and its workspace's free space."""

from __future__ import annotations

import datetime as dt

from docker.models.containers import Container

from workers.runtime import ContainerState, DiskUsage


def container_state(container: Container) -> ContainerState:
    attrs = container.attrs.get("State", {})
    started, finished = _docker_time(attrs.get("StartedAt")), _docker_time(attrs.get("FinishedAt"))
    ran = (finished - started).total_seconds() if started and finished else None
    return ContainerState(
        id=container.id or "",
        status=container.status,
        exit_code=attrs.get("ExitCode"),
        oom_killed=bool(attrs.get("OOMKilled")),
        labels=dict(container.labels or {}),
        ran_seconds=ran if ran is not None and ran >= 0 else None,
    )


def _docker_time(value: object) -> dt.datetime | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z``); None for its zero time or garbage."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if parsed.year == 1 or parsed.tzinfo is None else parsed


def parse_statfs(exit_code: int | None, output: bytes | None) -> DiskUsage | None:
    """``stat -f -c '%S %b %a'`` (block size, blocks, blocks available) as a DiskUsage."""
    if exit_code != 0 or not output:
        return None
    try:
        block, blocks, available = (int(field) for field in output.split()[:3])
    except ValueError:
        return None
    return DiskUsage(size_bytes=block * blocks, free_bytes=block * available)
