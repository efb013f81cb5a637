"""What the core may ask of the runtime, registered into ``orchestration.registry``.

The core (status pages, system checks, log views) never imports ``workers``; this provider
answers for it: which runtime is configured, which are available, and an attempt's logs.
"""

from __future__ import annotations

import logging

from django.conf import settings

from orchestration.models import Worker
from orchestration.registry import KEPT_ON_ROW, RuntimeInfo
from orchestration.text import strip_ansi
from workers.runtime import available, get_runtime, runtime_info

logger = logging.getLogger(__name__)


class WorkersRuntimeProvider:
    def info(self) -> RuntimeInfo:
        return runtime_info()

    def available(self) -> list[str]:
        return available()

    def worker_logs(self, worker: Worker, *, lines: int) -> tuple[list[str], str]:
        """The worker's last ``lines`` of output, ANSI stripped, and where they came from.

        A running container on this process's node is asked through the runtime; otherwise
        (another node's engine is not this one's to ask, or the runtime cannot tell) the
        tail kept on the worker row is used.
        """
        logs: list[str] | None = None
        source = KEPT_ON_ROW
        here = worker.node_id is None or worker.node_id == settings.WHIM_NODE
        if not here:
            source = f"{KEPT_ON_ROW} (it runs on node {worker.node_id})"
        if worker.container_id and worker.is_active and here:
            try:
                logs = get_runtime().logs(container_id=worker.container_id, lines=lines)
                source = "live from the container"
            except Exception:  # the page must render even when the runtime is down
                logger.warning("could not read logs of worker %s", worker.pk, exc_info=True)
                logs = None
        if logs is None:
            logs = worker.log_tail.splitlines()[-lines:]
            source = source if not here else KEPT_ON_ROW
        return [strip_ansi(line) for line in logs[-lines:]], source
