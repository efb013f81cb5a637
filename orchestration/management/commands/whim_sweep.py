"""Run supervision sweeps by hand: ``manage.py whim_sweep [name]`` (default: all)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from orchestration.registry import sweeps
from orchestration.services.sweeps import sweep_run


class Command(BaseCommand):
    help = "Run a supervision sweep now: " + ", ".join([*sweeps(), "all"]) + "."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default="all", choices=[*sweeps(), "all"])

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(sweep_run(name=options["name"]), indent=2))
