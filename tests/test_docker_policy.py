"""Protected branches end to end, on real parts (issue 9): items stored with the repository's
default branch, or a protected one, bypassing the submit form (as an item stored before the
rule existed would), run in real containers; the harness refuses both as ``POLICY_ERROR``,
they are not retried, and the bare repository's refs are byte-identical afterwards."""

from __future__ import annotations

import subprocess
from functools import partial
from typing import Any

import pytest

from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemStatus
from tests.docker_stack import git, make_bare_repo
from tests.factories import WorkItemFactory
from tests.helpers import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def test_the_default_branch_and_a_protected_one_are_refused_once_and_left_untouched(
    docker_stack: Any,
) -> None:
    stack = docker_stack(MAX_RETRIES="2", MAX_WORKERS="2")
    bare = make_bare_repo(stack.repos, "acme/widgets")
    # The repository's default branch is "production": in no glob, so only the harness's
    # look at the clone can know it.
    git("--git-dir", str(bare), "branch", "production", "main")
    git("--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/production")
    subprocess.run(["chown", "-R", "1000:1000", str(bare)], check=True)

    def refs() -> str:
        listing = git("--git-dir", str(bare), "for-each-ref", "--format=%(refname) %(objectname)")
        return listing + "\nHEAD -> " + git("--git-dir", str(bare), "symbolic-ref", "HEAD")

    before = refs()
    production = stack.branch_head("acme/widgets", "production")
    # Straight into the table, as the form would never allow now.
    items = [
        WorkItemFactory.create(
            repo="acme/widgets", branch=branch, spec=f"# Push to {branch}", metadata={}
        )
        for branch in ("production", "main")
    ]

    def finished(item: WorkItem) -> WorkItem | None:
        return WorkItem.objects.filter(pk=item.pk, status__in=WorkItem.TERMINAL).first()

    for item in items:
        done = wait_for(
            partial(finished, item), timeout=120, interval=0.5, what=f"the item on {item.branch}"
        )
        assert done.status == WorkItemStatus.FAILED, done.error
        assert done.error_category == "POLICY_ERROR", done.error
        assert done.retry_count == 0 and done.next_retry_at is None
        attempts = Worker.objects.filter(work_item_id=item.pk)
        assert [w.status for w in attempts] == [WorkerStatus.FAILED]
    assert "default branch" in WorkItem.objects.get(pk=items[0].pk).error
    assert "WHIM_PROTECTED_BRANCHES" in WorkItem.objects.get(pk=items[1].pk).error
    assert refs() == before
    assert stack.branch_head("acme/widgets", "production") == production
