"""Prepare a fresh install for `make run`: an admin login and an API key, printed once."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db.models import Q

from orchestration.models import ApiKey
from orchestration.services.apikeys import apikey_create, apikey_revoke

RUN_KEY_NAME = "make-run"


class Command(BaseCommand):
    help = "Create the admin user (if none) and a fresh API key for this run; print both."

    def handle(self, *args: Any, **options: Any) -> None:
        # Without SECRET_KEY, single-machine mode keeps one in .run/secret_key, made on first
        # use: make it now, before web and workers start.
        assert settings.SECRET_KEY
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@localhost", password)
            self.stdout.write(f"Admin login created: admin / {password}")
        else:
            self.stdout.write(
                "Admin login exists (reset it with: .venv/bin/python manage.py changepassword "
                "admin)"
            )
        # The previous run's key: marked, or (made before the mark existed) by its name.
        previous = Q(auto_created=True) | Q(name=RUN_KEY_NAME)
        for old in ApiKey.objects.filter(previous, revoked_at__isnull=True):
            apikey_revoke(key_id=old.pk)
        # Marked as this run's own: it works, but leaves keyless loopback on in
        # single-machine mode (only an operator's key turns that off).
        _, key = apikey_create(name=RUN_KEY_NAME, auto_created=True)
        self.stdout.write(f"API key for this run: {key}")
