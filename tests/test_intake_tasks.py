"""The GitHub loop's tasks (intake/tasks.py) and the watched repositories (intake/repos.py):
the poll visits every enabled repository, INTAKE_REPOS included, and one repository's failure
does not stop the others; the delivery task runs the outbox."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from intake import tasks
from intake.models import Repository
from intake.repos import repositories_watched

pytestmark = pytest.mark.django_db


def test_watched_repositories_are_the_enabled_rows_and_intake_repos(settings: Any) -> None:
    Repository.objects.create(name="acme/kept")
    Repository.objects.create(name="acme/off", enabled=False)
    settings.INTAKE_REPOS = ["acme/new", "acme/off", " "]

    watched = [r.name for r in repositories_watched()]
    again = [r.name for r in repositories_watched()]

    assert watched == again == ["acme/kept", "acme/new"]
    assert Repository.objects.filter(name="acme/new").count() == 1  # a row on first use


def test_the_poll_visits_each_watched_repository_despite_a_failure(settings: Any) -> None:
    settings.INTAKE_REPOS = ["acme/a", "acme/b"]
    seen: list[tuple[str, str]] = []

    def issues(*, repo: str) -> dict[str, int]:
        seen.append(("issues", repo))
        if repo == "acme/a":
            raise RuntimeError("boom")
        return {"created": 1}

    def pulls(*, repo: str) -> dict[str, int]:
        seen.append(("pulls", repo))
        return {"queued": 2}

    with (
        mock.patch.object(tasks, "issues_poll", issues),
        mock.patch.object(tasks, "pulls_poll", pulls),
    ):
        result = tasks.poll()

    assert seen == [
        ("issues", "acme/a"),
        ("pulls", "acme/a"),
        ("issues", "acme/b"),
        ("pulls", "acme/b"),
    ]
    assert result == {"acme/a": {"queued": 2}, "acme/b": {"created": 1, "queued": 2}}


def test_deliver_runs_the_outbox_for_the_id_it_is_given() -> None:
    with mock.patch.object(tasks, "github_action_deliver", return_value="done") as deliver:
        assert tasks.deliver("42") == "done"
    deliver.assert_called_once_with(action_id=42)
