"""The ``whim`` console script: ``whim submit owner/repo --spec-file spec.md`` and friends.

It is ``manage.py whim …`` under another name, so both share one implementation.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["whim", "whim", *sys.argv[1:]])
