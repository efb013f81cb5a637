"""Whim: the Django project (settings, urls, the Celery app)."""

from whim.celery import app as celery_app

__all__ = ["celery_app"]
