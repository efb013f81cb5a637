"""factory-boy factories, in one place."""

from __future__ import annotations

import factory

from orchestration.models import PRIORITY_RANK, Priority, Worker, WorkItem


class WorkItemFactory(factory.django.DjangoModelFactory[WorkItem]):
    class Meta:
        model = WorkItem

    repo = factory.Sequence(lambda n: f"acme/repo-{n % 5}")
    branch = factory.Sequence(lambda n: f"task-{n}")
    spec = "# Do the thing\n\nPlease."
    priority = Priority.MEDIUM
    priority_rank = factory.LazyAttribute(lambda o: PRIORITY_RANK[Priority(o.priority)])
    metadata = factory.LazyFunction(lambda: {"mockSeconds": 0})


class WorkerFactory(factory.django.DjangoModelFactory[Worker]):
    class Meta:
        model = Worker

    work_item = factory.SubFactory(WorkItemFactory)
