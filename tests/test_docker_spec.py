"""Spec generation by an agent end to end (SPEC_GENERATOR=agent), on real parts: gunicorn,
Celery, dockerd, the worker image (WORKER_IMAGE) and the fake ``claude``, whose spec runs fail
twice (``spec.failTimes``); the third spec attempt's spec queues the item, and a work attempt
implements it and opens the pull request on the fake GitHub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestration.choices import EventKind
from orchestration.models import AttemptKind, Worker, WorkerStatus, WorkItemEvent, WorkItemStatus
from tests.docker_stack import make_bare_repo
from tests.test_docker_e2e import submit
from tests.test_docker_pipeline import GITHUB_TOKEN, fake_github_in_a_container
from tests.test_docker_pipeline_b import agent_bin, nothing_left, wait_status

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

__all__ = ["agent_bin"]  # the fixture, used below

SPEC = "# Spin the widget\n\n## Tasks\n\n- [ ] write widget.txt\n"


def test_a_spec_that_fails_twice_is_written_the_third_time_and_the_item_opens_a_pr(
    docker_stack: Any, agent_bin: Any, tmp_path: Path
) -> None:
    scenario = {
        "spec": {"text": SPEC, "failTimes": 2},
        "steps": [{"write": {"widget.txt": "spins\n"}}],
    }
    with fake_github_in_a_container() as (address, served):
        stack = docker_stack(
            WHIM_AGENT="claude",
            WHIM_AGENT_PATH_DIR=agent_bin(scenario),
            SPEC_GENERATOR="agent",
            SPEC_MAX_ATTEMPTS="3",
            WORKER_EGRESS="allowlist",
            WORKER_EGRESS_ALLOW=address,
            GITHUB_TOKEN=GITHUB_TOKEN,
            GITHUB_API_URL=f"http://{address}:8080",
        )
        make_bare_repo(stack.repos, "acme/widgets")

        item_id = submit(
            stack, repo="acme/widgets", description="# Spin it\n\nThe widget should spin."
        )

        item = wait_status(item_id, WorkItemStatus.COMPLETED, timeout=240)
        requests = served()

    attempts = list(Worker.objects.filter(work_item_id=item_id).order_by("attempt"))
    assert [(w.kind, w.status) for w in attempts] == [
        (AttemptKind.SPEC, WorkerStatus.FAILED),
        (AttemptKind.SPEC, WorkerStatus.FAILED),
        (AttemptKind.SPEC, WorkerStatus.COMPLETED),
        (AttemptKind.WORK, WorkerStatus.COMPLETED),
    ]
    assert item.spec == SPEC
    assert item.branch == "spin-the-widget"
    assert item.pr_url and item.pr_number
    assert stack.show("acme/widgets", item.branch, "widget.txt") == "spins"
    # The spec attempts pushed nothing: the only branch is the work attempt's.
    kinds = list(
        WorkItemEvent.objects.filter(work_item_id=item_id).values_list("kind", "to_status")
    )
    assert kinds.count((EventKind.RETRY_SCHEDULED, "generating")) == 2
    assert kinds.count((EventKind.SPEC_GENERATED, "queued")) == 1
    pulls = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/pulls")]
    assert len(pulls) == 1
    nothing_left(stack)
