"""Protected branches and the name rules at every edge (issue 9): POST /api/work, the web form
and ``whim submit`` refuse a protected branch, a name git refuses and a repo GitHub refuses,
with the same 400 and ``details`` message, writing nothing; so does the lock callback (the
admin edits no field of a work item). A branch derived from the spec is never protected.
The harness gets the globs.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from django.test import Client

from orchestration.choices import PERMANENT_CATEGORIES, ErrorCategory
from orchestration.models import WorkItem, WorkItemStatus
from orchestration.services.work_items import work_item_generate_spec
from orchestration.services.workers import worker_fail
from tests.factories import running_attempt
from tests.helpers import assert_error
from tests.test_api_validation import (
    SPEC,
    as_form_value,
    command_args,
    nothing_written,
    run_submit,
    submit_api,
)
from tests.test_locks import post
from workers.runtime import worker_environment

pytestmark = pytest.mark.django_db


def protected(branch: str, rule: str) -> str:
    return (
        f"'{branch}' is protected (WHIM_PROTECTED_BRANCHES rule '{rule}'); "
        "Whim never pushes to it: choose another branch"
    )


CHARSET = "must start with a letter or digit and hold only letters, digits, '/', '_', '.', '-'"
REFUSED = [
    # protected by the default globs (matched regardless of case)
    ("branch", {"branch": "main"}, protected("main", "main")),
    ("branch", {"branch": "Main"}, protected("Main", "main")),
    ("branch", {"branch": "master"}, protected("master", "master")),
    ("branch", {"branch": "develop"}, protected("develop", "develop")),
    ("branch", {"branch": "trunk"}, protected("trunk", "trunk")),
    ("branch", {"branch": "release/2.0"}, protected("release/2.0", "release/*")),
    ("branch", {"branch": "head"}, protected("head", "HEAD")),
    # names git refuses (issue 9's list)
    ("branch", {"branch": "HEAD"}, "must not be 'HEAD' (git's name for the current commit)"),
    ("branch", {"branch": "a//b"}, "must not contain '//'"),
    ("branch", {"branch": "a/.hidden"}, "no part between '/' may start with '.'"),
    ("branch", {"branch": "foo.lock/bar"}, "no part between '/' may end with '.lock'"),
    ("branch", {"branch": "feature."}, "must not end with '.'"),
    ("branch", {"branch": "a/b@{1}"}, CHARSET),
    # repos GitHub refuses
    ("repo", {"repo": "acme/.."}, "name must not be '.' or '..'"),
    ("repo", {"repo": "acme/."}, "name must not be '.' or '..'"),
    ("repo", {"repo": "acme/.git"}, "name must not end with '.git'"),
    ("repo", {"repo": "acme/x.git"}, "name must not end with '.git'"),
    ("repo", {"repo": "ac--me/x"}, "owner must not end with '-' or hold '--'"),
    ("repo", {"repo": "acme-/x"}, "owner must not end with '-' or hold '--'"),
    ("repo", {"repo": "a" * 40 + "/x"}, "owner must be at most 39 characters"),
    ("repo", {"repo": "acme/" + "x" * 101}, "name must be at most 100 characters"),
]
CASES = [pytest.param(f, p, m, id=f"{f}={next(iter(p.values()))[:20]}") for f, p, m in REFUSED]


def body_with(patch: dict[str, Any]) -> dict[str, Any]:
    return {"repo": "acme/widgets", "spec": SPEC, **patch}


@pytest.mark.parametrize(("field", "patch", "message"), CASES)
def test_the_api_refuses_it_with_details_and_writes_nothing(
    api: Client, field: str, patch: dict[str, Any], message: str
) -> None:
    with nothing_written():
        resp = submit_api(api, body_with(patch))
    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert details[field] == message


@pytest.mark.parametrize(("field", "patch", "message"), CASES)
def test_the_web_form_refuses_it_with_the_same_message(
    user_client: Client, field: str, patch: dict[str, Any], message: str
) -> None:
    data = {k: as_form_value(k, v) for k, v in body_with(patch).items()}
    with nothing_written():
        resp = user_client.post("/work/new/", data)
    assert resp.status_code == 400
    assert resp.context["form"].errors[field][0] == message
    assert html.escape(message) in resp.content.decode()


@pytest.mark.parametrize(("field", "patch", "message"), CASES)
def test_the_command_refuses_it_with_the_same_message(
    field: str, patch: dict[str, Any], message: str
) -> None:
    with nothing_written():
        code, out, err = run_submit(*command_args(body_with(patch)))
    assert (code, out) == (2, "")
    error = json.loads(err)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][field] == message


def test_the_branch_preview_says_a_protected_branch_is_refused(user_client: Client) -> None:
    resp = user_client.post("/work/new/branch-preview/", {"branch": "release/1"})
    assert html.escape(protected("release/1", "release/*")) in resp.content.decode()


def test_the_globs_come_from_the_setting(api: Client, settings: Any) -> None:
    settings.WHIM_PROTECTED_BRANCHES = ["prod", "hotfix/*"]

    resp = submit_api(api, body_with({"branch": "hotfix/urgent"}))
    assert_error(resp, 400, "VALIDATION_ERROR")
    assert resp.json()["details"]["branch"] == protected("hotfix/urgent", "hotfix/*")

    assert submit_api(api, body_with({"branch": "main"})).status_code == 201


@pytest.mark.parametrize(
    ("spec", "branch"),
    [
        pytest.param("# Main\n\nbody", "whim/main", id="main"),
        pytest.param("# Release\n\nbody", "release", id="release_alone_is_not_release_star"),
        pytest.param("# Develop!\n\nbody", "whim/develop", id="develop"),
        pytest.param("# HEAD\n\nbody", "whim/head", id="head"),
    ],
)
def test_a_branch_derived_from_the_spec_is_never_protected(
    api: Client, spec: str, branch: str
) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "spec": spec})
    assert resp.status_code == 201, resp.content
    assert WorkItem.objects.get(pk=resp.json()["id"]).branch == branch


def test_a_derivation_falls_back_past_every_protected_candidate(api: Client, settings: Any) -> None:
    settings.WHIM_PROTECTED_BRANCHES = ["main", "whim/*"]

    resp = submit_api(api, {"repo": "acme/widgets", "spec": "# Main"})

    assert WorkItem.objects.get(pk=resp.json()["id"]).branch == "task"


def test_a_glob_protecting_everything_makes_the_submitter_name_a_branch(
    api: Client, settings: Any
) -> None:
    settings.WHIM_PROTECTED_BRANCHES = ["*"]
    with nothing_written():
        resp = submit_api(api, {"repo": "acme/widgets", "spec": "# Main"})
    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert details["branch"] == protected("whim/task", "*")


def test_a_generated_spec_never_derives_a_protected_branch(api: Client) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "description": "# Master\nDo it."})
    item = WorkItem.objects.get(pk=resp.json()["id"])

    assert work_item_generate_spec(work_item_id=item.pk)

    item.refresh_from_db()
    assert (item.status, item.branch) == (WorkItemStatus.QUEUED, "whim/master")


# --- the other edges -----------------------------------------------------------------------


@pytest.mark.parametrize("repo", ["acme/..", "acme/.git", "ac--me/x"])
def test_the_lock_callback_refuses_a_repo_github_would_not(client: Client, repo: str) -> None:
    _, worker = running_attempt()

    resp = post(client, worker, "lock", {"repo": repo, "files": ["a.py"]})

    details = assert_error(resp, 400, "VALIDATION_ERROR")["details"]
    assert "repo" in details and details["repo"] != "is not this worker's repo"
    assert not worker.locks.exists()


def test_the_container_gets_the_globs_and_whim_agent_env_cannot_replace_them(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WHIM_PROTECTED_BRANCHES = ["main", " release/* ", ""]
    monkeypatch.setenv("WHIM_PROTECTED_BRANCHES", "")
    settings.WHIM_AGENT_ENV = ["WHIM_PROTECTED_BRANCHES", "GITHUB_TOKEN"]
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_passthrough")
    _, worker = running_attempt()

    env = worker_environment(
        worker=worker, work_item=worker.work_item, token="t0k", callback_base="http://h:1"
    )

    assert env["WHIM_PROTECTED_BRANCHES"] == "main,release/*"
    assert env["GITHUB_TOKEN"] == "ghp_passthrough"  # the pass-through itself still works


def test_a_policy_error_is_permanent_and_fails_the_item_at_once() -> None:
    assert ErrorCategory.POLICY_ERROR in PERMANENT_CATEGORIES
    item, worker = running_attempt()

    worker_fail(worker_id=worker.pk, error="refusing to push to main", category="POLICY_ERROR")

    item.refresh_from_db()
    assert item.status == WorkItemStatus.FAILED
    assert (item.retry_count, item.next_retry_at) == (0, None)
    assert item.error_category == "POLICY_ERROR"
