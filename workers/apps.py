"""The ``workers`` app: the container runtimes, their tasks, and the worker image/harness.

Dependency direction (DESIGN.md §10): ``workers`` uses ``orchestration``'s services, models
and bottom modules; ``orchestration`` never imports ``workers``. It reaches the runtime only
through ``orchestration.registry``, which ``ready()`` fills: the runtime implementations,
the runtime provider (status, checks, logs), the ``containers`` supervision sweep and the
GitHub App's credentials (read tokens for checking a reported commit).
"""

from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: they use models, which exist only once the app
        # registry is ready. Importing the runtimes registers them (``@register``).
        from orchestration.registry import (
            github_credentials_register,
            runtime_register,
            sweep_register,
        )
        from workers import (  # noqa: F401
            docker_runtime,
            fake_runtime,
            github_app,
            local_runtime,
            node_agent,
        )
        from workers.provider import WorkersRuntimeProvider
        from workers.services import containers_fan_out

        runtime_register(WorkersRuntimeProvider())
        github_credentials_register(github_app.AppCredentials())
        sweep_register("containers", containers_fan_out)
