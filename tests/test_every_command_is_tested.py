"""Every management command of Whim's own apps has a test (netbox keeps the same rule).

A command counts as tested when a test module names it as a string, the way ``call_command``
and ``manage.py`` invocations do. A new command without one fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.apps import apps
from django.core.management import get_commands

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def project_commands() -> set[str]:
    """The commands of the apps that live in this repository (not Django's, not plugins')."""
    ours = {
        config.name
        for config in apps.get_app_configs()
        # Installed packages may sit inside the checkout too (.venv/…/site-packages).
        if Path(config.path).resolve().is_relative_to(ROOT)
        and "site-packages" not in Path(config.path).parts
    }
    return {name for name, app in get_commands().items() if app in ours}


def named_in_a_test(command: str) -> bool:
    quoted = re.compile(rf"""["']{re.escape(command)}["']""")
    return any(
        quoted.search(path.read_text())
        for path in TESTS.glob("test_*.py")
        if path.resolve() != Path(__file__).resolve()
    )


def test_the_projects_commands_are_found() -> None:
    assert {"whim", "whim_apikey", "whim_setup", "whim_sweep", "whim_runtime"} <= (
        project_commands()
    )


def test_every_management_command_has_a_test() -> None:
    untested = sorted(c for c in project_commands() if not named_in_a_test(c))
    assert untested == [], f"management commands without a test: {untested}"


def whim_subcommands() -> set[str]:
    """The subcommands of ``whim`` (``whim nodes``, ``whim node drain``, …)."""
    from orchestration.management.commands.whim import Command

    parser = Command().create_parser("manage.py", "whim")
    [sub] = [a for a in parser._actions if a.dest == "action"]
    return set(sub.choices or ())


def test_every_whim_subcommand_is_run_by_a_test() -> None:
    """A module that runs ``whim`` names each of its subcommands (``whim("nodes")``)."""
    runs = [
        path.read_text()
        for path in TESTS.glob("test_*.py")
        if path.resolve() != Path(__file__).resolve()
        and re.search(r"""\bwhim\(|["']whim["']""", path.read_text())
    ]
    untested = sorted(
        s for s in whim_subcommands() if not any(re.search(rf"""["']{s}["']""", t) for t in runs)
    )
    assert {"nodes", "node"} <= whim_subcommands()
    assert untested == [], f"whim subcommands without a test: {untested}"
