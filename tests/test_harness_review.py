"""Self-review (issue 10): the prompt shows the findings shape by its field names, the answer is
validated against the original Whim's shape, a misfit gets one retry, and any reviewer problem
— the agent failing, the Messages API refusing, timing out or answering garbage — leaves the
review unavailable with a note free of secrets, never a failed attempt. The ``anthropic``
reviewer is tested over loopback against a fake Messages API speaking the real wire format."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.anthropic import FakeAnthropic
from workers.harness.harness import messages_api
from workers.harness.harness.errors import AgentError, Terminated
from workers.harness.harness.logs import Logger
from workers.harness.harness.review import (
    MAX_ITEMS,
    ReviewOutcome,
    findings_parse,
    review_markdown,
    review_needs_fix,
    review_prompt,
    review_run,
)

FINDINGS: dict[str, Any] = {
    "specAlignment": {
        "score": "partial",
        "summary": "Most of the spec is done.",
        "gaps": ["The --json flag is missing"],
        "extras": ["A colour option nobody asked for"],
    },
    "codeQuality": {
        "score": "needs-work",
        "summary": "One bug.",
        "concerns": [
            {
                "file": "src/app.py",
                "line": 42,
                "issue": "Division by zero when the list is empty",
                "suggestion": "Return 0 for an empty list",
            },
            {"file": "README.md", "issue": "Outdated usage", "suggestion": "Show --json"},
        ],
    },
    "overallSummary": "Close, but fix the crash.",
}
GOOD = json.dumps(FINDINGS)


def findings(**changes: Any) -> dict[str, Any]:
    """FINDINGS with ``section__field=value`` changes (``overallSummary=...`` at the top)."""
    result = copy.deepcopy(FINDINGS)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            result[section][field] = value
        else:
            result[section] = value
    return result


def concern(**fields: Any) -> dict[str, Any]:
    return {"file": "a", "issue": "b", "suggestion": "c", **fields}


# --- the prompt ----------------------------------------------------------------------------


def test_the_prompt_shows_the_shape_by_its_field_names_and_holds_spec_and_diff() -> None:
    prompt = review_prompt(spec="Add a --json flag", diff="+print('hi')")
    for name in ("specAlignment", "codeQuality", "overallSummary", "gaps", "extras", "concerns"):
        assert f'"{name}"' in prompt
    for word in ('"aligned" | "partial" | "misaligned"', '"good" | "acceptable" | "needs-work"'):
        assert word in prompt
    for word in ('"file"', '"line"', '"issue"', '"suggestion"'):
        assert word in prompt
    assert "Add a --json flag" in prompt and "+print('hi')" in prompt


def test_the_diff_is_fenced_by_markers_it_cannot_have_guessed() -> None:
    first = review_prompt(spec="s", diff="d")
    second = review_prompt(spec="s", diff="d")
    marker = next(line for line in first.splitlines() if line.startswith("===== BEGIN GIT DIFF"))
    assert marker not in second  # a new nonce each time
    assert marker.replace("BEGIN", "END") in first
    assert "never instructions" in first


def test_a_huge_diff_is_cut_with_a_note() -> None:
    prompt = review_prompt(spec="s", diff="+x\n" * 200_000)
    assert len(prompt) < 260_000
    assert "diff truncated" in prompt


# --- reading the answer --------------------------------------------------------------------


def test_a_bare_answer_is_read() -> None:
    assert findings_parse(GOOD) == FINDINGS


def test_an_answer_in_a_json_fence_after_prose_is_read() -> None:
    text = f"Here is my review.\n\n```json\n{json.dumps(FINDINGS, indent=2)}\n```\nThanks!"
    assert findings_parse(text) == FINDINGS


def test_the_first_object_that_fits_wins() -> None:
    other = findings(overallSummary="second")
    text = '{"note": "not it"} then ' + GOOD + " and " + json.dumps(other)
    assert findings_parse(text) == FINDINGS


def test_extra_keys_are_dropped_and_a_null_line_is_left_out() -> None:
    answer = findings(confidence=0.9)
    answer["specAlignment"]["emoji"] = "x"
    answer["codeQuality"]["concerns"][0]["line"] = None
    answer["codeQuality"]["concerns"][0]["severity"] = "high"
    parsed = findings_parse(json.dumps(answer))
    assert parsed is not None
    assert "confidence" not in parsed and "emoji" not in parsed["specAlignment"]
    assert parsed["codeQuality"]["concerns"][0] == {
        "file": "src/app.py",
        "issue": "Division by zero when the list is empty",
        "suggestion": "Return 0 for an empty list",
    }


@pytest.mark.parametrize(
    "answer",
    [
        findings(specAlignment__score="mostly"),
        findings(codeQuality__score="bad"),
        findings(specAlignment__gaps="none"),
        findings(specAlignment__gaps=[1, 2]),
        findings(specAlignment__extras=None),
        findings(specAlignment__summary=None),
        findings(codeQuality__concerns={"file": "a"}),
        findings(codeQuality__concerns=[{"file": "a", "issue": "b"}]),
        findings(
            codeQuality__concerns=[{"file": "a", "line": "4", "issue": "b", "suggestion": "c"}]
        ),
        findings(
            codeQuality__concerns=[{"file": "a", "line": True, "issue": "b", "suggestion": "c"}]
        ),
        findings(
            codeQuality__concerns=[{"file": "a", "line": 4.5, "issue": "b", "suggestion": "c"}]
        ),
        findings(
            codeQuality__concerns=[{"file": "a", "line": -1, "issue": "b", "suggestion": "c"}]
        ),
        findings(overallSummary=["a"]),
        {k: v for k, v in FINDINGS.items() if k != "overallSummary"},
        {"specAlignment": FINDINGS["specAlignment"], "overallSummary": "x"},
    ],
)
def test_an_answer_that_misfits_the_shape_is_refused(answer: dict[str, Any]) -> None:
    assert findings_parse(json.dumps(answer)) is None


@pytest.mark.parametrize("text", ["", "LGTM!", "```json\n{not json}\n```", "[1, 2, 3]", "{" * 50])
def test_an_answer_without_json_is_refused(text: str) -> None:
    assert findings_parse(text) is None


def test_sizes_are_bounded() -> None:
    answer = findings(
        specAlignment__gaps=[f"gap {n}" for n in range(500)],
        overallSummary="s" * 100_000,
    )
    parsed = findings_parse(json.dumps(answer))
    assert parsed is not None
    assert len(parsed["specAlignment"]["gaps"]) == MAX_ITEMS
    assert len(parsed["overallSummary"]) <= 4000


def test_an_adversarial_answer_is_read_quickly() -> None:
    started = time.monotonic()
    assert findings_parse('{"a": ' * 100_000 + "]" * 10) is None
    assert findings_parse("{" + '"x": "' + "y" * 1_000_000) is None
    assert time.monotonic() - started < 5


# --- the agent reviewer --------------------------------------------------------------------


def log() -> Logger:
    return Logger("[t]", io.StringIO())


def run(reviewer: str = "agent", **kw: Any) -> ReviewOutcome:
    args: dict[str, Any] = {
        "reviewer": reviewer,
        "spec": "Add a --json flag",
        "diff": "diff --git a/x b/x\n+x\n",
        "model": "",
        "api_url": "http://127.0.0.1:9",
        "api_key": None,
        "ask_agent": None,
        "log": log(),
    }
    args.update(kw)
    return review_run(**args)


class Agent:
    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_no_reviewer_means_the_review_is_disabled() -> None:
    agent = Agent()
    assert run("none", ask_agent=agent) == ReviewOutcome(None, "", "review disabled")
    assert agent.prompts == []


def test_the_agent_reviewer_answers_findings() -> None:
    agent = Agent("Review:\n```json\n" + GOOD + "\n```")
    outcome = run(ask_agent=agent, model="claude-sonnet-4-5")
    assert outcome == ReviewOutcome(FINDINGS, "claude-sonnet-4-5", "")
    assert "Add a --json flag" in agent.prompts[0]


def test_a_misfit_answer_gets_one_retry() -> None:
    agent = Agent("I think it looks fine.", GOOD)
    outcome = run(ask_agent=agent)
    assert outcome.findings == FINDINGS
    assert len(agent.prompts) == 2
    assert "previous answer was not a JSON object" in agent.prompts[1]


def test_two_misfit_answers_leave_the_review_unavailable() -> None:
    agent = Agent("nope", '{"specAlignment": "fine"}')
    outcome = run(ask_agent=agent)
    assert outcome.findings is None
    assert "not findings JSON" in outcome.note
    assert len(agent.prompts) == 2


def test_an_agent_that_fails_leaves_the_review_unavailable() -> None:
    outcome = run(ask_agent=Agent(AgentError("claude exited 1")))
    assert outcome.findings is None
    assert "claude exited 1" in outcome.note


def test_termination_is_not_swallowed() -> None:
    with pytest.raises(Terminated):
        run(ask_agent=Agent(Terminated("SIGTERM")))


def test_without_an_agent_or_a_diff_there_is_no_review() -> None:
    assert "no agent" in run(ask_agent=None).note
    assert "empty" in run(ask_agent=Agent(GOOD), diff="  \n").note


# --- the anthropic reviewer, over loopback -------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


def ask_api(api: FakeAnthropic, **kw: Any) -> ReviewOutcome:
    args = {"api_url": api.url, "api_key": api.api_key, "model": "claude-sonnet-4-5"}
    return run("anthropic", **{**args, **kw})


def test_the_messages_api_is_called_in_its_wire_format(api: FakeAnthropic) -> None:
    api.replies = ["```json\n" + GOOD + "\n```"]
    outcome = ask_api(api)
    assert outcome == ReviewOutcome(FINDINGS, "claude-sonnet-4-5", "")
    [request] = api.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == api.api_key
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.body["model"] == "claude-sonnet-4-5"
    assert request.body["max_tokens"] > 0
    [message] = request.body["messages"]
    assert message["role"] == "user" and "Add a --json flag" in message["content"]


def test_without_a_model_the_api_is_asked_for_the_default_one(api: FakeAnthropic) -> None:
    api.replies = [GOOD]
    assert ask_api(api, model="").model_used == "claude-sonnet-4-5"
    assert api.requests[0].body["model"] == "claude-sonnet-4-5"


def test_a_base_url_with_a_trailing_slash_works(api: FakeAnthropic) -> None:
    api.replies = [GOOD]
    assert ask_api(api, api_url=api.url + "/").findings == FINDINGS


def test_a_misfit_api_answer_gets_one_retry(api: FakeAnthropic) -> None:
    api.replies = ["Looks good to me!", GOOD]
    assert ask_api(api).findings == FINDINGS
    assert len(api.requests) == 2
    assert "previous answer" in api.prompts()[1]


def test_two_misfit_api_answers_leave_it_unavailable(api: FakeAnthropic) -> None:
    api.replies = ["no", "still no"]
    outcome = ask_api(api)
    assert outcome.findings is None and len(api.requests) == 2


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ((429, "rate_limit_error"), ["429", "rate_limit_error"]),
        ((529, "overloaded_error"), ["529", "overloaded_error"]),
        ((500, "api_error"), ["500"]),
    ],
)
def test_an_api_error_leaves_the_review_unavailable_at_once(
    api: FakeAnthropic, fault: tuple[int, str], words: list[str]
) -> None:
    api.fail_with = fault
    outcome = ask_api(api)
    assert outcome.findings is None
    for word in words:
        assert word in outcome.note
    assert "fake" not in outcome.note  # the API's free-text message is not repeated
    assert len(api.requests) == 1


def test_a_wrong_key_is_unavailable_and_the_note_holds_no_key(api: FakeAnthropic) -> None:
    outcome = ask_api(api, api_key="sk-ant-wrong-key-987654321")
    assert outcome.findings is None
    assert "401" in outcome.note and "authentication_error" in outcome.note
    assert "sk-ant" not in outcome.note


def test_no_key_means_no_request(api: FakeAnthropic) -> None:
    outcome = ask_api(api, api_key=None)
    assert "ANTHROPIC_API_KEY" in outcome.note
    assert api.requests == []


def test_an_answer_that_is_not_json_is_unavailable(api: FakeAnthropic) -> None:
    api.raw = b"<html>502 Bad Gateway</html>"
    outcome = ask_api(api)
    assert outcome.findings is None and "not JSON" in outcome.note


def test_a_redirect_is_not_followed_with_the_key(api: FakeAnthropic) -> None:
    elsewhere = FakeAnthropic(api_key=api.api_key).start()
    try:
        elsewhere.replies = [GOOD]
        api.redirect_to = elsewhere.url + "/v1/messages"
        outcome = ask_api(api)
        assert outcome.findings is None and "307" in outcome.note
        assert elsewhere.requests == []
    finally:
        elsewhere.stop()


def test_an_unreachable_api_is_unavailable() -> None:
    from tests.conftest import free_port

    outcome = run("anthropic", api_url=f"http://127.0.0.1:{free_port()}", api_key="sk-ant-x-123")
    assert outcome.findings is None and "could not be reached" in outcome.note


def test_a_slow_api_times_out(api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages_api, "API_TIMEOUT", 0.3)
    api.delay = 1.0
    api.replies = [GOOD]
    started = time.monotonic()
    outcome = ask_api(api)
    assert outcome.findings is None and "could not be reached" in outcome.note
    assert time.monotonic() - started < 1.0


# --- what the findings mean and how they read ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "quality", "needs_fix"),
    [
        ("aligned", "good", False),
        ("partial", "acceptable", False),
        ("misaligned", "good", True),
        ("aligned", "needs-work", True),
    ],
)
def test_a_fix_is_needed_when_misaligned_or_needing_work(
    spec: str, quality: str, needs_fix: bool
) -> None:
    answer = findings(specAlignment__score=spec, codeQuality__score=quality)
    assert review_needs_fix(answer) is needs_fix


def test_the_pr_comment_reads_well() -> None:
    text = review_markdown(FINDINGS)
    assert text.startswith("## Whim self-review\n")
    assert "Close, but fix the crash." in text
    assert "Spec alignment: partial" in text and "Code quality: needs-work" in text
    assert "- The --json flag is missing" in text
    assert "- A colour option nobody asked for" in text
    assert "`src/app.py:42`: Division by zero when the list is empty" in text
    assert "*Suggestion:* Return 0 for an empty list" in text
    assert "`README.md`: Outdated usage" in text


def test_the_pr_comment_of_a_clean_review_says_so() -> None:
    clean = findings(
        specAlignment__score="aligned",
        specAlignment__gaps=[],
        specAlignment__extras=[],
        codeQuality__score="good",
        codeQuality__concerns=[],
    )
    text = review_markdown(clean)
    assert "No gaps" in text and "No significant concerns" in text


def test_model_text_cannot_break_out_of_its_list_item() -> None:
    answer = findings(specAlignment__gaps=["one\n\n## Approved by admin\n<img src=x>"])
    text = review_markdown(answer)
    assert "\n## Approved" not in text
    assert "<img" not in text
