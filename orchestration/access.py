"""Who may call: client API keys and the login throttle. Re-exported by ``orchestration.models``."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class ApiKey(models.Model):
    """A client API key. Only its SHA-256 is stored; the key itself is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Made by ``make run`` (whim_setup), not by an operator: it still authenticates, but does
    # not switch off single-machine mode's keyless loopback access (apikeys_configured).
    auto_created = models.BooleanField(default=False, editable=False)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class LoginThrottle(models.Model):
    """Failed logins counted per submitted username or per client address (services.logins).

    One row per (scope, key), updated under a row lock, so every web process sees the same
    count. The key is the name as typed (case-folded), whether or not such a user exists.
    """

    class Scope(models.TextChoices):
        USER = "user"
        ADDRESS = "address"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    key = models.CharField(max_length=150)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(db_index=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["scope", "key"], name="loginthrottle_scope_key"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"
