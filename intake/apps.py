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
        from intake import labels
        from intake.outbox import action_handler_register, github_actions_sweep
        from orchestration import registry

        registry.sweep_register("github", github_actions_sweep)
        # The label flow: outbox rows written as an intake item moves, and the calls.
        registry.item_moved_register("intake.labels", labels.item_moved)
        action_handler_register(labels.KIND_LABELS_ADD, labels.labels_add)
        action_handler_register(labels.KIND_LABEL_REMOVE, labels.label_remove)
        action_handler_register(labels.KIND_COMMENT, labels.comment)
