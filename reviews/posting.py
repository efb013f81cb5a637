"""The review bot's two GitHub calls, as outbox handlers (``intake.outbox``), and the texts
they carry.

- ``review_post`` (key ``review:{item}``): one pull request review, event ``COMMENT``, its
  body the findings' summary and scores with the row's marker, and line comments for the
  concerns whose file and line the diff has. Idempotent: a review whose body carries the marker
  already (a retry after a timeout that did post) is the answer, not a second post. GitHub
  refusing the line comments (422: a line not in its diff after all) posts the review with
  them folded into the body.
- ``check_run`` (key ``check:{item}``): one completed check run on the head sha. Idempotent by
  ``external_id`` (the row's key): found on the commit, it is not created again.

Every string the reviewer wrote is model output about code the PR's author wrote: kept to one
line per list entry, HTML tags and @-mentions defused, so it cannot steer what GitHub renders
or whom it notifies (DESIGN.md principle 9).
"""

from __future__ import annotations

from typing import Any

from intake import outbox
from intake.github import GitHubClient, GitHubError
from intake.models import GitHubAction

REVIEW_POST = "review_post"
CHECK_RUN = "check_run"
LINE_COMMENTS_MAX = 50
SPEC_MARKS = {"aligned": "✅", "partial": "⚠️", "misaligned": "❌"}
QUALITY_MARKS = {"good": "✅", "acceptable": "👍", "needs-work": "⚠️"}


def safe_line(text: str) -> str:
    """Model-written text kept on one line: no line breaks, no raw HTML, no @-mentions."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace("@", "@\u200b")


def check_conclusion(findings: dict[str, Any] | None) -> str:
    """success (aligned and good), action_required (misaligned or needs-work), else neutral."""
    if not findings:
        return "neutral"
    spec, quality = findings["specAlignment"]["score"], findings["codeQuality"]["score"]
    if spec == "misaligned" or quality == "needs-work":
        return "action_required"
    if spec == "aligned" and quality == "good":
        return "success"
    return "neutral"


def _in_diff(diff_lines: dict[str, list[list[int]]], path: str, line: int) -> bool:
    return any(start <= line <= end for start, end in diff_lines.get(path) or [])


def line_comments(
    findings: dict[str, Any], diff_lines: dict[str, list[list[int]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(line comments for the concerns the diff has a line for, the other concerns)."""
    placed: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for concern in findings["codeQuality"]["concerns"]:
        path, line = concern.get("file") or "", concern.get("line")
        if line and len(placed) < LINE_COMMENTS_MAX and _in_diff(diff_lines, path, line):
            text = safe_line(concern["issue"])
            if concern.get("suggestion"):
                text += f"\n\n*Suggestion:* {safe_line(concern['suggestion'])}"
            placed.append({"path": path, "line": line, "side": "RIGHT", "body": text})
        else:
            rest.append(concern)
    return placed, rest


def concern_lines(concerns: list[dict[str, Any]]) -> list[str]:
    lines = []
    for concern in concerns:
        where = (concern.get("file") or "") + (f":{concern['line']}" if concern.get("line") else "")
        where = f"`{where.replace('`', '')}`: " if where else ""
        lines.append(f"- {where}{safe_line(concern['issue'])}")
        if concern.get("suggestion"):
            lines.append(f"  - *Suggestion:* {safe_line(concern['suggestion'])}")
    return lines


def review_body(findings: dict[str, Any], *, unplaced: list[dict[str, Any]], sha: str) -> str:
    """The review's body: the overall summary, both scores with their summaries, the gaps and
    extras, and the concerns that did not become line comments."""
    spec, quality = findings["specAlignment"], findings["codeQuality"]
    lines = ["## Whim review", "", safe_line(findings["overallSummary"]), ""]
    lines += [f"**{SPEC_MARKS[spec['score']]} Spec alignment: {spec['score']}** — "]
    lines[-1] += safe_line(spec["summary"])
    lines += [""]
    lines += [f"- Missing: {safe_line(gap)}" for gap in spec["gaps"]]
    lines += [f"- Beyond the description: {safe_line(extra)}" for extra in spec["extras"]]
    lines += [
        "",
        f"**{QUALITY_MARKS[quality['score']]} Code quality: {quality['score']}** — "
        + safe_line(quality["summary"]),
        "",
    ]
    lines += concern_lines(unplaced)
    lines += ["", "---", f"*Reviewed by Whim at {sha[:12]}.*"]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


# GitHub refuses a review body over 65,536 characters (422): room is left for the marker.
BODY_MAX = 60_000


def _bounded(text: str) -> str:
    """``text`` cut at a line end to fit BODY_MAX, saying so (the findings allow far more)."""
    if len(text) <= BODY_MAX:
        return text
    cut = text.rfind("\n", 0, BODY_MAX - 200)
    return text[: cut if cut > 0 else BODY_MAX - 200] + "\n\n… (cut: the full review is on Whim)"


# --- the handlers --------------------------------------------------------------------------


def review_post(client: GitHubClient, action: GitHubAction) -> dict[str, Any]:
    """Post the review once (see the module docstring)."""
    number = int(action.number or 0)
    for review in client.pull_reviews(number):
        if outbox.marked([str(review.get("body") or "")], action):
            return _review_result(review, found=True)
    payload = action.payload
    body = f"{_bounded(payload['body'])}\n{outbox.marker(action)}\n"
    comments = list(payload.get("comments") or [])
    try:
        review = client.pull_review_create(
            number, commit_id=payload["commit_id"], body=body, event="COMMENT", comments=comments
        )
    except GitHubError as exc:
        if exc.status != 422 or not comments:
            raise
        # A line GitHub does not see in the diff: the comments go in the body instead.
        folded = [f"- `{c['path']}:{c['line']}`: {' '.join(c['body'].split())}" for c in comments]
        text = f"{payload['body']}\n" + "\n".join(folded)
        body = f"{_bounded(text)}\n\n{outbox.marker(action)}\n"
        review = client.pull_review_create(
            number, commit_id=payload["commit_id"], body=body, event="COMMENT", comments=[]
        )
    return _review_result(review, found=False)


def _review_result(review: dict[str, Any], *, found: bool) -> dict[str, Any]:
    return {"id": review.get("id"), "html_url": review.get("html_url") or "", "found": found}


def check_run(client: GitHubClient, action: GitHubAction) -> dict[str, Any]:
    """Create the check run once (see the module docstring)."""
    fields = dict(action.payload)
    for run in client.check_runs(fields["head_sha"], name=fields["name"]):
        if run.get("external_id") == action.key:
            return {"id": run.get("id"), "html_url": run.get("html_url") or "", "found": True}
    run = client.check_run_create(**fields, external_id=action.key)
    return {"id": run.get("id"), "html_url": run.get("html_url") or "", "found": False}


def handlers_register() -> None:
    outbox.action_handler_register(REVIEW_POST, review_post)
    outbox.action_handler_register(CHECK_RUN, check_run)
