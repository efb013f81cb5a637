"""Which runtime agents run in here, and (``--gateway``) the address containers call back on."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers.docker_runtime import DockerRuntime
from workers.runtime import get_runtime, resolved_runtime_name


class Command(BaseCommand):
    help = "Print the resolved container runtime; --gateway prints the worker network gateway."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--gateway",
            action="store_true",
            help="ensure the Docker worker network and print its gateway IP",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = resolved_runtime_name(settings.WHIM_RUNTIME)
        if options["gateway"]:
            if name != "docker":
                raise CommandError(f"the runtime is {name!r}, not docker: no worker network")
            runtime = get_runtime(name)
            assert isinstance(runtime, DockerRuntime)
            self.stdout.write(runtime.ensure_network())
            return
        runtime = get_runtime(name)
        note = "isolated" if runtime.isolated else "NOT isolated: agents run on this machine"
        self.stdout.write(f"{name} ({note})")
