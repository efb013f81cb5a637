"""The ``orchestration`` app: the domain — work items, attempts, locks, the queue and limits.

Layers (DESIGN.md §10; ``.importlinter`` enforces them in CI): the interface (API, web,
admin, commands, tasks, checks) calls services and selectors, which use models and the
bottom modules (clock, errors, rows, nudge, registry, retry, text). Services enqueue tasks
by name (``nudge.TaskName``). Nothing here imports ``workers``: the runtime registers its
sweep and provider into ``registry`` from its own AppConfig.
"""

from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: both use models, which exist only once the app
        # registry is ready. Importing them registers the system checks and the core sweeps.
        from orchestration import checks  # noqa: F401
        from orchestration.services import sweeps  # noqa: F401

        # The embedded stack's SQLite file and filesystem broker live here (none otherwise).
        for folder in settings.RUN_DIRECTORIES:
            Path(folder).mkdir(parents=True, exist_ok=True)
