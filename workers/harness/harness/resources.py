"""What the container's memory cgroup says about the agent's end: was it the OOM killer?

An agent killed by SIGKILL (exit 137 from a shell, -9 as a direct child) when the cgroup's
``oom_kill`` counter rose meanwhile ran out of memory: that is ``RESOURCE_ERROR``, an
infrastructure failure counted for quarantine, not an agent error. The counter is in
``memory.events`` (cgroup v2) or ``memory/memory.oom_control`` (v1); where neither can be
read, the exit code alone decides.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_DIR = Path("/sys/fs/cgroup")
OOM_COUNTERS = ("memory.events", "memory/memory.oom_control")
SIGKILL_CODES = frozenset({137, -9})


def oom_kills(cgroup_dir: Path = CGROUP_DIR) -> int | None:
    """The cgroup's ``oom_kill`` count, or None when no counter can be read."""
    for name in OOM_COUNTERS:
        try:
            text = (cgroup_dir / name).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for line in text.splitlines()[:64]:
            key, _, value = line.strip().partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def killed_by_oom(code: int, *, before: int | None, after: int | None) -> bool:
    """Whether an exit with ``code`` was the OOM killer's doing (see the module docstring)."""
    if code not in SIGKILL_CODES:
        return False
    if before is None or after is None:
        return True  # no counter to ask: a SIGKILL in a memory-limited container is the best guess
    return after > before
