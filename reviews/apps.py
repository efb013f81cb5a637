"""The ``reviews`` app: PR reviews (self-reviews stored on completion), the GitHub webhook, and
the review bot's reporting (``bot.py``: outbox rows when a review job ends; ``posting.py``: the
outbox handlers that post them).

It uses ``orchestration``'s models and services and ``intake``'s outbox; ``orchestration``
calls its services (never its views) and reaches the bot through ``registry`` hooks; none of
them imports ``workers``.
"""

from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orchestration import registry
        from reviews import posting
        from reviews.bot import review_item_moved

        registry.item_moved_register("reviews.bot", review_item_moved)
        posting.handlers_register()
