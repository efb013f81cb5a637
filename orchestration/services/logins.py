"""Login throttling: failed logins counted per username and per client address, in PostgreSQL.

Every web process (gunicorn runs several) reads and updates the same ``LoginThrottle`` rows,
each under a row lock, so the count cannot be split across processes or lost in a race.

1. Before checking a password, ``login_locked_for`` says how long the submitted name or the
   client address is still locked out; a locked login is refused even with the right password.
2. A wrong password is ``login_failure_record``-ed for both keys. Failures older than
   ``LOGIN_FAILURE_WINDOW_SECONDS`` start the count again; the failure that reaches the limit
   (``LOGIN_FAILURES_PER_USER`` / ``_PER_ADDRESS``) locks the key for ``LOGIN_LOCKOUT_SECONDS``,
   after which the count starts from zero.
3. A successful login clears its name's count (not the address's: an attacker could otherwise
   interleave logins to an account of their own to keep guessing).

The name is counted as typed (case-folded) whether or not such a user exists, and the answer
is the same either way, so a lockout never tells who has an account.
"""

from __future__ import annotations

import datetime as dt
import math

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from orchestration.clock import db_now
from orchestration.models import LoginThrottle

Scope = LoginThrottle.Scope


def _username_key(username: str) -> str:
    return username.strip().casefold()[:150]


def _keys(*, username: str, address: str) -> list[tuple[str, str, int]]:
    """(scope, key, limit) for each limit in force."""
    keys = [
        (Scope.USER, _username_key(username), settings.LOGIN_FAILURES_PER_USER),
        (Scope.ADDRESS, address[:150], settings.LOGIN_FAILURES_PER_ADDRESS),
    ]
    return [(scope, key, limit) for scope, key, limit in keys if key and limit > 0]


def _remaining(locked_until: dt.datetime | None, now: dt.datetime) -> int:
    return max(0, math.ceil((locked_until - now).total_seconds())) if locked_until else 0


def login_locked_for(*, username: str, address: str) -> int:
    """Seconds the name or the address is still locked out (0: free to try)."""
    keys = _keys(username=username, address=address)
    if not keys:
        return 0
    now = db_now()
    match = Q()
    for scope, key, _ in keys:
        match |= Q(scope=scope, key=key)
    locks = LoginThrottle.objects.filter(match, locked_until__gt=now)
    return max(
        (_remaining(t, now) for t in locks.values_list("locked_until", flat=True)), default=0
    )


def login_failure_record(*, username: str, address: str) -> int:
    """Count one failed login against the name and the address; returns the seconds of
    lockout it started (0 when neither limit was reached)."""
    window = dt.timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    lockout = dt.timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    locked = 0
    for scope, key, limit in _keys(username=username, address=address):
        with transaction.atomic():
            now = db_now()
            row, _ = LoginThrottle.objects.select_for_update().get_or_create(
                scope=scope, key=key, defaults={"window_started_at": now}
            )
            if row.locked_until and row.locked_until > now:
                continue  # already locked out: a failure now does not lengthen it
            if row.locked_until or row.window_started_at <= now - window:
                row.failures, row.window_started_at, row.locked_until = 0, now, None
            row.failures += 1
            if row.failures >= limit:
                row.failures, row.window_started_at, row.locked_until = 0, now, now + lockout
                locked = max(locked, _remaining(row.locked_until, now))
            row.save(update_fields=["failures", "window_started_at", "locked_until"])
    _forget_stale(window=window)
    return locked


def _forget_stale(*, window: dt.timedelta) -> None:
    """Rows whose window and lockout are both over say nothing more: delete them, so names
    tried once do not pile up."""
    now = db_now()
    LoginThrottle.objects.filter(
        Q(locked_until__isnull=True) | Q(locked_until__lte=now),
        window_started_at__lte=now - window,
    ).delete()


def login_success_record(*, username: str) -> None:
    """A successful login: its name starts with a clean count."""
    LoginThrottle.objects.filter(scope=Scope.USER, key=_username_key(username)).delete()


def login_unlock(*, username: str = "", address: str = "", everyone: bool = False) -> int:
    """Lift the lockout (and forget the failures) of a name, an address, or everyone; returns
    how many were locked out."""
    rows = LoginThrottle.objects.all()
    if not everyone:
        match = Q(pk__in=[])
        if username:
            match |= Q(scope=Scope.USER, key=_username_key(username))
        if address:
            match |= Q(scope=Scope.ADDRESS, key=address.strip())
        rows = rows.filter(match)
    locked = rows.filter(locked_until__gt=db_now()).count()
    rows.delete()
    return locked


def lockout_message(seconds: int) -> str:
    """What a refused login says: the same whether or not the name exists."""
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed logins; try again in {minutes} {unit}."
