"""The container runtime interface and its registry.

Implementations: ``fake`` (in-process, for development and tests: it "runs" the mock agent as
a Celery task). ``docker`` and ``local`` register here when the worker issue lands them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from django.conf import settings

from orchestration.models import Worker, WorkItem
from orchestration.nudge import delay_on_commit


class ContainerRuntime(abc.ABC):
    """Starts, stops and reads the logs of one attempt's container."""

    name: ClassVar[str]
    isolated: ClassVar[bool] = True

    @abc.abstractmethod
    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        """Start (or adopt) the attempt's container and return its id. Must be idempotent."""

    def stop(self, *, container_id: str, grace_seconds: int = 10) -> None:  # noqa: B027
        """Stop the container; a container already gone is not an error."""

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        """The last ``lines`` of output, or None when the runtime cannot tell."""
        return None


_REGISTRY: dict[str, Callable[[], ContainerRuntime]] = {}


def register(name: str) -> Callable[[type[Any]], type[Any]]:
    def wrap(cls: type[Any]) -> type[Any]:
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_runtime(name: str | None = None) -> ContainerRuntime:
    """The configured runtime (WHIM_RUNTIME)."""
    key = name or settings.WHIM_RUNTIME
    try:
        return _REGISTRY[key]()
    except KeyError:
        raise LookupError(f"unknown runtime {key!r}; known: {', '.join(available())}") from None


@register("fake")
class FakeRuntime(ContainerRuntime):
    """No container: a Celery task plays the mock agent (``metadata.mock`` picks the ending)."""

    name = "fake"
    isolated = False

    def start(self, *, worker: Worker, work_item: WorkItem, token: str) -> str:
        import time

        from workers.tasks import fake_run

        # A slow start, to let fault tests act between claim and container start.
        time.sleep(min(float(work_item.metadata.get("mockStartSeconds") or 0), 60.0))
        delay_on_commit(fake_run, str(worker.pk))
        return f"fake-{worker.pk}"

    def logs(self, *, container_id: str, lines: int) -> list[str] | None:
        worker = Worker.objects.filter(container_id=container_id).first()
        if worker is None:
            return None
        return worker.log_tail.splitlines()[-lines:]
