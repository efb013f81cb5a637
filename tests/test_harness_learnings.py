"""Learnings (issue 10) in the original Whim's markdown forms: the orchestrator's list becomes
``.whim/learnings.md`` for the agent, and the agent's ``.whim/new-learnings.md`` becomes
``[{content, spec}]`` — bounded, since the file is the agent's writing."""

from __future__ import annotations

from workers.harness.harness.learnings import (
    MAX_CONTENT_CHARS,
    MAX_LEARNINGS_OUT,
    learnings_markdown,
    learnings_parse,
)

SPEC = "Add a --json flag to the report command"


def api_item(content: str, spec: str | None = SPEC, **extra: object) -> dict[str, object]:
    return {
        "id": "c0ffee",
        "repo": "acme/app",
        "spec": spec,
        "content": content,
        "embedding": None,
        "createdAt": "2025-01-02T03:04:05Z",
        "workItemId": "w1",
        **extra,
    }


# --- .whim/learnings.md ------------------------------------------------------------------


def test_the_learnings_file_lists_each_learning_under_its_spec() -> None:
    text = learnings_markdown(
        [
            api_item("Run `make fmt` before committing.", spec="x" * 80),
            api_item("Tests need REDIS_URL.\nUse db 15."),
        ]
    )
    assert text.startswith("# Learnings from Previous Tasks\n\n")
    assert f"## From: {'x' * 50}...\n\nRun `make fmt` before committing.\n\n---\n" in text
    assert f"## From: {SPEC}...\n\nTests need REDIS_URL.\nUse db 15.\n\n---\n" in text
    assert text.index("make fmt") < text.index("REDIS_URL")  # the API's order is kept


def test_a_multi_line_spec_makes_a_one_line_heading() -> None:
    text = learnings_markdown([api_item("c", spec="# Title\n\nBody of the spec")])
    assert "## From: # Title Body of the spec...\n" in text


def test_no_learnings_make_no_file() -> None:
    assert learnings_markdown([]) == ""
    assert learnings_markdown([api_item("   "), {"content": None}]) == ""


def test_the_learnings_file_is_bounded() -> None:
    items = [api_item(f"learning {n} " + "y" * 10_000, spec=None) for n in range(80)]
    text = learnings_markdown(items)
    assert text.count("## From: an earlier task...") == 50
    assert len(text) < 50 * (MAX_CONTENT_CHARS + 100)


# --- .whim/new-learnings.md --------------------------------------------------------------


def test_sections_naming_a_learning_insight_or_note_are_collected() -> None:
    text = """# New learnings

## Learning: the build
Run `poetry install` first.

It takes a minute.

## Architecture
Not collected: the heading names no learning.

## Insight
Fixtures live in tests/fixtures.

## NOTE to the next agent
Never edit generated files.
"""
    assert learnings_parse(text, spec=SPEC) == [
        {"content": "Run `poetry install` first.\nIt takes a minute.", "spec": SPEC},
        {"content": "Fixtures live in tests/fixtures.", "spec": SPEC},
        {"content": "Never edit generated files.", "spec": SPEC},
    ]


def test_a_file_without_such_sections_is_one_learning() -> None:
    text = "# Things\n\nThe API is slow on cold start.\n---\n## Misc\nUse retries.\n"
    assert learnings_parse(text, spec=SPEC) == [
        {"content": "The API is slow on cold start.\n\n\nUse retries.", "spec": SPEC}
    ]


def test_an_empty_file_or_only_headings_collect_nothing() -> None:
    assert learnings_parse("", spec=SPEC) == []
    assert learnings_parse("# Learnings\n\n---\n\n## Learning\n\n", spec=SPEC) == []


def test_the_collected_learnings_are_bounded() -> None:
    text = "".join(f"## Learning {n}\n{'z' * 10_000}\n" for n in range(100))
    learnings = learnings_parse(text, spec="s" * 50_000)
    assert 0 < len(learnings) <= MAX_LEARNINGS_OUT
    assert all(len(item["content"]) <= MAX_CONTENT_CHARS for item in learnings)
    assert all(len(item["spec"]) <= 10_000 for item in learnings)


def test_nul_characters_and_crlf_are_cleaned() -> None:
    [learning] = learnings_parse("## Note\r\nuse\x00 tabs\r\n", spec=SPEC)
    assert learning["content"] == "use tabs"
