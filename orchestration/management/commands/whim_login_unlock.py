"""Lift a login lockout (services.logins) for a name, an address, or everyone — for when the
one admin who could do it on the admin's page is the one locked out."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.services.logins import login_unlock


class Command(BaseCommand):
    help = "Unlock a login locked out after too many failed attempts (by name, address or all)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", default="", help="the username as typed at the login")
        parser.add_argument("--address", default="", help="the client address (IP)")
        parser.add_argument("--all", action="store_true", help="every name and every address")

    def handle(self, *args: Any, **options: Any) -> None:
        username, address = options["user"].strip(), options["address"].strip()
        if not (username or address or options["all"]):
            raise CommandError("say whom to unlock: --user NAME, --address IP or --all")
        unlocked = login_unlock(username=username, address=address, everyone=options["all"])
        self.stdout.write(f"Unlocked {unlocked}; their failed logins are forgotten.")
