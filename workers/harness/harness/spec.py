"""Spec mode (``WORKER_MODE=spec``, SPEC_GENERATOR=agent): write the spec of a ``generating``
item from its description and the repository.

The repository is cloned and its default branch checked out, read only: nothing is committed
or pushed (the item's branch may not even be derived yet). The agent runs once with the
spec-writing prompt (``prompts.spec_prompt``: the description as quoted material, the tracked
files) for at most ``SPEC_TIMEOUT`` seconds (then its processes are killed: ``TIMEOUT``). The
spec is what the agent wrote to ``.whim/spec.md`` — a copy the repository tracks is removed
first, so only the agent's counts — else its final answer (a fence around it and chatter before
its first heading dropped). No spec at all is an ``AGENT_ERROR``; the orchestrator validates the
rest (size, a heading or a task line) and retries or fails the item. ``complete`` carries
``{spec, metrics}`` and no commit.
"""

from __future__ import annotations

import threading
from typing import Any

from .checkout import private_file_read
from .errors import AgentError, Category, HarnessError
from .prompts import SPEC_FILE, spec_prompt
from .session import Session
from .state import children

# Read past SPEC_MAX_BYTES on purpose: the orchestrator refuses a spec too big, with the reason.
SPEC_READ_LIMIT = 4_000_000


def spec_run(s: Session) -> dict[str, Any]:
    item = s.item
    if not item.description.strip():
        raise HarnessError(
            "the work item has no description to write a spec from",
            category=Category.VALIDATION_ERROR,
        )
    s.prepare(spec=None, pushes=False, default_only=True)
    _spec_file_clear(s)
    files = s.repo.git.run("ls-files")
    prompt = spec_prompt(
        description=item.description, repo=item.repo, default_branch=s.repo.default, files=files
    )
    s.progress.update(iteration=1)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        s.log(f"the spec agent ran past SPEC_TIMEOUT ({s.config.spec_timeout:g}s); stopping it")
        children.kill_all(grace=2)

    timer = threading.Timer(s.config.spec_timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        done = s.invoke(prompt, purpose="spec")
    except (HarnessError, AgentError):
        if timed_out.is_set():
            raise _timeout(s) from None
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise _timeout(s)
    written = private_file_read(s.config.checkout, SPEC_FILE, limit=SPEC_READ_LIMIT)
    spec = written if written.strip() else spec_from_answer(done.text)
    if not spec.strip():
        raise AgentError(
            f"the agent wrote no spec (neither {SPEC_FILE} nor an answer); the end of its "
            "answer:\n" + (done.text[-1500:] or "(nothing)")
        )
    s.log(
        f"spec written ({len(spec.encode('utf-8'))} bytes, from "
        + (SPEC_FILE if written.strip() else "the agent's answer")
        + ")"
    )
    body: dict[str, Any] = {"spec": spec, "metrics": {"filesModified": 0, "iterations": 1}}
    model = s.repo_settings.model or s.progress.snapshot().model
    if model:
        body["model"] = model
    return body


def _timeout(s: Session) -> HarnessError:
    return HarnessError(
        f"the spec agent ran past SPEC_TIMEOUT ({s.config.spec_timeout:g}s) and was stopped",
        category=Category.TIMEOUT,
    )


def _spec_file_clear(s: Session) -> None:
    """Remove ``.whim/spec.md`` (or a ``.whim`` symlink) the default branch holds, so what is
    read afterwards is the agent's."""
    root = s.config.checkout
    whim = root / ".whim"
    if whim.is_symlink():
        whim.unlink()
        return
    path = root / SPEC_FILE
    if path.is_symlink() or path.is_file():
        path.unlink()


def spec_from_answer(text: str) -> str:
    """The spec in an answer: a surrounding code fence dropped, and anything before its first
    Markdown heading (when it has one)."""
    lines = text.strip().splitlines()
    if len(lines) >= 2 and lines[0].startswith("```") and lines[-1].strip() == "```":
        lines = lines[1:-1]
    first = next((i for i, line in enumerate(lines) if line.startswith("# ")), 0)
    return "\n".join(lines[first:]).strip() + ("\n" if lines else "")
