"""Reading agents' output streams (workers/harness/harness/streams.py) and verification
verdicts (prompts.py), line by line, without running anything."""

from __future__ import annotations

import json

from workers.harness.harness.prompts import verdict_parse
from workers.harness.harness.streams import StreamState

USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 3,
         "cache_read_input_tokens": 2}  # fmt: skip


def assistant(message_id: str, text: str, usage: dict[str, int] = USAGE) -> str:
    message = {"id": message_id, "model": "claude-x", "usage": usage,
               "content": [{"type": "text", "text": text}]}  # fmt: skip
    return json.dumps({"type": "assistant", "message": message})


def test_claude_usage_counts_once_per_message_and_includes_the_cache() -> None:
    state = StreamState(kind="claude")
    for line in [
        json.dumps({"type": "system", "subtype": "init", "model": "claude-x"}),
        assistant("m1", "a"),
        assistant("m1", "a again"),  # another content block of the same message
        assistant("m2", "b"),
    ]:
        assert state.feed(line)

    assert (state.tokens_in, state.tokens_out) == (2 * 15, 2 * 5)
    assert state.model == "claude-x"


def test_the_result_event_gives_cost_answer_and_raises_the_totals_never_lowers_them() -> None:
    state = StreamState(kind="claude")
    state.feed(assistant("m1", "working"))
    result = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 3,
              "result": "done <promise>COMPLETE</promise>", "total_cost_usd": 0.125,
              "usage": {"input_tokens": 100, "output_tokens": 1}}  # fmt: skip
    state.feed(json.dumps(result))

    assert (state.tokens_in, state.tokens_out) == (100, 5)
    assert state.cost_usd == 0.125 and state.num_turns == 3 and not state.is_error
    assert state.text == "done <promise>COMPLETE</promise>"


def test_malformed_lines_are_kept_as_text_and_never_fatal() -> None:
    state = StreamState(kind="claude")
    for line in ["hello", '{"type": "assistant", "message": ', '{"type": "weird"}', "[1, 2]"]:
        assert not state.feed(line)
    state.feed(assistant("m1", "fine"))

    assert state.malformed == 4 and state.events == 1
    assert "hello" in state.text and "fine" in state.text


def test_an_error_result_is_an_error() -> None:
    state = StreamState(kind="claude")
    state.feed(json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True}))

    assert state.is_error and "error_max_turns" in state.error


def test_codex_turns_add_up_and_its_agent_messages_are_the_answer() -> None:
    state = StreamState(kind="codex")
    usage = {"input_tokens": 50, "cached_input_tokens": 40, "output_tokens": 7}
    for line in [
        {"type": "thread.started", "thread_id": "t"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "1", "type": "reasoning", "text": "hmm"}},
        {"type": "item.completed", "item": {"id": "2", "type": "agent_message", "text": "ok"}},
        {"type": "turn.completed", "usage": usage},
        {"type": "turn.completed", "usage": usage},
        {"type": "error", "message": "reconnecting 1/5"},
    ]:
        assert state.feed(json.dumps(line))

    assert (state.tokens_in, state.tokens_out) == (100, 14)
    assert state.text == "ok" and not state.is_error
    state.feed(json.dumps({"type": "turn.failed", "error": {"message": "quota"}}))
    assert state.is_error and state.error == "quota"


def test_claude_lines_are_not_codex_events_and_auto_takes_either() -> None:
    codex = StreamState(kind="codex")
    assert not codex.feed(assistant("m1", "x"))
    auto = StreamState(kind="auto")
    assert auto.feed(assistant("m1", "x"))
    assert auto.feed(json.dumps({"type": "turn.completed", "usage": {"output_tokens": 1}}))


def test_verdicts_in_either_form_the_last_one_wins() -> None:
    assert verdict_parse('[VERIFY:RESULT] {"passed": true, "summary": "ok"}') == (True, "ok")
    assert verdict_parse("[VERIFY:RESULT] FAIL") == (False, "")
    assert verdict_parse("[VERIFY:RESULT] PASS\n...\n[VERIFY:RESULT] FAIL") == (False, "")
    assert verdict_parse('[VERIFY:RESULT] {"passed": "yes"}') is None
    assert verdict_parse("no verdict here") is None


def test_a_model_name_longer_than_the_orchestrator_takes_is_cut() -> None:
    # The stream is the agent's: a name the callbacks would refuse must not sink the attempt.
    state = StreamState(kind="claude")
    state.feed(json.dumps({"type": "system", "subtype": "init", "model": "m" * 500}))

    assert state.model == "m" * 100
