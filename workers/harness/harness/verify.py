"""Verification mode (``WORKER_MODE=verification``): check a pushed branch against its spec.

The item's ``description`` is the parent's spec, its ``prNumber`` the parent's pull request
(when one was opened). The branch must exist on the remote (else ``CLONE_ERROR``). The
repository's tests run, then the agent runs once with the verification prompt and must end
with ``[VERIFY:RESULT] {"passed": true|false, "summary": "..."}`` (``PASS`` / ``FAIL`` are
accepted too), in its answer; no verdict is an ``AGENT_ERROR``. A PASS with tests that
failed, errored or timed out is a FAIL. The verifier runs as a judge (``Session.invoke``): with
the default branch's agent-instruction files and a fresh HOME. Nothing is committed or pushed, and a
verifier that changes nothing is what is expected (never ``NO_CHANGES``). ``complete``
carries ``verificationPassed`` and the metrics.
"""

from __future__ import annotations

from typing import Any

from .errors import AgentError
from .prompts import verdict_parse, verification_prompt
from .session import Session

TESTS_ACCEPTED = ("passed", "skipped")  # a PASS verdict stands only with these test outcomes


def verification_run(s: Session) -> dict[str, Any]:
    item = s.item
    s.prepare(spec=item.spec, pushes=False, must_exist=True)
    result = s.tests()
    tests = (
        f"status: {result.status}; {result.passed} passed, {result.failed} failed of {result.run}"
    )
    if result.command:
        tests += f"; command `{result.command}`"
    if result.tail.strip():
        tests += f"\n\n```\n{result.tail}\n```"
    s.progress.update(iteration=1)
    done = s.invoke(
        verification_prompt(
            spec=item.spec, branch=item.branch, pr_number=item.pr_number, tests=tests
        ),
        purpose="verify",
        judge=True,
    )
    verdict = verdict_parse(done.text)  # its answer, not whatever its tools printed
    if verdict is None:
        raise AgentError(
            "the verifier gave no [VERIFY:RESULT] verdict; the end of its answer:\n"
            + (done.text[-1500:] or "(nothing)")
        )
    passed, summary = verdict
    if passed and result.status not in TESTS_ACCEPTED:
        # The verifier cannot pass what the repository's own tests fail.
        passed, summary = False, f"the tests did not pass ({result.status}); {summary}"
    s.log(f"verification {'passed' if passed else 'failed'}" + (f": {summary}" if summary else ""))
    body: dict[str, Any] = {
        "verificationPassed": passed,
        "metrics": {
            "filesModified": 0,
            "testsRun": result.run,
            "testsPassed": result.passed,
            "testsFailed": result.failed,
            "testStatus": result.status,
            "iterations": 1,
        },
    }
    model = s.repo_settings.model or s.progress.snapshot().model
    if model:
        body["model"] = model
    return body
