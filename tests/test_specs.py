"""Spec generation by template and by command (services.specs), on PostgreSQL: the template no
longer doubles an issue's heading; SPEC_COMMAND runs without a shell, the description on its
stdin, and a failure (non-zero exit, timeout, a spec that fails validation) sends the item back
to ``generating`` with a backoff kept on the row, until SPEC_MAX_ATTEMPTS fail it."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestration.choices import ErrorCategory, EventKind
from orchestration.clock import db_now
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.dispatch import dispatch_renudge_generation
from orchestration.services.specs import (
    spec_from_template,
    spec_generator,
    spec_problem,
    work_item_generate_spec,
)
from orchestration.services.work_items import work_item_requeue, work_item_submit
from tests.helpers import RETRY_DELAYS, task_mocks
from tests.transitions_support import events_of, make_due

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("retry_policy")]

ISSUE = "# Add dark mode\n\nThe settings page needs a toggle."


def submitted(description: str = ISSUE) -> WorkItem:
    item, _ = work_item_submit(repo="acme/widgets", description=description)
    assert item.status == WorkItemStatus.GENERATING
    return item


def command(settings: Any, tmp_path: Path, body: str, **more: Any) -> None:
    """SPEC_GENERATOR=command running ``body`` as a Python script."""
    script = tmp_path / "spec_cmd.py"
    script.write_text(body)
    settings.SPEC_GENERATOR = "command"
    settings.SPEC_COMMAND = f"{sys.executable} {script} 'two words'"
    for name, value in more.items():
        setattr(settings, name, value)


# --- the generator and the validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "agent", "expected"),
    [
        ("", "mock", "template"),
        ("", "claude", "agent"),
        ("", "codex", "agent"),
        ("", "command", "agent"),
        ("command", "claude", "command"),
        ("template", "claude", "template"),
    ],
)
def test_the_generator_is_explicit_or_follows_the_agent(
    settings: Any, explicit: str, agent: str, expected: str
) -> None:
    settings.SPEC_GENERATOR, settings.WHIM_AGENT = explicit, agent
    assert spec_generator() == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("# Title\n\nbody", ""),
        ("Intro\n\n- [ ] do it", ""),
        ("Intro\n\n1. do it", ""),
        ("", "empty"),
        ("   \n", "empty"),
        ("just prose, no structure at all", "neither a heading"),
        ("#no-space is a hashtag", "neither a heading"),
        ("# T\x00", "NUL"),
    ],
)
def test_a_spec_needs_a_heading_or_a_task(spec: str, problem: str) -> None:
    found = spec_problem(spec)
    assert (problem in found) if problem else found == ""


def test_a_spec_past_spec_max_bytes_is_refused_with_the_setting_named(settings: Any) -> None:
    settings.SPEC_MAX_BYTES = 100
    assert spec_problem("# T\n" + "é" * 60) == (
        "the spec is 124 bytes; at most 100 are allowed (SPEC_MAX_BYTES)"
    )


# --- template --------------------------------------------------------------------------------


def test_a_description_that_starts_with_a_heading_is_not_given_a_second_one() -> None:
    spec = spec_from_template("\n\n" + ISSUE)
    assert spec == ISSUE + "\n"
    assert spec.count("Add dark mode") == 1


def test_a_description_without_a_heading_gets_its_first_line_as_one() -> None:
    assert spec_from_template("Fix login\n\nIt breaks.") == "# Fix login\n\nFix login\n\nIt breaks."
    assert spec_from_template("## Sub\ntext").startswith("# Sub\n\n## Sub")


def test_the_template_queues_an_issue_with_one_heading(settings: Any) -> None:
    settings.SPEC_GENERATOR = "template"
    item = submitted()

    assert work_item_generate_spec(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert (item.status, item.spec, item.branch) == (
        WorkItemStatus.QUEUED,
        ISSUE + "\n",
        "add-dark-mode",
    )


def test_a_template_spec_too_big_fails_the_item_at_once(settings: Any) -> None:
    settings.SPEC_GENERATOR, settings.SPEC_MAX_BYTES = "template", 50
    item = submitted("# Big\n\n" + "x" * 200)

    assert work_item_generate_spec(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error_category == ErrorCategory.VALIDATION_ERROR
    assert "SPEC_MAX_BYTES" in item.error
    assert events_of(item)[-1] == (EventKind.SPEC_FAILED, "generating", "failed")


# --- command ---------------------------------------------------------------------------------

ECHO = """import sys
text = sys.stdin.read()
print("# From the command\\n\\n- [ ] " + text.splitlines()[0] + " / " + " | ".join(sys.argv[1:]))
"""


def test_the_command_gets_the_description_on_stdin_and_its_stdout_is_the_spec(
    settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    command(settings, tmp_path, ECHO)
    item = submitted("do $(touch /tmp/pwned) ; rm -rf x")

    with (
        task_mocks("orchestration.dispatch") as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert work_item_generate_spec(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    # No shell: the description is data, the quoted argument one word.
    assert (
        item.spec == "# From the command\n\n- [ ] do $(touch /tmp/pwned) ; rm -rf x / two words\n"
    )
    assert (item.retry_count, item.next_retry_at) == (0, None)
    assert sent["orchestration.dispatch"].called
    assert events_of(item)[-1] == (EventKind.SPEC_GENERATED, "generating", "queued")


FAILING = "import sys\nsys.stderr.write('model unavailable')\nsys.exit(3)\n"


def test_a_failing_command_is_retried_with_backoff_then_fails_the_item(
    settings: Any, tmp_path: Path
) -> None:
    command(settings, tmp_path, FAILING, SPEC_MAX_ATTEMPTS=3)
    item = submitted()

    for attempt in (1, 2):
        before = db_now()
        assert work_item_generate_spec(work_item_id=item.pk) is True
        item.refresh_from_db()
        assert (item.status, item.retry_count) == (WorkItemStatus.GENERATING, attempt)
        assert "exited with code 3: model unavailable" in item.error
        delay = dt.timedelta(seconds=RETRY_DELAYS[attempt - 1])
        assert item.next_retry_at is not None
        assert before + delay <= item.next_retry_at <= db_now() + delay
        # Not due yet: a nudge now changes nothing (the backoff lives on the row).
        assert work_item_generate_spec(work_item_id=item.pk) is False
        make_due(item)

    assert work_item_generate_spec(work_item_id=item.pk) is True

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert item.error.startswith("spec generation failed after 3 attempt(s): SPEC_COMMAND exited")
    assert item.error_category == ErrorCategory.AGENT_ERROR
    kinds = [kind for kind, _, _ in events_of(item)]
    assert kinds == ["submitted", "retry_scheduled", "retry_scheduled", "spec_failed"]


def test_a_command_past_spec_timeout_is_killed_and_retried(settings: Any, tmp_path: Path) -> None:
    command(settings, tmp_path, "import time\ntime.sleep(30)\n", SPEC_TIMEOUT=1)
    item = submitted()

    started = db_now()
    assert work_item_generate_spec(work_item_id=item.pk) is True

    assert db_now() - started < dt.timedelta(seconds=10)
    item.refresh_from_db()
    assert (item.status, item.error_category) == (WorkItemStatus.GENERATING, "TIMEOUT")
    assert "SPEC_TIMEOUT (1s)" in item.error


def test_an_invalid_spec_from_the_command_is_a_failed_try(settings: Any, tmp_path: Path) -> None:
    command(settings, tmp_path, "print('no structure here')\n")
    item = submitted()

    work_item_generate_spec(work_item_id=item.pk)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.GENERATING
    assert item.error.startswith("generated spec rejected: the spec has neither a heading")


def test_a_running_command_holds_a_lease_so_a_second_nudge_does_not_run_it_again(
    settings: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    body = f"open({str(marker)!r}, 'a').write('x')\nprint('# S')\n"
    command(settings, tmp_path, body)
    item = submitted()
    # A run in flight: its lease is on the row.
    WorkItem.objects.filter(pk=item.pk).update(next_retry_at=db_now() + dt.timedelta(minutes=5))

    assert work_item_generate_spec(work_item_id=item.pk) is False
    with task_mocks("orchestration.generate_spec") as sent:
        dispatch_renudge_generation()
    assert not sent["orchestration.generate_spec"].called
    assert not marker.exists()

    make_due(item)  # the lease passed: the run crashed; the next nudge takes over
    with task_mocks("orchestration.generate_spec") as sent:
        assert dispatch_renudge_generation() == 1
    sent["orchestration.generate_spec"].assert_called_once_with(str(item.pk))
    assert work_item_generate_spec(work_item_id=item.pk) is True
    assert marker.read_text() == "x"


def test_a_cancel_during_the_command_wins(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.services import specs
    from orchestration.services.work_items import work_item_cancel

    item = submitted()
    command(settings, tmp_path, "print('# S')\n")
    original = specs.spec_command_run

    def cancel_then_run(**kwargs: Any) -> Any:
        work_item_cancel(work_item_id=item.pk, reason="not wanted")
        return original(**kwargs)

    monkeypatch.setattr(specs, "spec_command_run", cancel_then_run)

    assert work_item_generate_spec(work_item_id=item.pk) is False

    item.refresh_from_db()
    assert (item.status, item.spec) == (WorkItemStatus.CANCELLED, "")


def test_a_requeued_spec_failure_waits_for_its_spec_again_with_fresh_tries(
    settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    command(settings, tmp_path, FAILING, SPEC_MAX_ATTEMPTS=1)
    item = submitted()
    work_item_generate_spec(work_item_id=item.pk)
    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED

    with (
        task_mocks("orchestration.generate_spec", "orchestration.dispatch") as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert work_item_requeue(work_item_id=item.pk, actor="ops") is True

    item.refresh_from_db()
    assert (item.status, item.retry_count, item.spec) == (WorkItemStatus.GENERATING, 0, "")
    sent["orchestration.generate_spec"].assert_called_once_with(str(item.pk))
    assert not sent["orchestration.dispatch"].called


# --- the item page ---------------------------------------------------------------------------

XSS = "<script>alert(1)</script>"


def test_the_item_page_shows_the_description_and_the_spec_side_by_side(
    staff_client: Any,
) -> None:
    item, _ = work_item_submit(repo="acme/widgets", description=f"# Ask\n\n{XSS} please")
    WorkItem.objects.filter(pk=item.pk).update(spec=f"# Spec\n\n- [ ] {XSS} handled")

    page = staff_client.get(f"/work/{item.pk}/").content.decode()

    assert XSS not in page  # both escaped
    pair = page.split('class="grid2 spec-pair"', 1)[1]
    assert pair.index('id="description-text"') < pair.index('id="spec-text"')
    assert "&lt;script&gt;alert(1)&lt;/script&gt; please" in pair
    assert "&lt;script&gt;alert(1)&lt;/script&gt; handled" in pair


def test_an_item_still_generating_shows_its_description_alone(staff_client: Any) -> None:
    item, _ = work_item_submit(repo="acme/widgets", description="# Ask\n\nplease")

    page = staff_client.get(f"/work/{item.pk}/").content.decode()

    assert "spec-pair" not in page
    assert '<h2 id="spec">Description</h2>' in page
