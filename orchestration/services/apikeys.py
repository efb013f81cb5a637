"""Client API keys: created once (shown once), stored as SHA-256, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.utils import timezone

from orchestration.errors import NotFound
from orchestration.models import ApiKey

KEY_PREFIX = "whim_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def apikey_create(*, name: str, auto_created: bool = False) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the key itself, which is never stored.

    ``auto_created``: made by ``make run`` for its own run, not by an operator (see
    ``apikeys_configured``)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(
        name=name[:100], prefix=key[:12], key_hash=_digest(key), auto_created=auto_created
    )
    return row, key


def apikey_revoke(*, key_id: int) -> bool:
    """Revoke a key; False when it was already revoked."""
    if not ApiKey.objects.filter(pk=key_id).exists():
        raise NotFound("API key not found")
    return bool(
        ApiKey.objects.filter(pk=key_id, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )


def apikey_authenticate(*, key: str) -> str | None:
    """The caller's name for a valid key (``api-key:<name>``, ``env:API_KEY``), else None."""
    if not key or len(key) > 200:
        return None
    if settings.API_KEY and hmac.compare_digest(key.encode(), settings.API_KEY.encode()):
        return "env:API_KEY"
    row = ApiKey.objects.filter(key_hash=_digest(key), revoked_at__isnull=True).first()
    if row is None:
        return None
    ApiKey.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
    return f"api-key:{row.name}"


def apikeys_configured() -> bool:
    """An operator configured (``API_KEY``) or created (admin, ``whim_apikey``) a live key.

    The key ``make run`` makes for itself does not count: single-machine mode keeps letting
    keyless loopback requests in (the original Whim's client sends no key) until an operator
    asks for keys."""
    return (
        bool(settings.API_KEY)
        or ApiKey.objects.filter(revoked_at__isnull=True, auto_created=False).exists()
    )
