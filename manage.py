#!/usr/bin/env python
"""Django's command-line utility for Whim."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")
    from django.core.management import execute_from_command_line

    from whim import telemetry  # tracing, when an OTLP endpoint is configured

    telemetry.setup("whim-web" if sys.argv[1:2] == ["runserver"] else "whim-manage")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
