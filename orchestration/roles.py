"""Who may do what: the console's three roles as Django groups, and how views ask.

- ``viewer``: reads every console page (and, with ``is_staff``, the admin's lists), acts on
  nothing. A logged-in user in no group is a viewer.
- ``operator``: a viewer who may also submit work (``submit_work_items``) and act on it —
  cancel, requeue, set priority, kill an attempt, release a lock (``operate_work_items``).
- ``admin``: an operator who may also manage API keys, beat schedules, users and their roles
  and login lockouts (every permission of Whim's apps and of users and groups). The admin
  site itself also needs ``is_staff``; superusers hold every permission implicitly.

The groups and their permissions are made by a data migration and kept in step after every
``migrate`` (``roles_sync``, idempotent); they are assigned on the admin's user page.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # from least to most

# Custom permissions, declared on WorkItem's Meta (app label "orchestration").
OPERATE = "orchestration.operate_work_items"
SUBMIT = "orchestration.submit_work_items"

# The apps whose models the roles read (view_*) and the admin manages (every permission).
ROLE_APPS = ("orchestration", "reviews", "intake", "django_celery_beat")
ADMIN_EXTRA_APPS = ("auth", "admin")
ADMIN_ONLY = {"view_loginthrottle"}
ACTIONS = {tuple(perm.split(".", 1)) for perm in (OPERATE, SUBMIT)}


def role_permissions(permission_model: Any) -> dict[str, list[Any]]:
    """The permissions each role's group holds, from the rows that exist now."""
    perms = permission_model.objects.select_related("content_type")
    ours = [p for p in perms if p.content_type.app_label in ROLE_APPS]
    # Failed logins are an admin's business: people type passwords into the name field.
    views = [p for p in ours if p.codename.startswith("view_") and p.codename not in ADMIN_ONLY]
    actions = [p for p in ours if (p.content_type.app_label, p.codename) in ACTIONS]
    everything = ours + [p for p in perms if p.content_type.app_label in ADMIN_EXTRA_APPS]
    return {VIEWER: views, OPERATOR: views + actions, ADMIN: everything}


def roles_sync(*, group_model: Any, permission_model: Any) -> None:
    """Make the three groups and set exactly their permissions (run it any number of times).

    Takes the models so the data migration can pass its historical ones.
    """
    for name, perms in role_permissions(permission_model).items():
        group, _ = group_model.objects.get_or_create(name=name)
        group.permissions.set(perms)


def user_role(user: Any) -> str:
    """The role the console shows for ``user``: its highest group; superusers are admins; a
    user in no group is a viewer."""
    if not getattr(user, "is_authenticated", False):
        return ""
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in reversed(ROLES) if role in names), VIEWER)


def requires(perm: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A console view for logged-in users holding ``perm``: anyone else who is logged in gets
    a 403 page naming their role (and nothing happens); an anonymous visitor is sent to log in.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(perm):
                return render(
                    request,
                    "orchestration/forbidden.html",
                    {"role": user_role(request.user), "needed": OPERATOR},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return checked

    return decorate
