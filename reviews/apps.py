"""The ``reviews`` app: PR reviews (self-reviews stored on completion) and the GitHub webhook.

It uses ``orchestration``'s models and services; ``orchestration`` calls its services (never
its views), and neither imports ``workers``.
"""

from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    default_auto_field = "django.db.models.BigAutoField"
