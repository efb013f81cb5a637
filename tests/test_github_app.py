"""Per-attempt GitHub credentials from a GitHub App (workers/github_app.py): a token minted
for the item's repository alone, handed to its container instead of a shared one, and revoked
by the harness when the attempt ends. The fake GitHub checks the App's JWT with its public
key and speaks GitHub's shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import docker
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestration.services.commits import commit_verify
from tests.factories import WorkerFactory
from tests.fakes.github import FakeGitHub
from workers import github_app
from workers.docker_runtime import DockerRuntime
from workers.runtime import FORBIDDEN_ENV, worker_environment


@pytest.fixture
def github(app_keys: tuple[str, str], settings: Any) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.app_public_key = app_keys[1]
    settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY = fake.app_id, app_keys[0]
    settings.GITHUB_API_URL = fake.url
    try:
        yield fake
    finally:
        fake.stop()


def test_a_token_is_minted_for_one_repository_with_write_access_to_code_and_prs(
    github: FakeGitHub,
) -> None:
    token = github_app.installation_token("acme/widgets")

    assert token in github.minted
    assert github.minted[token] == {
        "repositories": ["widgets"],
        "permissions": {"contents": "write", "pull_requests": "write"},
    }
    paths = [(r.method, r.path) for r in github.requests]
    assert paths == [
        ("GET", "/repos/acme/widgets/installation"),
        ("POST", "/app/installations/4242/access_tokens"),
    ]


def test_a_jwt_signed_by_another_key_is_refused(github: FakeGitHub, settings: Any) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings.GITHUB_APP_PRIVATE_KEY = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(github_app.GitHubAppError, match="answered 401"):
        github_app.installation_token("acme/widgets")
    assert github.minted == {}


@pytest.mark.django_db
def test_the_container_gets_the_minted_token_not_the_shared_one(
    github: FakeGitHub, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_shared_token_of_the_whole_org")
    settings.WHIM_AGENT_ENV = ["GITHUB_TOKEN"]
    settings.WHIM_GIT_BASE_URL = "https://github.com/"
    worker = WorkerFactory.create(work_item__repo="acme/widgets")

    env = worker_environment(
        worker=worker, work_item=worker.work_item, token="t", callback_base="http://127.0.0.1:9"
    )

    assert env["GITHUB_TOKEN"] in github.minted
    assert env["WHIM_GITHUB_TOKEN_REVOCABLE"] == "1"
    assert "ghp_shared_token_of_the_whole_org" not in env.values()
    assert {"GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_FILE"} <= FORBIDDEN_ENV
    assert settings.GITHUB_APP_PRIVATE_KEY not in env.values()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "item_type", "permissions"),
    [
        ("work", "execution", {"contents": "write", "pull_requests": "write"}),
        ("spec", "execution", {"contents": "read"}),  # the agent reads an issue anyone wrote
        ("work", "review", {"contents": "read"}),
        ("work", "verification", {"contents": "read"}),
    ],
)
def test_only_an_attempt_that_pushes_gets_a_token_that_writes(
    github: FakeGitHub, settings: Any, kind: str, item_type: str, permissions: dict[str, str]
) -> None:
    settings.WHIM_GIT_BASE_URL = "https://github.com/"
    worker = WorkerFactory.create(
        kind=kind, work_item__repo="acme/widgets", work_item__type=item_type
    )

    env = worker_environment(
        worker=worker, work_item=worker.work_item, token="t", callback_base="http://127.0.0.1:9"
    )

    assert github.minted[env["GITHUB_TOKEN"]]["permissions"] == permissions


@pytest.mark.django_db
def test_without_an_app_the_shared_token_passes_as_before(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_shared")
    settings.WHIM_AGENT_ENV = ["GITHUB_TOKEN"]
    settings.GITHUB_APP_ID = settings.GITHUB_APP_PRIVATE_KEY = ""
    worker = WorkerFactory.create()

    env = worker_environment(
        worker=worker, work_item=worker.work_item, token="t", callback_base="http://127.0.0.1:9"
    )

    assert env["GITHUB_TOKEN"] == "ghp_shared" and "WHIM_GITHUB_TOKEN_REVOCABLE" not in env


def test_with_only_an_app_a_reported_commit_is_checked_with_a_minted_read_token(
    github: FakeGitHub, settings: Any
) -> None:
    settings.GITHUB_TOKEN = ""  # the App alone: the recommended setup
    settings.WHIM_GIT_BASE_URL = "https://github.com/"
    base, pushed = "b" * 40, "c" * 40
    github.repos["acme/widgets"] = {"main": [base], "feature": [base, pushed]}

    on_branch = commit_verify(repo="acme/widgets", branch="feature", sha=pushed)
    forged = commit_verify(repo="acme/widgets", branch="feature", sha="d" * 40)

    assert (on_branch.ok, on_branch.checked_by) == (True, "GitHub")
    assert (forged.ok, forged.checked_by) == (False, "GitHub")
    assert [body["permissions"] for body in github.minted.values()] == [{"contents": "read"}] * 2


def test_an_app_not_installed_on_the_repository_is_a_permanent_refusal(
    github: FakeGitHub,
) -> None:
    github.app_id = "999"  # GitHub knows the key, but not as this App: every call is 401
    with pytest.raises(github_app.GitHubAppError) as refused:
        github_app.installation_token("acme/widgets")
    assert refused.value.permanent


@pytest.mark.django_db
def test_a_start_that_fails_revokes_the_token_it_minted(github: FakeGitHub, settings: Any) -> None:
    settings.WHIM_GIT_BASE_URL = "https://github.com/"
    settings.WHIM_CALLBACK_URL = "http://127.0.0.1:9"
    worker = WorkerFactory.create(work_item__repo="acme/widgets")
    client = mock.Mock()
    client.containers.get.side_effect = docker.errors.NotFound("no")
    client.containers.run.side_effect = docker.errors.APIError(
        "no such image", mock.Mock(status_code=500)
    )
    runtime = DockerRuntime.__new__(DockerRuntime)
    runtime.client = client
    runtime.ensure_network = mock.Mock(return_value="172.30.0.1")  # type: ignore[method-assign]

    with pytest.raises(docker.errors.APIError):
        runtime.start(worker=worker, work_item=worker.work_item, token="t")

    [minted] = github.minted
    assert github.revoked == [minted]
