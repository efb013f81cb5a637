"""Manage client API keys: create (shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.errors import NotFound
from orchestration.models import ApiKey
from orchestration.services.apikeys import apikey_create, apikey_revoke


class Command(BaseCommand):
    help = "Create, list or revoke API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it (once)")
        create.add_argument("--name", required=True)
        sub.add_parser("list", help="list keys (never the keys themselves)")
        revoke = sub.add_parser("revoke", help="revoke a key by id")
        revoke.add_argument("id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            name = options["name"].strip()
            if not name or len(name) > 100 or "\x00" in name:
                raise CommandError("name: must be 1 to 100 characters")
            row, key = apikey_create(name=name)
            self.stdout.write(f"Created key {row.pk} ({row.name}). It is shown only now:")
            self.stdout.write(key)
        elif action == "list":
            for row in ApiKey.objects.order_by("pk"):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                self.stdout.write(f"{row.pk}\t{row.name}\t{row.prefix}…\t{state}")
        else:
            try:
                changed = apikey_revoke(key_id=options["id"])
            except NotFound as exc:
                raise CommandError(exc.message) from None
            self.stdout.write("Revoked." if changed else "Already revoked.")
