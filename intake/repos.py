"""The repositories Whim watches: ``Repository`` rows that are enabled, plus every
INTAKE_REPOS entry (a row is created for it on first use, so the admin can tune it)."""

from __future__ import annotations

from django.conf import settings

from intake.models import Repository


def repositories_watched() -> list[Repository]:
    """Every enabled watched repository, by name. An INTAKE_REPOS entry whose row an
    operator disabled stays unwatched."""
    for name in {str(n).strip() for n in settings.INTAKE_REPOS if str(n).strip()}:
        if not Repository.objects.filter(name__iexact=name).exists():
            Repository.objects.get_or_create(name=name)
    return list(Repository.objects.filter(enabled=True).order_by("name"))
