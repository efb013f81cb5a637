"""API.md "Validation": one set of rules, one set of messages, on every edge.

The bad inputs live in one table (``CASES``) that runs through POST /api/work, the web form
at /work/new/ and ``manage.py whim submit``; each must refuse with the same message for the
same field and write nothing.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from orchestration.models import WorkItem, WorkItemEvent, WorkItemStatus
from orchestration.services.work_items import work_item_generate_spec

pytestmark = pytest.mark.django_db

SPEC = "# Add a login page\n\nPlease."
REPO_PATTERN = (
    "must be owner/name (owner starts with a letter or digit and may hold '-'; "
    "name holds letters, digits, '.', '_', '-')"
)
BRANCH_PATTERN = (
    "must start with a letter or digit and hold only letters, digits, '/', '_', '.', '-'"
)
BRANCH_DOTS = "must not contain '..'"
BRANCH_END = "must not end with '/' or '.lock'"
NUL = "Null characters are not allowed."
EXACTLY_ONE = "give exactly one of spec or description"
PRIORITIES = "must be one of: low, medium, high, critical"


@dataclass(frozen=True)
class Case:
    """A submission that must be refused, and the one message every edge gives for it."""

    id: str
    payload: dict[str, Any]
    field: str
    message: str
    base: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"repo": "acme/widgets", "spec": SPEC}
    )

    def body(self) -> dict[str, Any]:
        data = {**self.base, **self.payload}
        return {k: v for k, v in data.items() if v is not None}


def case(id: str, field: str, message: str, *, drop: tuple[str, ...] = (), **payload: Any) -> Any:
    """``drop`` removes base keys (a missing repo, a description-only submission)."""
    return pytest.param(Case(id, {**payload, **dict.fromkeys(drop)}, field, message), id=id)


CASES = [
    # repo
    case("repo_missing", "repo", "is required", drop=("repo",)),
    case("repo_without_owner", "repo", REPO_PATTERN, repo="widgets"),
    case("repo_with_empty_owner", "repo", REPO_PATTERN, repo="/widgets"),
    case("repo_with_owner_starting_with_dash", "repo", REPO_PATTERN, repo="-acme/widgets"),
    case("repo_with_underscore_in_owner", "repo", REPO_PATTERN, repo="ac_me/widgets"),
    case("repo_with_space_in_name", "repo", REPO_PATTERN, repo="acme/wid gets"),
    case("repo_with_three_parts", "repo", REPO_PATTERN, repo="acme/widgets/extra"),
    case("repo_with_empty_name", "repo", REPO_PATTERN, repo="acme/"),
    case(
        "repo_over_200_chars",
        "repo",
        "must be at most 200 characters",
        repo="acme/" + "w" * 196,
    ),
    # branch
    case("branch_starting_with_dash", "branch", BRANCH_PATTERN, branch="-feature"),
    case("branch_starting_with_dot", "branch", BRANCH_PATTERN, branch=".feature"),
    case("branch_starting_with_slash", "branch", BRANCH_PATTERN, branch="/feature"),
    case("branch_with_space", "branch", BRANCH_PATTERN, branch="my feature"),
    case("branch_with_tilde", "branch", BRANCH_PATTERN, branch="feature~1"),
    case("branch_with_colon", "branch", BRANCH_PATTERN, branch="feature:x"),
    case("branch_with_double_dot", "branch", BRANCH_DOTS, branch="feature..x"),
    case("branch_with_trailing_slash", "branch", BRANCH_END, branch="feature/"),
    case("branch_ending_in_lock", "branch", BRANCH_END, branch="feature.lock"),
    case(
        "branch_over_250_chars",
        "branch",
        "must be at most 250 characters",
        branch="b" * 251,
    ),
    # spec / description
    case("spec_over_100000_chars", "spec", "must be at most 100000 characters", spec="s" * 100_001),
    case(
        "description_over_50000_chars",
        "description",
        "must be at most 50000 characters",
        drop=("spec",),
        description="d" * 50_001,
    ),
    case("spec_and_description_both", "spec", EXACTLY_ONE, description="Also this."),
    case("neither_spec_nor_description", "spec", EXACTLY_ONE, drop=("spec",)),
    case("spec_of_only_whitespace", "spec", EXACTLY_ONE, spec="   \n\t "),
    # source, sourceRef, idempotencyKey
    case("source_over_50_chars", "source", "must be at most 50 characters", source="s" * 51),
    case(
        "source_ref_over_200_chars",
        "sourceRef",
        "must be at most 200 characters",
        sourceRef="r" * 201,
    ),
    case(
        "idempotency_key_over_200_chars",
        "idempotencyKey",
        "must be at most 200 characters",
        idempotencyKey="k" * 201,
    ),
    # maxIterations
    case("max_iterations_zero", "maxIterations", "must be at least 1", maxIterations=0),
    case("max_iterations_negative", "maxIterations", "must be at least 1", maxIterations=-3),
    case("max_iterations_201", "maxIterations", "must be at most 200", maxIterations=201),
    case(
        "max_iterations_not_a_number",
        "maxIterations",
        "must be a whole number",
        maxIterations="abc",
    ),
    # priority
    case("priority_unknown", "priority", PRIORITIES, priority="urgent"),
    case("priority_in_capitals", "priority", PRIORITIES, priority="HIGH"),
    # metadata
    case("metadata_a_list", "metadata", "must be a JSON object", metadata=[1, 2]),
    case("metadata_not_json", "metadata", "must be a JSON object", metadata="{not json"),
    case(
        "metadata_over_64k",
        "metadata",
        "must be at most 65536 bytes as JSON",
        metadata={"blob": "x" * 70_000},
    ),
    # NUL bytes
    case("nul_in_spec", "spec", NUL, spec="# Title\n\nbad \x00 byte"),
    case("nul_in_description", "description", NUL, drop=("spec",), description="bad\x00"),
    case("nul_in_source", "source", NUL, source="intake\x00"),
    case("nul_in_source_ref", "sourceRef", NUL, sourceRef="ref\x00"),
    case("nul_in_metadata_value", "metadata", NUL, metadata={"note": "a\x00b"}),
    case("nul_nested_in_metadata", "metadata", NUL, metadata={"a": {"b": ["ok", "x\x00"]}}),
    case("nul_in_metadata_key", "metadata", NUL, metadata={"a": {"k\x00": 1}}),
]


@contextmanager
def nothing_written() -> Iterator[None]:
    """The block adds no work item and no event."""
    before = (WorkItem.objects.count(), WorkItemEvent.objects.count())
    yield
    assert (WorkItem.objects.count(), WorkItemEvent.objects.count()) == before


@pytest.fixture
def existing_item(api: Client) -> WorkItem:
    """One accepted item, so "nothing written" is checked against a non-empty table."""
    resp = api.post("/api/work", {"repo": "acme/existing", "spec": SPEC}, "application/json")
    assert resp.status_code == 201
    return WorkItem.objects.get(pk=resp.json()["id"])


def submit_api(api: Client, body: Any) -> Any:
    return api.post("/api/work", json.dumps(body), content_type="application/json")


def as_form_value(key: str, value: Any) -> str:
    """How a person types the value into the web form or a shell argument."""
    if key == "metadata" and not isinstance(value, str):
        return json.dumps(value)
    return str(value)


def command_args(body: dict[str, Any]) -> list[str]:
    """``whim submit`` arguments for a submission (``--opt=value`` so values may start '-')."""
    options = {
        "spec": "spec",
        "description": "description",
        "branch": "branch",
        "priority": "priority",
        "maxIterations": "max-iterations",
        "source": "source",
        "sourceRef": "source-ref",
        "metadata": "metadata",
        "idempotencyKey": "idempotency-key",
    }
    args = [f"--{options[k]}={as_form_value(k, v)}" for k, v in body.items() if k != "repo"]
    return ["submit", *args, "--", str(body.get("repo", ""))]


def run_submit(*args: str) -> tuple[int | str | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    try:
        call_command("whim", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


# --- the shared table, through each edge ---------------------------------------------------


@pytest.mark.parametrize("bad", CASES)
def test_the_api_refuses_it_naming_the_field(
    api: Client, existing_item: WorkItem, bad: Case
) -> None:
    with nothing_written():
        resp = submit_api(api, bad.body())
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert isinstance(body["error"], str) and body["error"]
    assert body["details"][bad.field] == bad.message


@pytest.mark.parametrize("bad", CASES)
def test_the_web_form_refuses_it_with_the_same_message(
    user_client: Client, existing_item: WorkItem, bad: Case
) -> None:
    data = {k: as_form_value(k, v) for k, v in bad.body().items()}
    with nothing_written():
        resp = user_client.post("/work/new/", data)
    assert resp.status_code == 400
    assert resp.context["form"].errors[bad.field][0] == bad.message
    page = resp.content.decode()
    assert f'id="id_{bad.field}_error"' in page
    assert html.escape(bad.message) in page


@pytest.mark.parametrize("bad", CASES)
def test_the_command_refuses_it_with_the_same_message(existing_item: WorkItem, bad: Case) -> None:
    with nothing_written():
        code, out, err = run_submit(*command_args(bad.body()))
    assert code == 2
    assert out == ""
    error = json.loads(err)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][bad.field] == bad.message


def test_every_edge_accepts_the_good_version_of_the_table_input(
    api: Client, user_client: Client
) -> None:
    """The control: the table's base submission is valid everywhere, so the refusals above
    are about the one bad field."""
    good = {"repo": "acme/widgets", "spec": SPEC}
    assert submit_api(api, good).status_code == 201
    assert user_client.post("/work/new/", good).status_code == 302
    code, out, _ = run_submit(*command_args(good))
    assert code == 0
    assert json.loads(out)["created"] is True
    assert WorkItem.objects.filter(repo="acme/widgets").count() == 3


# --- JSON types (only the API can send them) ------------------------------------------------

TYPE_CASES = [
    pytest.param({"repo": ["acme/widgets"]}, "repo", "must be a string", id="repo_as_list"),
    pytest.param({"repo": 42}, "repo", "must be a string", id="repo_as_number"),
    pytest.param({"repo": {"owner": "acme"}}, "repo", "must be a string", id="repo_as_object"),
    pytest.param({"spec": 12}, "spec", "must be a string", id="spec_as_number"),
    pytest.param({"branch": ["main"]}, "branch", "must be a string", id="branch_as_list"),
    pytest.param({"source": False}, "source", "must be a string", id="source_as_bool"),
    pytest.param(
        {"maxIterations": "abc"},
        "maxIterations",
        "must be a whole number",
        id="max_iterations_as_text",
    ),
    pytest.param(
        {"maxIterations": True},
        "maxIterations",
        "must be a whole number",
        id="max_iterations_as_true",
    ),
    pytest.param(
        {"maxIterations": 1.5},
        "maxIterations",
        "must be a whole number",
        id="max_iterations_as_fraction",
    ),
    pytest.param(
        {"maxIterations": "5"},  # a person types text; a program sending it has a bug
        "maxIterations",
        "must be a whole number",
        id="max_iterations_as_numeric_text",
    ),
    pytest.param(
        {"maxIterations": [5]},
        "maxIterations",
        "must be a whole number",
        id="max_iterations_as_list",
    ),
    pytest.param({"metadata": ["a"]}, "metadata", "must be a JSON object", id="metadata_as_list"),
    pytest.param({"metadata": 7}, "metadata", "must be a JSON object", id="metadata_as_number"),
    pytest.param({"priority": ["high"]}, "priority", PRIORITIES, id="priority_as_list"),
]


@pytest.mark.parametrize(("patch", "field", "message"), TYPE_CASES)
def test_it_refuses_a_wrong_json_type_naming_the_field(
    api: Client, existing_item: WorkItem, patch: dict[str, Any], field: str, message: str
) -> None:
    with nothing_written():
        resp = submit_api(api, {"repo": "acme/widgets", "spec": SPEC, **patch})
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"][field] == message


def test_it_refuses_a_nul_byte_in_a_field_it_does_not_know(
    api: Client, existing_item: WorkItem
) -> None:
    with nothing_written():
        resp = submit_api(api, {"repo": "acme/widgets", "spec": SPEC, "extra": ["a\x00"]})
    assert resp.status_code == 400
    assert resp.json()["code"] == "VALIDATION_ERROR"
    assert resp.json()["details"] == {"extra": NUL}


def test_it_refuses_a_nul_byte_escaped_in_the_raw_json(
    api: Client, existing_item: WorkItem
) -> None:
    raw = '{"repo": "acme/widgets", "spec": "# T\\u0000x"}'
    with nothing_written():
        resp = api.post("/api/work", raw, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json()["details"]["spec"] == NUL


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"repo": "acme/widgets", "spec": ', id="truncated"),
        pytest.param(b"{'repo': 'acme/widgets'}", id="single_quotes"),
        pytest.param(b"not json at all", id="plain_text"),
        pytest.param(b'{"repo": "acme/widgets",}', id="trailing_comma"),
        pytest.param(b"\xff\xfe\x00{", id="not_utf8"),
        pytest.param(b'{"repo": "acme/w\x00"}', id="raw_nul_byte"),
    ],
)
def test_it_refuses_malformed_json(api: Client, existing_item: WorkItem, raw: bytes) -> None:
    with nothing_written():
        resp = api.post("/api/work", raw, content_type="application/json")
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["error"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('[{"repo": "acme/widgets", "spec": "# A"}]', id="array"),
        pytest.param('"acme/widgets"', id="string"),
        pytest.param("42", id="number"),
        pytest.param("null", id="null"),
    ],
)
def test_it_refuses_a_body_that_is_not_a_json_object(
    api: Client, existing_item: WorkItem, raw: str
) -> None:
    with nothing_written():
        resp = api.post("/api/work", raw, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json()["code"] == "VALIDATION_ERROR"


def test_it_refuses_a_body_nested_too_deeply_to_parse(api: Client, existing_item: WorkItem) -> None:
    raw = b'{"repo": "acme/widgets", "spec": "# A", "metadata": {"a": ' + b"[" * 5_000
    raw += b"]" * 5_000 + b"}}"
    with nothing_written():
        resp = api.post("/api/work", raw, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json() == {"error": "Request body is nested too deeply", "code": "VALIDATION_ERROR"}


def test_deep_but_parseable_metadata_is_accepted_not_a_crash(api: Client) -> None:
    deep = "[" * 700 + "]" * 700
    raw = '{"repo": "acme/widgets", "spec": "# A", "metadata": {"a": ' + deep + "}}"
    resp = api.post("/api/work", raw, content_type="application/json")
    assert resp.status_code == 201, resp.content
    assert api.get(f"/api/work/{resp.json()['id']}").status_code == 200


def test_the_web_form_refuses_metadata_nested_too_deeply(
    user_client: Client, existing_item: WorkItem
) -> None:
    data = {"repo": "acme/widgets", "spec": "# A", "metadata": "[" * 5_000 + "]" * 5_000}
    with nothing_written():
        resp = user_client.post("/work/new/", data)
    assert resp.status_code == 400
    assert resp.context["form"].errors["metadata"][0] == "must be a JSON object"


def test_it_refuses_an_empty_body_as_a_missing_repo(api: Client, existing_item: WorkItem) -> None:
    with nothing_written():
        resp = api.post("/api/work", "", content_type="application/json")
    assert resp.status_code == 400
    assert resp.json()["details"]["repo"] == "is required"


def padded_body(size: int) -> bytes:
    """A valid submission padded with JSON whitespace to exactly ``size`` bytes."""
    raw = json.dumps({"repo": "acme/widgets", "spec": SPEC}).encode()
    assert len(raw) < size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_it_refuses_a_body_over_1_mb_with_413(api: Client, existing_item: WorkItem) -> None:
    with nothing_written():
        resp = api.post("/api/work", padded_body(1024 * 1024 + 1), content_type="application/json")
    assert resp.status_code == 413
    body = resp.json()
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    assert body["error"]


def test_it_accepts_a_body_of_exactly_1_mb(api: Client) -> None:
    resp = api.post("/api/work", padded_body(1024 * 1024), content_type="application/json")
    assert resp.status_code == 201


def test_it_refuses_a_big_body_before_checking_anything_else(
    api: Client, existing_item: WorkItem
) -> None:
    with nothing_written():
        resp = api.post("/api/work", b"[" + b"1," * 600_000 + b"1]", "application/json")
    assert resp.status_code == 413
    assert resp.json()["code"] == "PAYLOAD_TOO_LARGE"


# --- the limits are inclusive ----------------------------------------------------------------


@pytest.mark.parametrize(
    "patch",
    [
        # GitHub's bounds: a 39-character owner, a 100-character name (140 in all).
        pytest.param({"repo": "a" * 39 + "/" + "w" * 100}, id="repo_at_github_limits"),
        pytest.param({"repo": "a-c-m-e/my_repo.js"}, id="repo_with_dash_dot_underscore"),
        pytest.param({"repo": "9acme/.dotfiles"}, id="repo_owner_starting_with_digit"),
        pytest.param({"branch": "b" * 250}, id="branch_of_250_chars"),
        pytest.param({"branch": "feature/x_y-z.1"}, id="branch_with_every_allowed_char"),
        pytest.param({"branch": "0day"}, id="branch_starting_with_digit"),
        pytest.param({"spec": "s" * 100_000}, id="spec_of_100000_chars"),
        pytest.param({"spec": None, "description": "d" * 50_000}, id="description_of_50000"),
        pytest.param({"source": "s" * 50}, id="source_of_50_chars"),
        pytest.param({"sourceRef": "r" * 200}, id="source_ref_of_200_chars"),
        pytest.param({"maxIterations": 1}, id="max_iterations_1"),
        pytest.param({"maxIterations": 200}, id="max_iterations_200"),
        pytest.param({"priority": "low"}, id="priority_low"),
        pytest.param({"priority": "medium"}, id="priority_medium"),
        pytest.param({"priority": "high"}, id="priority_high"),
        pytest.param({"priority": "critical"}, id="priority_critical"),
        pytest.param({"metadata": {"mock": "fail", "n": [1, {"x": None}]}}, id="nested_metadata"),
    ],
)
def test_it_accepts_values_at_the_limits(api: Client, patch: dict[str, Any]) -> None:
    body = {k: v for k, v in {"repo": "acme/widgets", "spec": SPEC, **patch}.items() if v}
    resp = submit_api(api, body)
    assert resp.status_code == 201, resp.content
    item = WorkItem.objects.get(pk=resp.json()["id"])
    for key, column in (
        ("repo", "repo"),
        ("branch", "branch"),
        ("spec", "spec"),
        ("description", "description"),
        ("source", "source"),
        ("sourceRef", "source_ref"),
        ("maxIterations", "max_iterations"),
        ("priority", "priority"),
        ("metadata", "metadata"),
    ):
        if key in body:
            assert getattr(item, column) == body[key]


def test_it_defaults_max_iterations_to_50_and_priority_to_medium(api: Client) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "spec": SPEC})
    item = WorkItem.objects.get(pk=resp.json()["id"])
    assert item.max_iterations == 50
    assert item.priority == "medium"
    assert item.metadata == {}


# --- branch derivation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "branch"),
    [
        pytest.param("# Add a login page\n\nPlease.", "add-a-login-page", id="first_heading"),
        pytest.param(
            "Some intro.\n\n## Fix the Parser!\n\n# Later heading", "fix-the-parser", id="h2_later"
        ),
        pytest.param("No heading here.\nJust text.", "task", id="no_heading"),
        pytest.param("# !!!\n\nbody", "task", id="heading_that_slugifies_to_nothing"),
        pytest.param("#NotAHeading\n\ntext", "task", id="hash_without_space"),
        pytest.param("# Ünïcödé Fancy Title ##", "unicode-fancy-title", id="accents_and_hashes"),
        pytest.param(
            "# Refactor the entire authentication subsystem now",
            "refactor-the-entire-authentica",
            id="long_heading_cut_to_30",
        ),
        pytest.param(
            "# abcdefghijklmnopqrstuvwxyz123 tail",
            "abcdefghijklmnopqrstuvwxyz123",
            id="cut_does_not_end_in_dash",
        ),
    ],
)
def test_it_derives_the_branch_from_the_first_heading_when_none_is_given(
    api: Client, spec: str, branch: str
) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "spec": spec})
    assert resp.status_code == 201
    derived = WorkItem.objects.get(pk=resp.json()["id"]).branch
    assert derived == branch
    assert len(derived) <= 30


def test_it_keeps_a_branch_that_is_given(api: Client) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "spec": SPEC, "branch": "feat/mine"})
    assert WorkItem.objects.get(pk=resp.json()["id"]).branch == "feat/mine"


def test_a_description_only_item_gets_its_branch_from_the_generated_spec(api: Client) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "description": "# Heading\nDo it."})
    assert resp.status_code == 201
    item = WorkItem.objects.get(pk=resp.json()["id"])
    assert item.status == WorkItemStatus.GENERATING
    assert item.branch == ""

    assert work_item_generate_spec(work_item_id=item.pk)

    item.refresh_from_db()
    assert item.status == WorkItemStatus.QUEUED
    assert item.spec.startswith("# Heading\n")
    assert item.branch == "heading"


def test_every_edge_derives_the_same_branch(api: Client, user_client: Client) -> None:
    spec = "# Ship It Today\n\nbody"
    submit_api(api, {"repo": "acme/a", "spec": spec})
    user_client.post("/work/new/", {"repo": "acme/b", "spec": spec})
    run_submit("submit", f"--spec={spec}", "acme/c")
    branches = dict(WorkItem.objects.values_list("repo", "branch"))
    assert branches == {
        "acme/a": "ship-it-today",
        "acme/b": "ship-it-today",
        "acme/c": "ship-it-today",
    }


@pytest.mark.parametrize(
    "metadata",
    [
        {"mock": "explode"},
        {"mockSeconds": -1},
        {"mockSeconds": 601},
        {"mockSeconds": "2"},
        {"mockStartSeconds": True},
        {"mockFile": 3},
        {"mockLock": "yes"},
    ],
)
def test_the_mock_agents_metadata_is_validated_at_the_edge(
    api: Client, metadata: dict[str, Any]
) -> None:
    resp = submit_api(api, {"repo": "acme/widgets", "spec": "# x", "metadata": metadata})
    assert resp.status_code == 400
    assert "metadata" in resp.json()["details"]
    assert not WorkItem.objects.exists()
