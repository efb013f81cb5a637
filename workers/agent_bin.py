"""``WHIM_AGENT_PATH_DIR``: an operator's directory of agent executables put first on PATH.

To run agent CLIs other than the image's (another version of ``claude``, a wrapper script, a
``codex`` built elsewhere) without rebuilding the worker image, point WHIM_AGENT_PATH_DIR at a
host directory holding them. The docker runtime binds it **read-only** at ``/opt/whim/agent-bin``
in every worker container and puts that first on the container's PATH; the local runtime puts
the directory itself first on the harness's PATH. The harness passes PATH on to the agent
(``harness/agents.py`` ``agent_environment``, which adds whim-lock's ``/opt/whim/bin`` before
it). The directory's files must be readable and executable by uid 1000 (the harness looks the
agent up) and uid 1001 (the agent runs them); the agent cannot change them.

The setting is checked at startup (orchestration.E071: an existing absolute directory).
"""

from __future__ import annotations

import os

from django.conf import settings
from docker.types import Mount

# Where the directory appears inside a worker container.
AGENT_BIN = "/opt/whim/agent-bin"
# The worker image's own PATH (workers/image/Dockerfile's ENV PATH; a test keeps them equal).
IMAGE_PATH = "/opt/whim/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def agent_path_dir() -> str:
    """The configured host directory, or "" when none is."""
    return str(settings.WHIM_AGENT_PATH_DIR or "").strip()


def container_agent_bin() -> tuple[list[Mount], dict[str, str]]:
    """The docker runtime's share: the read-only mount and the PATH that starts with it; none
    of either when the setting is empty."""
    host = agent_path_dir()
    if not host:
        return [], {}
    mount = Mount(target=AGENT_BIN, source=os.path.realpath(host), type="bind", read_only=True)
    return [mount], {"PATH": f"{AGENT_BIN}:{IMAGE_PATH}"}


def local_path(path: str) -> str:
    """``path`` with the configured directory first (the local runtime's PATH)."""
    host = agent_path_dir()
    return f"{host}{os.pathsep}{path}" if host else path
