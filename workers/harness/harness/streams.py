"""Reading an agent's output stream, one line at a time: usage, cost, model and its answer.

Two formats, both one JSON object per line:

- Claude Code (``claude -p --output-format stream-json --verbose``): ``{"type": "system",
  "subtype": "init", "model": ...}``; ``{"type": "assistant", "message": {"id", "model",
  "content": [{"type": "text", "text"}...], "usage": {input_tokens, output_tokens,
  cache_creation_input_tokens, cache_read_input_tokens}}}`` per turn (Claude Code repeats a
  message's usage on every content block of it, so usage counts once per message id);
  ``{"type": "user", ...}`` tool results; and last ``{"type": "result", "subtype", "is_error",
  "result", "num_turns", "total_cost_usd", "usage"}``.
- Codex (``codex exec --json``): ``thread.started``, ``turn.started``, ``item.started`` /
  ``item.updated`` / ``item.completed`` (``item.type`` ``agent_message`` carries ``text``),
  ``turn.completed {usage: {input_tokens, cached_input_tokens, output_tokens}}`` (the cached
  tokens are part of ``input_tokens``), ``turn.failed {error: {message}}`` (the invocation
  failed) and ``error`` (noted only).

Tokens in count every input token the model processed: input + cache creation + cache read.
Counts only ever grow: the final ``result`` usage raises the running totals when it is higher.
A line that is not a JSON object of a known shape is *malformed*: counted and kept in the
text (``raw``), never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TEXT_CHARS = 200_000  # what is kept of an invocation's text
MODEL_CHARS = 100  # the orchestrator refuses a longer model name (the stream is the agent's)


@dataclass
class StreamState:
    """What one invocation's output said so far."""

    kind: str  # claude | codex | auto (either, as a command agent may print)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model: str = ""
    is_error: bool = False
    error: str = ""
    num_turns: int = 0
    events: int = 0  # lines understood as events
    malformed: int = 0  # lines that were not
    result: str | None = None  # the final answer (claude's result event)
    messages: list[str] = field(default_factory=list)  # assistant / agent_message texts
    raw: list[str] = field(default_factory=list)  # lines that were not events
    _usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    _turns: tuple[int, int] = (0, 0)  # codex: the turns' usage so far

    @property
    def text(self) -> str:
        """The answer: the result (else the messages), then any lines that were not events."""
        answer = self.result if self.result is not None else "\n".join(self.messages)
        parts = [answer] if answer else []
        if self.raw:
            parts.append("\n".join(self.raw))
        return "\n".join(parts)[-TEXT_CHARS:]

    def feed(self, line: str) -> bool:
        """Take one line; returns whether it was an event (False: malformed or plain text)."""
        stripped = line.strip()
        if not stripped:
            return True
        try:
            event = json.loads(stripped) if stripped.startswith("{") else None
        except ValueError:
            event = None
        understood = isinstance(event, dict) and self._event(event)
        if understood:
            self.events += 1
        else:
            self.malformed += 1
            if sum(len(r) for r in self.raw) < TEXT_CHARS:
                self.raw.append(line)
        return understood

    # -- the formats ------------------------------------------------------------------------

    def _event(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if not isinstance(kind, str):
            return False
        if self.kind in ("claude", "auto") and kind in CLAUDE_TYPES:
            return self._claude(kind, event)
        if self.kind in ("codex", "auto") and (kind in CODEX_TYPES or kind.startswith("item.")):
            return self._codex(kind, event)
        return False

    def _claude(self, kind: str, event: dict[str, Any]) -> bool:
        if kind == "system":
            if isinstance(event.get("model"), str):
                self.model = event["model"][:MODEL_CHARS]
            return True
        if kind == "assistant":
            message = event.get("message")
            if not isinstance(message, dict):
                return False
            if isinstance(message.get("model"), str) and message["model"]:
                self.model = message["model"][:MODEL_CHARS]
            for block in message.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "text":
                    self.messages.append(str(block.get("text") or ""))
            usage = _claude_usage(message.get("usage"))
            if usage is not None:
                key = str(message.get("id") or f"turn-{len(self._usage)}")
                self._usage[key] = usage
                self._raise(
                    sum(u[0] for u in self._usage.values()),
                    sum(u[1] for u in self._usage.values()),
                )
            return True
        if kind == "user":
            return True
        # result
        self.is_error = bool(event.get("is_error"))
        if isinstance(event.get("result"), str):
            self.result = event["result"]
        if self.is_error:
            self.error = str(event.get("result") or event.get("subtype") or "error")[:500]
        turns = event.get("num_turns")
        if isinstance(turns, int) and turns >= 0:
            self.num_turns = turns
        cost = event.get("total_cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
            self.cost_usd = max(self.cost_usd, float(cost))
        usage = _claude_usage(event.get("usage"))
        if usage is not None:
            self._raise(*usage)
        return True

    def _codex(self, kind: str, event: dict[str, Any]) -> bool:
        if kind == "turn.completed":
            usage = event.get("usage")
            if not isinstance(usage, dict):
                return False
            turn = (_count(usage.get("input_tokens")), _count(usage.get("output_tokens")))
            self._turns = (self._turns[0] + turn[0], self._turns[1] + turn[1])
            self.num_turns += 1
            self._raise(*self._turns)
            return True
        if kind in ("turn.failed", "error"):
            # An ``error`` alone may be one codex recovers from (a reconnect); a failed turn
            # is the invocation's failure.
            error = event.get("error") if kind == "turn.failed" else event
            message = error.get("message") if isinstance(error, dict) else None
            self.is_error = self.is_error or kind == "turn.failed"
            self.error = str(message or kind)[:500]
            return True
        if kind.startswith("item."):
            item = event.get("item")
            if not isinstance(item, dict):
                return False
            item_type = item.get("type") or item.get("item_type")
            if kind == "item.completed" and item_type in ("agent_message", "assistant_message"):
                self.messages.append(str(item.get("text") or ""))
            return True
        return True  # thread.started, turn.started

    def _raise(self, tokens_in: int, tokens_out: int) -> None:
        self.tokens_in = max(self.tokens_in, tokens_in)
        self.tokens_out = max(self.tokens_out, tokens_out)


CLAUDE_TYPES = frozenset({"system", "assistant", "user", "result"})
CODEX_TYPES = frozenset(
    {"thread.started", "turn.started", "turn.completed", "turn.failed", "error"}
)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _claude_usage(usage: Any) -> tuple[int, int] | None:
    """(input + cache creation + cache read, output) of a usage object, or None."""
    if not isinstance(usage, dict):
        return None
    tokens_in = (
        _count(usage.get("input_tokens"))
        + _count(usage.get("cache_creation_input_tokens"))
        + _count(usage.get("cache_read_input_tokens"))
    )
    return tokens_in, _count(usage.get("output_tokens"))
