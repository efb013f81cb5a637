"""The ``orchestration`` app: the domain — work items, attempts, locks, the queue and limits.

Layers (DESIGN.md §10; ``.importlinter`` enforces them in CI): the interface (API, web,
admin, commands, tasks, checks) calls services and selectors, which use models and the
bottom modules (clock, errors, rows, nudge, registry, retry, text). Services enqueue tasks
by name (``nudge.TaskName``). Nothing here imports ``workers``: the runtime registers its
sweep and provider into ``registry`` from its own AppConfig.
"""

from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.conf import settings
from django.db.models.signals import post_migrate


def _sync_roles(sender: AppConfig, apps: Any = None, **kwargs: Any) -> None:
    """After every ``migrate`` (and every test-database flush): the role groups exist and hold
    exactly their permissions, including those of models added since the data migration."""
    # Imported here: apps.py is imported while the app registry loads, before auth is ready.
    from orchestration.roles import roles_sync

    apps = apps or global_apps  # ``flush`` sends no migration state: the models as they are
    try:
        group, permission = apps.get_model("auth", "Group"), apps.get_model("auth", "Permission")
    except LookupError:  # auth is not migrated (yet)
        return
    roles_sync(group_model=group, permission_model=permission)


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: both use models, which exist only once the app
        # registry is ready. Importing them registers the system checks and the core sweeps.
        from orchestration import checks, checks_database, checks_nodes  # noqa: F401
        from orchestration.services import sweeps  # noqa: F401

        # Sent once per migrated app, after auth's handler made that app's permissions: the
        # last run sees them all.
        post_migrate.connect(_sync_roles, dispatch_uid="orchestration.roles")

        # The embedded stack's SQLite file and filesystem broker live here (none otherwise).
        for folder in settings.RUN_DIRECTORIES:
            Path(folder).mkdir(parents=True, exist_ok=True)
