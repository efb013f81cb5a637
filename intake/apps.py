"""The ``intake`` app: Whim's side of GitHub. Watched repositories, labelled issues turned
into work items (webhook and poll), and the outbox through which every call that changes
something on GitHub (labels, comments, reviews, check runs) is made once, retried until done.

It uses ``orchestration``'s models and services; ``orchestration`` reaches it only through
``orchestration.registry`` hooks, and it never imports ``workers``.
"""

from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "intake"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from intake.outbox import github_actions_sweep
        from orchestration import registry

        registry.sweep_register("github", github_actions_sweep)
