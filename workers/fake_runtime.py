"""The ``fake`` runtime: no container at all; the ``workers.fake_run`` task plays the mock
agent (for demos, development and tests that are not about containers)."""

from __future__ import annotations

from orchestration.fleet import node_queue
from orchestration.models import Worker, WorkItem
from orchestration.nudge import TaskName, send_on_commit
from workers.runtime import ContainerRuntime, register


@register("fake")
class FakeRuntime(ContainerRuntime):
    """No container: a Celery task plays the mock agent (``metadata.mock`` picks the ending)."""

    name = "fake"
    isolated = False
    observable = False

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        # On the node that started it: its worker is the one "running the container".
        queue = node_queue(worker.node_id) if worker.node_id else None
        send_on_commit(TaskName.FAKE_RUN, str(worker.pk), queue=queue)
        return f"fake-{worker.pk}"

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        worker = Worker.objects.filter(container_id=container_id).first()
        if worker is None:
            return None
        return worker.log_tail.splitlines()[-lines:]
