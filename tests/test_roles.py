"""Roles: a viewer reads, an operator acts, an admin also manages — in the console and the admin.

Every console action is refused to a viewer (403, nothing changes) and done for an operator;
the buttons are hidden from a viewer; the admin's actions need the same permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from orchestration.models import (
    ApiKey,
    FileLock,
    Worker,
    WorkerStatus,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
)
from orchestration.roles import ADMIN, OPERATE, OPERATOR, ROLES, SUBMIT, VIEWER, roles_sync
from orchestration.services.apikeys import apikey_create
from tests.factories import WorkItemFactory, running_item
from tests.helpers import give_role, logged_in_client

pytestmark = pytest.mark.django_db

SPEC = "# Add a login page\n\nPlease."


def snapshot() -> list[tuple[Any, ...]]:
    """Everything a console action could change: items, attempts, events."""
    return [
        *WorkItem.objects.order_by("pk").values_list("pk", "status", "retry_count", "priority"),
        *Worker.objects.order_by("pk").values_list("pk", "status"),
        ("events", WorkItemEvent.objects.count()),
    ]


# --- the groups -------------------------------------------------------------------------------


def perms_of(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


def test_the_migration_made_the_three_groups_with_their_permissions() -> None:
    viewer, operator, admin = (perms_of(r) for r in (VIEWER, OPERATOR, ADMIN))
    assert {"orchestration.view_workitem", "orchestration.view_worker"} <= viewer
    assert "reviews.view_prreview" in viewer
    assert all(p.split(".")[1].startswith("view_") for p in viewer)
    assert "orchestration.view_loginthrottle" not in viewer  # names typed at the login
    assert operator == viewer | {OPERATE, SUBMIT}
    assert operator < admin
    assert {
        "orchestration.change_apikey",
        "django_celery_beat.change_periodictask",
        "auth.change_user",
        "orchestration.delete_loginthrottle",
        "orchestration.view_loginthrottle",
    } <= admin


def test_syncing_the_roles_again_changes_nothing_and_repairs_a_group() -> None:
    before = {role: perms_of(role) for role in ROLES}
    Group.objects.get(name=OPERATOR).permissions.remove(
        Permission.objects.get(codename="operate_work_items")
    )
    Group.objects.get(name=VIEWER).delete()

    roles_sync(group_model=Group, permission_model=Permission)
    roles_sync(group_model=Group, permission_model=Permission)

    assert Group.objects.filter(name__in=ROLES).count() == 3
    assert {role: perms_of(role) for role in ROLES} == before


def test_the_role_shown_is_the_highest_group_and_a_user_in_none_is_a_viewer(
    django_user_model: Any, viewer: Any, superuser: Any
) -> None:
    both = django_user_model.objects.create_user("both", password="pw-both-12")
    give_role(both, VIEWER)
    give_role(both, OPERATOR)
    for person, role in [(viewer, "viewer"), (both, "operator"), (superuser, "admin")]:
        page = logged_in_client(person).get("/queue/").content.decode()
        assert 'id="role" title="what you may do here: viewer reads, operator acts' in page
        assert f">{role}</span>" in page, role


# --- every console action: a viewer gets 403 and nothing changes; an operator succeeds ---------


@dataclass
class ConsoleAction:
    name: str
    arrange: Callable[[], dict[str, Any]]  # makes the rows; returns what the request needs
    request: Callable[[Client, dict[str, Any]], Any]
    done: Callable[[dict[str, Any]], bool]  # the operator's request had its effect


def _queued() -> dict[str, Any]:
    return {"item": WorkItemFactory.create()}


def _failed() -> dict[str, Any]:
    return {"item": WorkItemFactory.create(status=WorkItemStatus.FAILED, retry_count=3)}


def _running() -> dict[str, Any]:
    item, worker = running_item()
    return {"item": item, "worker": worker}


def _status(ctx: dict[str, Any]) -> str:
    return WorkItem.objects.get(pk=ctx["item"].pk).status


ACTIONS = [
    ConsoleAction(
        "submit",
        dict,
        lambda c, _: c.post("/work/new/", {"repo": "acme/widgets", "spec": SPEC}),
        lambda _: WorkItem.objects.filter(repo="acme/widgets").exists(),
    ),
    ConsoleAction(
        "branch preview",
        dict,
        lambda c, _: c.post("/work/new/branch-preview/", {"spec": "# Fix it"}),
        lambda _: True,
    ),
    ConsoleAction(
        "cancel",
        _queued,
        lambda c, x: c.post(f"/work/{x['item'].pk}/cancel/", {"reason": "no"}),
        lambda x: _status(x) == WorkItemStatus.CANCELLED,
    ),
    ConsoleAction(
        "requeue",
        _failed,
        lambda c, x: c.post(f"/work/{x['item'].pk}/requeue/", {"reset_retries": "1"}),
        lambda x: _status(x) == WorkItemStatus.QUEUED,
    ),
    ConsoleAction(
        "kill",
        _running,
        lambda c, x: c.post(f"/workers/{x['worker'].pk}/kill/", {"reason": "runaway"}),
        lambda x: Worker.objects.get(pk=x["worker"].pk).status == WorkerStatus.KILLED,
    ),
    ConsoleAction(
        "kill and fail",
        _running,
        lambda c, x: c.post(f"/workers/{x['worker'].pk}/kill/", {"retry": "false"}),
        lambda x: Worker.objects.get(pk=x["worker"].pk).status == WorkerStatus.KILLED,
    ),
    ConsoleAction(
        "bulk cancel: the confirmation",
        _queued,
        lambda c, x: c.post("/queue/bulk/", {"op": "cancel:selected", "ids": [x["item"].pk]}),
        lambda x: _status(x) == WorkItemStatus.QUEUED,  # it only asks
    ),
    ConsoleAction(
        "bulk cancel",
        _queued,
        lambda c, x: c.post(
            "/queue/bulk/",
            {"action": "cancel", "scope": "selected", "ids": [x["item"].pk], "confirm": "yes"},
        ),
        lambda x: _status(x) == WorkItemStatus.CANCELLED,
    ),
    ConsoleAction(
        "bulk requeue of everything matching",
        _failed,
        lambda c, x: c.post(
            "/queue/bulk/",
            {
                "action": "requeue_reset",
                "scope": "matching",
                "status": "failed",
                "confirm": "yes",
                "asof": x["item"].created_at.isoformat(),
            },
        ),
        lambda x: _status(x) == WorkItemStatus.QUEUED,
    ),
]
ACTION_IDS = [a.name for a in ACTIONS]


@pytest.mark.parametrize("act", ACTIONS, ids=ACTION_IDS)
def test_a_viewer_is_refused_every_console_action_and_nothing_changes(
    viewer_client: Client, stop_delay: Any, act: ConsoleAction
) -> None:
    ctx = act.arrange()
    before = snapshot()

    resp = act.request(viewer_client, ctx)

    assert resp.status_code == 403
    page = resp.content.decode()
    assert "Your role is <strong>viewer</strong>" in page
    assert "Nothing was changed." in page
    assert snapshot() == before
    stop_delay.assert_not_called()


@pytest.mark.parametrize("act", ACTIONS, ids=ACTION_IDS)
def test_an_operator_may_do_every_console_action(
    staff_client: Client, stop_delay: Any, act: ConsoleAction
) -> None:
    """The control for the test above: the same requests, by the ``staff`` fixture's operator."""
    ctx = act.arrange()

    resp = act.request(staff_client, ctx)

    assert resp.status_code in (200, 302), resp.content
    assert act.done(ctx)


def test_an_operator_without_staff_may_act_too(user_client: Client) -> None:
    item = WorkItemFactory.create()
    user_client.post(f"/work/{item.pk}/cancel/", {"reason": "no"})
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.CANCELLED


def test_an_anonymous_visitor_is_sent_to_log_in_before_any_role_check(
    anonymous_client: Client,
) -> None:
    item = WorkItemFactory.create()
    resp = anonymous_client.post(f"/work/{item.pk}/cancel/")
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")


# --- what a viewer sees --------------------------------------------------------------------


def test_a_viewer_reads_every_page_but_sees_no_action_button(
    viewer_client: Client, staff_client: Client
) -> None:
    queued = WorkItemFactory.create()
    failed = WorkItemFactory.create(status=WorkItemStatus.FAILED)
    running_item()
    pages = {
        "queue": "/queue/?status=all",
        "queued item": f"/work/{queued.pk}/",
        "failed item": f"/work/{failed.pk}/",
        "workers": "/workers/",
        "dashboard": "/",
    }
    buttons = [
        'id="bulk-form"',
        'name="ids"',
        'id="cancel-button"',
        'id="requeue-button"',
        ">Kill</button>",
        ">Kill and fail</button>",
        'href="/work/new/"',
    ]
    seen_by_operator = "".join(staff_client.get(p).content.decode() for p in pages.values())
    assert all(b in seen_by_operator for b in buttons)  # the control: they exist

    for name, path in pages.items():
        resp = viewer_client.get(path)
        assert resp.status_code == 200, name
        page = resp.content.decode()
        assert not [b for b in buttons if b in page], name
    assert 'id="no-bulk"' in viewer_client.get("/queue/").content.decode()
    assert 'id="no-actions"' in viewer_client.get(f"/work/{queued.pk}/").content.decode()


def test_the_submit_form_is_refused_to_a_viewer(viewer_client: Client) -> None:
    assert viewer_client.get("/work/new/").status_code == 403


# --- the admin ------------------------------------------------------------------------------


def admin_action(client: Client, url: str, name: str, pks: list[Any]) -> Any:
    data = {"action": name, "_selected_action": [str(pk) for pk in pks], "apply": "yes"}
    return client.post(url, {**data, "reason": "because"}, follow=True)


@pytest.fixture
def staff_viewer(viewer: Any) -> Client:
    """A viewer with ``is_staff``: reads the admin's lists, no more."""
    viewer.is_staff = True
    viewer.save()
    return logged_in_client(give_role(viewer, VIEWER))


@pytest.fixture
def staff_admin(django_user_model: Any) -> Client:
    """Staff in the admin group, not a superuser."""
    person = django_user_model.objects.create_user("barbara", password="pw-admin-1", is_staff=True)
    return logged_in_client(give_role(person, ADMIN))


WORK_ACTIONS = [
    ("workitem", "cancel", _queued, lambda x: _status(x) == WorkItemStatus.CANCELLED),
    ("workitem", "requeue", _failed, lambda x: _status(x) == WorkItemStatus.QUEUED),
    ("workitem", "requeue_reset", _failed, lambda x: _status(x) == WorkItemStatus.QUEUED),
    (
        "workitem",
        "priority_critical",
        _queued,
        lambda x: WorkItem.objects.get(pk=x["item"].pk).priority == "critical",
    ),
    (
        "worker",
        "kill",
        _running,
        lambda x: Worker.objects.get(pk=x["worker"].pk).status == WorkerStatus.KILLED,
    ),
    (
        "worker",
        "kill_and_fail",
        _running,
        lambda x: Worker.objects.get(pk=x["worker"].pk).status == WorkerStatus.KILLED,
    ),
]


def _target(model: str, ctx: dict[str, Any]) -> Any:
    return ctx["worker"].pk if model == "worker" else ctx["item"].pk


@pytest.mark.parametrize(
    ("model", "name", "arrange", "done"), WORK_ACTIONS, ids=[a[1] for a in WORK_ACTIONS]
)
def test_the_admins_work_actions_need_the_operators_permission(
    staff_viewer: Client,
    staff_client: Client,
    stop_delay: Any,
    model: str,
    name: str,
    arrange: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
) -> None:
    ctx = arrange()
    url = f"/admin/orchestration/{model}/"
    listing = staff_viewer.get(url)
    assert listing.status_code == 200  # a staff viewer reads the list…
    assert f'value="{name}"' not in listing.content.decode()  # …is not offered the action…
    before = snapshot()
    admin_action(staff_viewer, url, name, [_target(model, ctx)])
    assert snapshot() == before  # …and posting it anyway changes nothing
    stop_delay.assert_not_called()

    assert f'value="{name}"' in staff_client.get(url).content.decode()
    admin_action(staff_client, url, name, [_target(model, ctx)])
    assert done(ctx)


def test_releasing_a_lock_in_the_admin_needs_the_operators_permission(
    staff_viewer: Client, staff_client: Client
) -> None:
    _, worker = running_item()
    lock = FileLock.objects.create(
        repo="r/x", path="a.py", worker=worker, expires_at=worker.created_at
    )
    url = "/admin/orchestration/filelock/"
    admin_action(staff_viewer, url, "release", [lock.pk])
    assert FileLock.objects.filter(pk=lock.pk).exists()
    admin_action(staff_client, url, "release", [lock.pk])
    assert not FileLock.objects.filter(pk=lock.pk).exists()


def test_revoking_an_api_key_is_for_admins_only(staff_client: Client, staff_admin: Client) -> None:
    row, _ = apikey_create(name="ci")
    url = "/admin/orchestration/apikey/"
    admin_action(staff_client, url, "revoke", [row.pk])  # an operator
    assert ApiKey.objects.get(pk=row.pk).revoked_at is None
    admin_action(staff_admin, url, "revoke", [row.pk])
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None


@pytest.mark.parametrize("name", ["disable_tasks", "toggle_tasks", "run_tasks"])
def test_beat_schedule_actions_are_for_admins_only(
    staff_client: Client, staff_admin: Client, name: str
) -> None:
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(
        name="probe", task="orchestration.sweep", interval=every, enabled=True
    )
    url = "/admin/django_celery_beat/periodictask/"
    assert f'value="{name}"' not in staff_client.get(url).content.decode()
    admin_action(staff_client, url, name, [task.pk])
    assert PeriodicTask.objects.get(pk=task.pk).enabled is True
    assert f'value="{name}"' in staff_admin.get(url).content.decode()
    if name != "run_tasks":  # running one needs a broker; being offered it is the point here
        admin_action(staff_admin, url, name, [task.pk])
        assert PeriodicTask.objects.get(pk=task.pk).enabled is False


def test_an_admin_gives_roles_on_the_users_page(
    staff_admin: Client, staff_client: Client, viewer: Any
) -> None:
    operator_group = Group.objects.get(name=OPERATOR)
    url = f"/admin/auth/user/{viewer.pk}/change/"
    assert staff_client.get(url).status_code == 403  # an operator manages no one
    page = staff_admin.get(url)
    assert page.status_code == 200
    assert 'name="groups"' in page.content.decode()
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(
        groups=[operator_group.pk],
        user_permissions=[],
        date_joined_0=viewer.date_joined.strftime("%Y-%m-%d"),
        date_joined_1=viewer.date_joined.strftime("%H:%M:%S"),
        last_login_0="",
        last_login_1="",
    )
    resp = staff_admin.post(url, data)
    assert resp.status_code == 302, resp.context["adminform"].form.errors
    item = WorkItemFactory.create()
    now_operator = logged_in_client(type(viewer).objects.get(pk=viewer.pk))
    now_operator.post(f"/work/{item.pk}/cancel/", {"reason": "promoted"})
    assert WorkItem.objects.get(pk=item.pk).status == WorkItemStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_the_groups_come_back_after_a_flush() -> None:
    """Transactional tests (and ``manage.py flush``) empty every table, groups included; the
    roles are made again after it, as after every ``migrate``."""
    call_command("flush", interactive=False, verbosity=0)
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)
    assert OPERATE.split(".")[1] in {
        p.codename for p in Group.objects.get(name=OPERATOR).permissions.all()
    }
