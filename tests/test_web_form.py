"""The web form at /work/new/ and the work item page: login, CSRF, escaping."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus
from tests.factories import WorkItemFactory

pytestmark = pytest.mark.django_db

SPEC = "# Add a login page\n\nPlease."
XSS = "<script>alert(1)</script>"


def test_an_anonymous_visitor_is_sent_to_log_in(anonymous_client: Client) -> None:
    resp = anonymous_client.get("/work/new/")
    assert resp.status_code == 302
    assert resp["Location"] == "/accounts/login/?next=/work/new/"


def test_a_user_who_is_not_staff_logs_in_through_the_form_and_submits_work(user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/?next=/work/new/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value

    resp = client.post(
        "/accounts/login/",
        {
            "username": "ada",
            "password": "correct horse",
            "next": "/work/new/",
            "csrfmiddlewaretoken": token,
        },
    )
    assert resp.status_code == 302 and resp["Location"] == "/work/new/"

    form = client.get("/work/new/")
    assert b'href="/admin/"' not in form.content  # not staff: no admin link
    token = form.cookies.get("csrftoken", page.cookies["csrftoken"]).value
    resp = client.post(
        "/work/new/", {"repo": "acme/widgets", "spec": SPEC, "csrfmiddlewaretoken": token}
    )
    item = WorkItem.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/work/{item.pk}/"
    assert WorkItemEvent.objects.get(work_item=item, kind="submitted").actor == "user:ada"


def test_a_wrong_password_is_shown_on_the_login_page(user: Any, client: Client) -> None:
    resp = client.post("/accounts/login/", {"username": "ada", "password": "nope"})
    assert resp.status_code == 200
    assert b"Please enter a correct username and password" in resp.content


def test_logging_out_ends_the_session(user_client: Client) -> None:
    assert user_client.post("/accounts/logout/").status_code == 302
    assert user_client.get("/work/new/")["Location"].startswith("/accounts/login/")


def test_an_anonymous_post_is_sent_to_log_in_and_writes_nothing(anonymous_client: Client) -> None:
    resp = anonymous_client.post("/work/new/", {"repo": "acme/widgets", "spec": SPEC})
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")
    assert not WorkItem.objects.exists()


def test_an_anonymous_visitor_cannot_see_a_work_item(anonymous_client: Client) -> None:
    item = WorkItemFactory.create()
    resp = anonymous_client.get(f"/work/{item.pk}/")
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")


def test_a_logged_in_user_sees_the_form(user_client: Client) -> None:
    resp = user_client.get("/work/new/")
    assert resp.status_code == 200
    page = resp.content.decode()
    assert '<form method="post"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    for name in ("repo", "spec", "description", "branch", "priority", "maxIterations"):
        assert f'name="{name}"' in page


def test_a_valid_post_creates_an_item_and_redirects_to_its_page(user_client: Client) -> None:
    resp = user_client.post(
        "/work/new/", {"repo": "acme/widgets", "spec": SPEC, "priority": "high"}
    )
    item = WorkItem.objects.get()
    assert resp.status_code == 302
    assert resp["Location"] == f"/work/{item.pk}/"
    assert (item.repo, item.spec, item.priority, item.status) == (
        "acme/widgets",
        SPEC,
        "high",
        WorkItemStatus.QUEUED,
    )
    assert item.max_iterations == 50
    assert item.branch == "add-a-login-page"
    assert item.events.get().actor == "user:ada"


def test_the_item_page_shows_status_and_timeline(user_client: Client) -> None:
    resp = user_client.post("/work/new/", {"repo": "acme/widgets", "spec": SPEC}, follow=True)
    item = WorkItem.objects.get()
    assert resp.redirect_chain == [(f"/work/{item.pk}/", 302)]
    assert resp.status_code == 200
    page = resp.content.decode()
    assert '<td id="status">queued</td>' in page
    assert "<h2>Timeline</h2>" in page
    timeline = page.split("<h2>Timeline</h2>", 1)[1]
    assert "submitted" in timeline
    assert "user:ada" in timeline
    assert f"Work item {item.pk} submitted." in page


def test_the_item_page_follows_the_item_through_a_cancel(user_client: Client, api: Client) -> None:
    user_client.post("/work/new/", {"repo": "acme/widgets", "spec": SPEC})
    item = WorkItem.objects.get()
    api.post(f"/api/work/{item.pk}/cancel", "{}", "application/json")
    page = user_client.get(f"/work/{item.pk}/").content.decode()
    assert '<td id="status">cancelled</td>' in page
    timeline = page.split("<h2>Timeline</h2>", 1)[1]
    assert timeline.index("submitted") < timeline.index("cancelled")


def test_an_unknown_item_page_is_404(user_client: Client) -> None:
    assert user_client.get("/work/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_an_invalid_post_shows_the_form_again_with_the_values(user_client: Client) -> None:
    resp = user_client.post("/work/new/", {"repo": "nope", "spec": SPEC})
    assert resp.status_code == 400
    page = resp.content.decode()
    assert 'value="nope"' in page
    assert "must be owner/name" in page
    assert not WorkItem.objects.exists()


def test_a_full_queue_shows_the_reason_and_writes_nothing(
    user_client: Client, settings: Any
) -> None:
    settings.MAX_QUEUED = 1
    WorkItemFactory.create()
    resp = user_client.post("/work/new/", {"repo": "acme/widgets", "spec": SPEC})
    assert resp.status_code == 429
    assert "The queue is full" in resp.content.decode()
    assert WorkItem.objects.count() == 1


def test_a_repeated_idempotency_key_leads_to_the_first_item(user_client: Client) -> None:
    form = {"repo": "acme/widgets", "spec": SPEC, "idempotencyKey": "form-1"}
    first = user_client.post("/work/new/", form)
    again = user_client.post("/work/new/", {**form, "spec": "# Other"})
    assert again.status_code == 302
    assert again["Location"] == first["Location"]
    assert WorkItem.objects.count() == 1


# --- CSRF ------------------------------------------------------------------------------------


def test_a_post_without_a_csrf_token_is_refused_and_writes_nothing(csrf_client: Client) -> None:
    resp = csrf_client.post("/work/new/", {"repo": "acme/widgets", "spec": SPEC})
    assert resp.status_code == 403
    assert not WorkItem.objects.exists()
    assert not WorkItemEvent.objects.exists()


def test_a_post_with_a_wrong_csrf_token_is_refused(csrf_client: Client) -> None:
    csrf_client.get("/work/new/")
    resp = csrf_client.post(
        "/work/new/",
        {"repo": "acme/widgets", "spec": SPEC, "csrfmiddlewaretoken": "x" * 64},
    )
    assert resp.status_code == 403
    assert not WorkItem.objects.exists()


def test_a_post_with_the_csrf_token_from_the_form_is_accepted(csrf_client: Client) -> None:
    """The control: enforcement, not something else, is what refused the posts above."""
    page = csrf_client.get("/work/new/")
    token = page.context["csrf_token"]
    resp = csrf_client.post(
        "/work/new/", {"repo": "acme/widgets", "spec": SPEC, "csrfmiddlewaretoken": str(token)}
    )
    assert resp.status_code == 302
    assert WorkItem.objects.count() == 1


# --- escaping --------------------------------------------------------------------------------


def test_a_spec_with_a_script_tag_is_rendered_escaped(user_client: Client) -> None:
    spec = f"# Title\n\n{XSS}\n<img src=x onerror=alert(2)>"
    resp = user_client.post("/work/new/", {"repo": "acme/widgets", "spec": spec}, follow=True)
    assert resp.status_code == 200
    page = resp.content.decode()
    assert XSS not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


def test_a_description_and_error_with_markup_are_rendered_escaped(user_client: Client) -> None:
    item = WorkItemFactory.create(
        spec="",
        description=f"do {XSS}",
        status=WorkItemStatus.FAILED,
        error=f"boom {XSS}",
    )
    page = user_client.get(f"/work/{item.pk}/").content.decode()
    assert XSS not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2


def test_a_rejected_value_with_markup_is_rendered_escaped_in_the_form(
    user_client: Client,
) -> None:
    resp = user_client.post("/work/new/", {"repo": f"acme/{XSS}", "spec": SPEC})
    assert resp.status_code == 400
    assert XSS not in resp.content.decode()
