"""The outbox in the console: the admin's read-only list (fast at any size, filtered by status
and kind, "retry now" for operators only) and the item page's GitHub panel."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from intake.models import GitHubAction, GitHubActionStatus, Repository
from orchestration.nudge import TaskName
from orchestration.roles import VIEWER
from tests.factories import WorkItemFactory
from tests.helpers import give_role, task_mocks

pytestmark = pytest.mark.django_db

MAX_QUERIES = 10


def actions(n: int, **fields: Any) -> list[GitHubAction]:
    kinds = ["comment", "labels_add", "review_post"]
    statuses = list(GitHubActionStatus)
    return GitHubAction.objects.bulk_create(
        GitHubAction(
            key=f"k{i}",
            kind=kinds[i % 3],
            repo="acme/widgets",
            number=i,
            status=statuses[(i // 3) % 3],
            **fields,
        )
        for i in range(n)
    )


def test_the_outbox_list_runs_a_bounded_number_of_queries(
    superuser_client: Client, django_assert_max_num_queries: Any
) -> None:
    item = WorkItemFactory.create()
    actions(3000, work_item=item)
    Repository.objects.create(name="acme/widgets")
    pages = [
        "/admin/intake/githubaction/",
        "/admin/intake/githubaction/?status__exact=failed",
        "/admin/intake/githubaction/?kind=comment",
        "/admin/intake/githubaction/?q=acme",
        f"/admin/intake/githubaction/{GitHubAction.objects.first().pk}/change/",  # type: ignore[union-attr]
        "/admin/intake/repository/",
    ]
    for page in pages:
        with django_assert_max_num_queries(MAX_QUERIES):
            resp = superuser_client.get(page)
        assert resp.status_code == 200, page


def test_a_filter_shows_only_its_rows(superuser_client: Client) -> None:
    actions(9)  # kinds cycle by one, statuses by three: one row is both
    resp = superuser_client.get("/admin/intake/githubaction/?status__exact=failed&kind=review_post")
    assert [a.key for a in resp.context["cl"].result_list] == ["k8"]


def test_retry_now_puts_failed_rows_back_and_nudges_them(
    staff_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    [failed] = actions(1, attempts=10, next_attempt_at=timezone.now())
    GitHubAction.objects.filter(pk=failed.pk).update(status=GitHubActionStatus.FAILED)

    with (
        task_mocks(TaskName.GITHUB_DELIVER) as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        resp = staff_client.post(
            "/admin/intake/githubaction/",
            {"action": "retry_now", "_selected_action": [str(failed.pk)]},
            follow=True,
        )

    assert resp.status_code == 200
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.next_attempt_at) == ("pending", 0, None)
    sent[TaskName.GITHUB_DELIVER].assert_called_once_with(str(failed.pk))


def test_a_viewer_sees_the_outbox_but_cannot_retry(viewer: Any) -> None:
    viewer.is_staff = True
    viewer.save()
    client = Client()
    client.force_login(give_role(viewer, VIEWER))
    [failed] = actions(1)
    GitHubAction.objects.filter(pk=failed.pk).update(status=GitHubActionStatus.FAILED)

    listed = client.get("/admin/intake/githubaction/")
    client.post(
        "/admin/intake/githubaction/",
        {"action": "retry_now", "_selected_action": [str(failed.pk)]},
    )

    assert listed.status_code == 200 and "retry_now" not in listed.content.decode()
    failed.refresh_from_db()
    assert failed.status == GitHubActionStatus.FAILED


def test_the_item_page_lists_its_github_calls(staff_client: Client) -> None:
    item = WorkItemFactory.create()
    GitHubAction.objects.create(
        key="comment:1",
        kind="comment",
        repo=item.repo,
        number=3,
        work_item=item,
        status=GitHubActionStatus.DONE,
        attempts=2,
        result={"html_url": "https://github.example/acme/widgets/issues/3#issuecomment-9"},
    )
    GitHubAction.objects.create(
        key="labels:1",
        kind="labels_add",
        repo=item.repo,
        number=3,
        work_item=item,
        status=GitHubActionStatus.FAILED,
        last_error="GitHub POST /repos/x/issues/3/labels answered 403: <b>nope</b>",
        result={"html_url": "javascript:alert(1)"},
    )

    page = staff_client.get(f"/work/{item.pk}/").content.decode()

    assert 'id="github-actions"' in page
    assert 'href="https://github.example/acme/widgets/issues/3#issuecomment-9"' in page
    assert "javascript:" not in page and "&lt;b&gt;nope&lt;/b&gt;" in page
    assert page.index("comment") < page.index("labels_add")


def test_an_item_without_github_calls_has_no_panel(staff_client: Client) -> None:
    item = WorkItemFactory.create()
    assert 'id="github-actions"' not in staff_client.get(f"/work/{item.pk}/").content.decode()
