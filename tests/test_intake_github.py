"""The GitHub loop's client (intake/github.py) against the fake GitHub over real HTTP: what it
sends, and how it classifies what comes back (rate limited, transient, permanent, no answer),
never with a token in a message or a log line."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from intake import credentials
from intake.github import GitHubClient, GitHubError, RateLimited
from tests.fakes.github import FakeGitHub
from tests.intake_support import fake_github_serving

TOKEN = "ghp_loop0123456789abcdefghijklmnopqrstuv"
REPO = "acme/widgets"


@pytest.fixture
def github(settings: Any) -> Iterator[FakeGitHub]:
    with fake_github_serving(settings) as fake:
        settings.GITHUB_TOKEN = TOKEN
        settings.GITHUB_APP_ID = settings.GITHUB_APP_PRIVATE_KEY = ""
        yield fake


def test_it_sends_githubs_headers_and_the_token(github: FakeGitHub) -> None:
    github.add_issue(REPO, 3, "Widgets", labels=["whim"])

    issue = GitHubClient(REPO).issue(3)

    assert issue["title"] == "Widgets" and issue["labels"][0]["name"] == "whim"
    [request] = github.requests
    assert request.authorization == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert request.headers["user-agent"] == "whim"


def test_an_unchanged_list_answers_304_to_its_etag(github: FakeGitHub) -> None:
    github.add_issue(REPO, 3, labels=["whim"])
    github.add_issue(REPO, 4, labels=["other"])
    client = GitHubClient(REPO)

    first = client.issues_labelled("whim")
    again = client.issues_labelled("whim", etag=first.etag)
    github.add_issue(REPO, 5, labels=["whim"])
    changed = client.issues_labelled("whim", etag=first.etag)

    assert [i["number"] for i in first.data] == [3] and first.etag
    assert (again.status, again.data, again.etag) == (304, None, first.etag)
    assert changed.status == 200 and [i["number"] for i in changed.data] == [3, 5]
    assert github.requests[1].headers["if-none-match"] == first.etag


def test_pages_follows_the_next_links(github: FakeGitHub) -> None:
    for n in range(1, 6):
        github.add_issue(REPO, 1)
        GitHubClient(REPO).comment_create(1, f"comment {n}")

    bodies = [
        c["body"] for c in GitHubClient(REPO).pages("issues/1/comments", params={"per_page": 2})
    ]

    assert bodies == [f"comment {n}" for n in range(1, 6)]


def test_a_rate_limit_is_rate_limited_until_githubs_reset_time(github: FakeGitHub) -> None:
    github.rate_limit_remaining = 1
    github.rate_limit_reset = time.time() + 120
    client = GitHubClient(REPO)
    github.add_issue(REPO, 3)
    client.issue(3)

    with pytest.raises(RateLimited) as limited:
        client.issue(3)

    assert limited.value.status == 403 and not limited.value.permanent
    assert limited.value.retry_at == dt.datetime.fromtimestamp(int(github.rate_limit_reset), dt.UTC)


def test_a_secondary_limit_waits_for_its_retry_after(github: FakeGitHub) -> None:
    github.fault("POST", r"/comments$", 403, headers={"retry-after": "30"})
    before = dt.datetime.now(dt.UTC)

    with pytest.raises(RateLimited) as limited:
        GitHubClient(REPO).comment_create(3, "hello")

    assert limited.value.retry_at is not None
    assert dt.timedelta(seconds=29) < limited.value.retry_at - before < dt.timedelta(seconds=32)


def test_a_403_that_is_no_rate_limit_is_permanent(github: FakeGitHub) -> None:
    github.fault("POST", r"/labels$", 403)
    with pytest.raises(GitHubError) as refused:
        GitHubClient(REPO).labels_add(3, ["whim"])
    assert not isinstance(refused.value, RateLimited)
    assert (refused.value.status, refused.value.permanent) == (403, True)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409, 429])
def test_a_server_error_is_transient(github: FakeGitHub, status: int) -> None:
    github.fault("GET", r"/issues/3$", status)
    with pytest.raises(GitHubError) as failed:
        GitHubClient(REPO).issue(3)
    assert (failed.value.status, failed.value.permanent) == (status, False)


def test_not_found_is_permanent(github: FakeGitHub) -> None:
    with pytest.raises(GitHubError) as missing:
        GitHubClient(REPO).issue(404)
    assert (missing.value.status, missing.value.permanent) == (404, True)
    assert "GET /repos/acme/widgets/issues/404 answered 404" in missing.value.message


def test_a_timeout_has_no_status_and_is_transient(github: FakeGitHub, settings: Any) -> None:
    settings.GITHUB_TIMEOUT = 0.3
    github.timeout_sleep = 1.0
    github.add_issue(REPO, 3)
    github.fault("POST", r"/comments$", "timeout_after_write")

    with pytest.raises(GitHubError) as lost:
        GitHubClient(REPO).comment_create(3, "hello")

    assert (lost.value.status, lost.value.permanent) == (None, False)
    assert [c["body"] for c in github.comments[REPO][3]] == ["hello"]  # GitHub has it


def test_a_closed_connection_has_no_status(github: FakeGitHub) -> None:
    github.fault("GET", r"/issues/3$", "timeout")
    with pytest.raises(GitHubError) as lost:
        GitHubClient(REPO).issue(3)
    assert lost.value.status is None and not lost.value.permanent


def test_no_token_appears_in_errors_or_logs(
    github: FakeGitHub, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    settings.GITHUB_API_URL = f"{github.url}/{TOKEN}"  # even a misconfiguration echoing it
    messages = []
    for fault in (500, 404, "timeout"):
        github.fault("GET", r"", fault)
        with pytest.raises(GitHubError) as failed:
            GitHubClient(REPO).issue(3)
        messages.append(str(failed.value))
    assert messages and all(TOKEN not in m for m in messages)
    assert TOKEN not in caplog.text


def test_without_credentials_it_refuses_for_good(github: FakeGitHub, settings: Any) -> None:
    settings.GITHUB_TOKEN = ""
    with pytest.raises(GitHubError, match="no GitHub credentials configured") as refused:
        GitHubClient(REPO).issue(3)
    assert refused.value.permanent and github.requests == []


def test_label_removal_of_a_missing_label_is_fine(github: FakeGitHub) -> None:
    github.add_issue(REPO, 3, labels=["whim", "whim:processing"])
    client = GitHubClient(REPO)

    client.label_remove(3, "whim:processing")
    client.label_remove(3, "whim:processing")

    assert github.labels[REPO][3] == ["whim"]
    assert github.requests[-1].path == "/repos/acme/widgets/issues/3/labels/whim%3Aprocessing"


def test_collaborators_are_204_and_others_404(github: FakeGitHub) -> None:
    github.collaborators[REPO] = {"alice"}
    client = GitHubClient(REPO)
    assert client.is_collaborator("alice") and not client.is_collaborator("mallory")


def test_a_review_comment_off_the_diff_is_refused(github: FakeGitHub) -> None:
    github.add_pull(REPO, 9, "feature", "c" * 40, diff={"a.py": [(10, 20)]})
    client = GitHubClient(REPO)
    on = {"path": "a.py", "line": 12, "side": "RIGHT", "body": "here"}
    off = {**on, "line": 30}

    review = client.pull_review_create(
        9, commit_id="c" * 40, body="summary", event="COMMENT", comments=[on]
    )
    with pytest.raises(GitHubError) as refused:
        client.pull_review_create(9, commit_id="c" * 40, body="x", event="COMMENT", comments=[off])

    assert review["state"] == "COMMENTED" and refused.value.status == 422
    assert [r["id"] for r in client.pull_reviews(9)] == [review["id"]]


def test_check_runs_are_found_by_name_and_carry_external_id(github: FakeGitHub) -> None:
    client = GitHubClient(REPO)
    sha = "d" * 40
    client.check_run_create(
        name="Whim review", head_sha=sha, external_id="check:1", conclusion="success"
    )
    client.check_run_create(name="CI", head_sha=sha, conclusion="failure")

    [run] = client.check_runs(sha, name="Whim review")

    assert (run["external_id"], run["status"], run["conclusion"]) == (
        "check:1",
        "completed",
        "success",
    )


def test_an_app_token_is_minted_once_per_repository_and_reused(
    github: FakeGitHub, settings: Any, app_keys: tuple[str, str]
) -> None:
    github.app_public_key = app_keys[1]
    settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY = github.app_id, app_keys[0]
    github.add_issue(REPO, 3)
    github.add_issue("acme/other", 3)

    GitHubClient(REPO).issue(3)
    GitHubClient(REPO).issue(3)
    GitHubClient("acme/other").issue(3)

    assert len(github.minted) == 2
    assert [body["repositories"] for body in github.minted.values()] == [["widgets"], ["other"]]
    assert next(iter(github.minted.values()))["permissions"] == credentials.LOOP_PERMISSIONS
    used = [r.authorization for r in github.requests if r.path.endswith("/issues/3")]
    assert used[0] == used[1] != used[2] and TOKEN not in str(used)


def test_an_app_token_near_its_expiry_is_minted_again(
    github: FakeGitHub, settings: Any, app_keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    github.app_public_key = app_keys[1]
    settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY = github.app_id, app_keys[0]
    github.add_issue(REPO, 3)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4)  # inside the five-minute margin
    real = credentials._expiry
    monkeypatch.setattr(credentials, "_expiry", lambda value: soon)
    GitHubClient(REPO).issue(3)
    monkeypatch.setattr(credentials, "_expiry", real)

    GitHubClient(REPO).issue(3)
    GitHubClient(REPO).issue(3)

    assert len(github.minted) == 2


def test_a_revoked_app_token_is_replaced_once(
    github: FakeGitHub, settings: Any, app_keys: tuple[str, str]
) -> None:
    github.app_public_key = app_keys[1]
    settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY = github.app_id, app_keys[0]
    github.add_issue(REPO, 3)
    GitHubClient(REPO).issue(3)
    github.revoked.extend(github.minted)

    assert GitHubClient(REPO).issue(3)["number"] == 3
    assert len(github.minted) == 2
