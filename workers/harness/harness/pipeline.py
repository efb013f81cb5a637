"""The execution attempt's steps, from the prepared checkout to the body of ``complete``.

1. The loop: each iteration is one agent invocation with a fresh prompt (``prompts.py``).
   After an iteration that changed files: lock them (all or nothing; refused for
   ``LOCK_WAIT_SECONDS`` → ``AgentStuck``), commit ("whim: iteration N — <title>"), push. The
   loop stops at the promise, at the iteration limit, after a one-shot command agent (one that
   speaks no stream format), at the cost cap (checked before every invocation: ``COST_CAP``,
   the work so far already pushed) or when the agent goes silent (``AgentStuck``). No change
   at all — and no earlier pushed commits on a resumed branch — is ``NO_CHANGES``.
2. Tests (``session.tests``); failing → up to ``fix_iterations`` fix iterations with the
   failure's tail in the prompt, each committed and pushed, re-tested after each.
3. Self-review (``review.review_run``) when the repo settings ask for it and ``WHIM_REVIEWER``
   is not ``none``; the agent reviewer's own file changes are thrown away, and its failure
   makes the review unavailable, not the attempt failed (a one-shot command agent is not asked).
   Misaligned or needs-work → one fix pass with the findings, re-test, re-review.
4. The pull request (body: summary, spec excerpt, tests, review, ``Closes #N``) and the review
   as its comment. A PR that cannot be opened after the push is a warning on ``complete``.
5. The body of ``complete``: commit, branch, PR, metrics, model, review, verificationEnabled,
   learnings (``.whim/new-learnings.md``).
"""

from __future__ import annotations

from typing import Any

from . import github, review, testrun
from .checkout import policy_check, private_file_read
from .errors import AgentError, AgentStuck, Category, HarnessError
from .locking import files_lock
from .prompts import (
    PRIVATE_FILES,
    PROGRESS_FILE,
    fix_review_prompt,
    fix_tests_prompt,
    iteration_prompt,
)
from .session import Session

RETEST = ("failed", "error", "timeout")


class Execution:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.item = session.item
        self.title = github.pr_title(self.item.spec, fallback=f"Whim: {self.item.branch}")
        self.files: set[str] = set()
        self.iterations = 0
        self.last_text = ""
        self._pushed = ""  # the branch head last pushed (or checked out)
        self.one_shot = False  # a command agent that speaks no stream format

    # 1. The loop ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        s = self.s
        s.prepare(spec=self.item.spec)
        self._pushed = s.repo.start
        settings = s.repo_settings
        for n in range(1, settings.max_iterations + 1):
            s.cost_check()  # at the boundary: the iteration reported is the last one done
            s.progress.update(iteration=n)
            self.iterations = n
            prompt = iteration_prompt(
                spec=self.item.spec,
                git_log=self._log(),
                progress=private_file_read(s.config.checkout, PROGRESS_FILE),
                iteration=n,
                max_iterations=settings.max_iterations,
                learnings=s.has_learnings,
            )
            done = s.invoke(prompt, purpose="work")
            self.last_text = done.text
            self.commit(f"whim: iteration {n} — {self.title}")
            if done.promised:
                s.log(f"iteration {n}: the agent says every task is done")
                break
            if not done.structured:
                s.log(f"iteration {n}: a one-shot agent (no stream events); the loop ends")
                self.one_shot = True
                break
        else:
            s.log(f"stopped at the iteration limit ({settings.max_iterations})")
        if not self.files and not s.repo.ahead_of_default():
            raise HarnessError(
                "the agent finished without changing any file", category=Category.NO_CHANGES
            )
        result = self.tests_and_fix()
        outcome = self.review_and_fix(result)
        if outcome is not None and outcome[1] is not None:
            result = outcome[1]
        return self.finish(result, outcome[0] if outcome else None)

    def _log(self) -> str:
        git = self.s.repo.git
        try:
            return git.run(
                "log",
                "--format=%h %s",
                "-n",
                "50",
                f"refs/remotes/origin/{self.s.repo.default}..HEAD",
            )
        except HarnessError:
            return ""

    def commit(self, message: str) -> list[str]:
        """Lock, commit and push what changed since the last push; the files (or [])."""
        s, git = self.s, self.s.repo.git
        files = [f for f in git.changed_files(self._pushed) if f not in PRIVATE_FILES]
        if not files:
            return []
        s.log(f"{len(files)} changed file(s); locking them")
        locked = files_lock(
            client=s.client,
            repo=self.item.repo,
            files=files,
            wait_seconds=s.config.lock_wait_seconds,
            log=s.log,
        )
        if not locked.acquired:
            raise AgentStuck(locked.reason(len(files)), attempts=locked.attempts)
        if git.commit_all(f"{message}\n\nWhim work item {self.item.id}", leave_out=PRIVATE_FILES):
            s.log(f"committed: {message}")
        policy_check(
            self.item.branch, protected=s.config.protected_branches, default=s.repo.default
        )  # the last word before the push
        git.push(self.item.branch)
        self._pushed = git.head()
        s.log(f"pushed {self._pushed[:12]} to {self.item.branch}")
        self.files.update(files)
        return files

    # 2./3. Tests, review, fix passes ----------------------------------------------------

    def tests_and_fix(self) -> testrun.TestResult:
        s = self.s
        result = s.tests()
        for n in range(1, s.repo_settings.fix_iterations + 1):
            if result.status not in RETEST:
                break
            s.log(f"fix pass {n} of {s.repo_settings.fix_iterations}: the tests {result.status}")
            self.fix(
                fix_tests_prompt(
                    spec=self.item.spec,
                    command=result.command,
                    status=result.status,
                    tail=result.tail,
                ),
                f"whim: fix {n} — failing tests",
            )
            result = s.tests()
        return result

    def fix(self, prompt: str, message: str) -> None:
        self.s.cost_check()
        self.iterations += 1
        self.s.progress.update(iteration=self.iterations)
        self.last_text = self.s.invoke(prompt, purpose="fix").text or self.last_text
        self.commit(message)

    def review_and_fix(
        self, result: testrun.TestResult
    ) -> tuple[review.ReviewOutcome, testrun.TestResult | None] | None:
        s = self.s
        if not s.repo_settings.review or s.config.reviewer == "none":
            return None
        if s.config.reviewer == "agent" and self.one_shot:
            s.log("no review: a one-shot command agent cannot be asked for one")
            return None
        outcome = self.review_once()
        if outcome.findings is None or not review.review_needs_fix(outcome.findings):
            return outcome, None
        s.log("the review asks for changes: one fix pass")
        self.fix(
            fix_review_prompt(spec=self.item.spec, review=review.review_markdown(outcome.findings)),
            "whim: review fix — " + self.title,
        )
        result = s.tests()
        return self.review_once(), result

    def review_once(self) -> review.ReviewOutcome:
        s = self.s
        git = s.repo.git
        diff = git.run("diff", f"refs/remotes/origin/{s.repo.default}...HEAD")
        outcome = s.review_diff(diff, self._ask_agent)
        if outcome.findings is None:
            s.log(f"review unavailable: {outcome.note}")
        else:
            s.log(f"review ({outcome.model_used}): {outcome.findings.get('overallSummary', '')}")
        return outcome

    def _ask_agent(self, prompt: str) -> str:
        """The agent as reviewer: one invocation whose file changes are thrown away."""
        git = self.s.repo.git
        head = git.head()
        try:
            return self.s.invoke(prompt, purpose="review", judge=True).text
        except AgentError as exc:  # an unavailable review, never a failed attempt
            self.s.log(f"the reviewing agent failed: {exc}")
            return ""
        finally:
            git.run("reset", "--hard", "--quiet", head, category=Category.COMMIT_ERROR)
            git.run("clean", "-d", "--force", "--quiet", category=Category.COMMIT_ERROR)

    # 4./5. The pull request and complete ------------------------------------------------

    def finish(
        self, result: testrun.TestResult, outcome: review.ReviewOutcome | None
    ) -> dict[str, Any]:
        s, git = self.s, self.s.repo.git
        sha = git.head()
        body: dict[str, Any] = {
            "commitSha": sha,
            "branch": self.item.branch,
            "metrics": {
                "filesModified": len(self.files),
                "testsRun": result.run,
                "testsPassed": result.passed,
                "testsFailed": result.failed,
                "testStatus": result.status,
                "iterations": self.iterations,
            },
            "verificationEnabled": s.repo_settings.verification,
        }
        model = s.repo_settings.model or s.progress.snapshot().model
        if model:
            body["model"] = model
        findings = outcome.findings if outcome else None
        if outcome is not None and findings is not None:
            body["review"] = {"modelUsed": outcome.model_used, "findings": findings}
        found = s.learnings_collect()
        if found:
            body["learnings"] = found
        if s.config.opens_pull_requests and self.item.branch != s.repo.default:
            self.pull_request(body, result, findings)
        return body

    def pull_request(
        self, body: dict[str, Any], result: testrun.TestResult, findings: dict[str, Any] | None
    ) -> None:
        s, config = self.s, self.s.config
        assert config.github_token is not None
        pr_body = github.pr_body(
            self.item.spec,
            work_item_id=self.item.id,
            summary=self._log(),
            tests=_tests_line(result),
            review=review.review_markdown(findings) if findings else "",
            closes=self.item.issue_number,
        )
        try:
            pull = github.pull_request_open(
                api_url=config.github_api_url,
                token=config.github_token,
                owner=self.item.owner,
                name=self.item.name,
                head=self.item.branch,
                base=s.repo.default,
                title=self.title,
                body=pr_body,
                log=s.log,
            )
        except github.PullRequestError as exc:
            s.log(f"warning: the branch is pushed but no pull request: {exc}")
            body["warning"] = f"pull request could not be opened: {exc}"[:1000]
            return
        s.log(f"pull request #{pull.number}: {pull.url}")
        body.update(prUrl=pull.url, prNumber=pull.number)
        if findings:
            github.issue_comment_post(
                api_url=config.github_api_url,
                token=config.github_token,
                owner=self.item.owner,
                name=self.item.name,
                number=pull.number,
                body=review.review_markdown(findings),
                log=s.log,
            )


def _tests_line(result: testrun.TestResult) -> str:
    if result.status == "skipped":
        return "No test command found; tests were not run."
    return (
        f"`{result.command}`: **{result.status}** — {result.passed} passed, "
        f"{result.failed} failed of {result.run}"
    )
