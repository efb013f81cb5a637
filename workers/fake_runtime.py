"""The ``fake`` runtime: no container at all; the ``workers.fake_run`` task plays the mock
agent (for demos, development and tests that are not about containers)."""

from __future__ import annotations

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
        send_on_commit(TaskName.FAKE_RUN, str(worker.pk))
        return f"fake-{worker.pk}"

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        worker = Worker.objects.filter(container_id=container_id).first()
        if worker is None:
            return None
        return worker.log_tail.splitlines()[-lines:]
