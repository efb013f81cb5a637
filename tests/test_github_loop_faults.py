"""Issue 11's GitHub loop under faults, on real parts:

1. Review jobs running in containers while the Celery worker (and its beat) is SIGKILLed and
   Redis dies and comes back empty; the first review POST times out after GitHub stored it.
   Every job still ends with exactly one review and one check run on the pull request.
2. The fake GitHub rate limits intake: the poll backs off until GitHub's reset time (shown on
   the repository and the dashboard), then catches up, nothing taken or said twice.
3. Bad and hostile ``issues`` / ``pull_request`` deliveries through gunicorn: 400 / 401 / 413
   / 200-ignored as API.md says, replays are duplicates, nothing written twice, never a 500.

The fake GitHub (tests/fakes/github.py) runs in this process on loopback: only the
orchestrator's processes call it (review containers post nothing themselves).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from django.test import Client
from django.urls import reverse

from intake.models import GitHubAction, GitHubActionStatus, Repository
from orchestration.models import Worker, WorkerStatus, WorkItem, WorkItemStatus, WorkItemType
from reviews.models import WebhookDelivery
from tests import intake_support
from tests.conftest import ROOT, CeleryWorkers, free_port, free_ports, start_web, stop_processes
from tests.docker_stack import DockerStack, git, make_bare_repo
from tests.fakes.github import FakeGitHub
from tests.helpers import assert_error, wait_for
from tests.invariants import assert_invariants
from tests.test_docker_github_loop import SECRET, deliver
from tests.test_docker_pipeline_b import SAFE, agent_bin
from tests.test_faults import start_redis
from tests.test_review_intake import event as pull_request_event

__all__ = ["agent_bin"]  # the fixture, used below

REPO = "acme/widgets"
PULLS = (1, 2, 3)
ISSUES = (11, 12, 13, 14)


def served(fake: FakeGitHub) -> list[Any]:
    with fake._lock:
        return list(fake.requests)


# --- 1. the review bot survives its workers and its broker ---------------------------------


def pull_branch(stack: DockerStack, branch: str, files: dict[str, str], scratch: Path) -> str:
    """A branch off main on the bare repo with one real commit writing ``files``; its sha."""
    bare = stack.repos / f"{REPO}.git"
    work = scratch / f"pull-{branch}"
    git("clone", "-q", "-u", f"git {SAFE} upload-pack", str(bare), str(work))
    git("checkout", "-q", "-b", branch, cwd=work)
    for path, content in files.items():
        (work / path).write_text(content)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", branch, cwd=work)
    git("push", "-q", "--receive-pack", f"git {SAFE} receive-pack", "origin", branch, cwd=work)
    subprocess.run(["chown", "-R", "1000:1000", str(bare)], check=True)
    return stack.branch_head(REPO, branch)


def pull_event(pull: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": "opened",
        "number": pull["number"],
        "pull_request": pull,
        "repository": {"full_name": REPO},
        "sender": {"login": "octocat"},
    }


def reviewing(n: int) -> bool:
    """``n`` review attempts running, each past its checkout and into the reviewer."""
    return (
        Worker.objects.filter(
            work_item__type=WorkItemType.REVIEW, status=WorkerStatus.RUNNING, iteration__gte=1
        ).count()
        == n
    )


def reported() -> bool:
    """Every review job completed and every GitHub call it asked for delivered."""
    jobs = WorkItem.objects.filter(type=WorkItemType.REVIEW)
    return (
        jobs.count() == len(PULLS)
        and not jobs.exclude(status=WorkItemStatus.COMPLETED).exists()
        and GitHubAction.objects.count() == 2 * len(PULLS)
        and not GitHubAction.objects.exclude(status=GitHubActionStatus.DONE).exists()
    )


@pytest.mark.docker
@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_reviews_survive_a_sigkilled_worker_and_an_emptied_redis_posting_each_once(
    docker_stack: Any,
    agent_bin: Any,
    github: FakeGitHub,
    tmp_path: Path,
    app_keys: tuple[str, str],
) -> None:
    github.app_public_key = app_keys[1]  # a GitHub App: only its tokens create check runs
    port = free_port()
    log = ROOT / "test-artifacts" / f"redis-{port}.log"
    log.parent.mkdir(exist_ok=True)
    redis = start_redis(port, log)
    try:
        stack = docker_stack(
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            WHIM_AGENT="claude",
            WHIM_AGENT_PATH_DIR=agent_bin({"review_sleep": 10}),
            WHIM_REVIEWER="agent",
            GITHUB_APP_ID=github.app_id,
            GITHUB_APP_PRIVATE_KEY=app_keys[0],
            GITHUB_API_URL=github.url,
            GITHUB_WEBHOOK_SECRET=SECRET,
            INTAKE_REPOS=REPO,
            INTAKE_POLL_INTERVAL="2",
            SWEEP_GITHUB_EVERY="2",
            REVIEW_CONCURRENCY_PER_REPO=str(len(PULLS)),
            MAX_WORKERS=str(len(PULLS)),
            START_RENUDGE_SECONDS="2",
            STALE_THRESHOLD="30",
            QUARANTINE_AFTER="100",
        )
        make_bare_repo(stack.repos, REPO)
        base = stack.branch_head(REPO, "main")
        for n in PULLS:
            sha = pull_branch(stack, f"feature-{n}", {f"f{n}.txt": f"change {n}\n"}, tmp_path)
            github.add_pull(REPO, n, f"feature-{n}", sha, "main", base, title=f"Change {n}")
        # GitHub stores the first review and the answer never arrives: the retry must find it.
        github.fault("POST", r"/pulls/\d+/reviews$", "timeout_after_write")

        # One pull request announced by the webhook; the poll (every 2 s) finds them all.
        answer = deliver(
            stack.base_url,
            "pull_request",
            pull_event(github.pulls_store[REPO][1]),
            str(uuid.uuid4()),
        )
        assert answer["outcome"] == "review_queued", answer
        wait_for(lambda: reviewing(len(PULLS)), timeout=90, what="three reviews running")

        worker = stack.workers.procs[0]
        stack.workers.kill9(worker)  # the worker and its beat, no warm shutdown, no acks
        redis.send_signal(signal.SIGKILL)  # every queued and unacknowledged message is gone
        redis.wait(timeout=10)
        time.sleep(2)  # the outage: the reviews finish and report while nothing consumes
        redis = start_redis(port, log)  # empty: --save '' and no AOF
        stack.workers.start(concurrency=4, beat=True)

        wait_for(
            lambda: stack.workers.supervise() >= 0 and reported(),
            timeout=120,
            interval=0.5,
            what="every review job completed and reported",
        )
        wait_for(lambda: not stack.containers(), timeout=30, what="no container left")
        assert_invariants(containers=stack.containers())
    finally:
        redis.send_signal(signal.SIGKILL)
        redis.wait(timeout=10)

    # Exactly one review and one check run per pull request, on its head.
    heads = {n: github.pulls_store[REPO][n]["head"]["sha"] for n in PULLS}
    for n in PULLS:
        posted = github.reviews[REPO][n]
        assert len(posted) == 1, (n, [r["body"][-60:] for r in posted])
        assert posted[0]["commit_id"] == heads[n] and "Whim review" in posted[0]["body"]
    runs = Counter(run["head_sha"] for run in github.check_runs[REPO])
    assert runs == Counter(heads.values()), runs
    assert {run["conclusion"] for run in github.check_runs[REPO]} == {"success"}
    # The timed-out post was retried and found the review it had made, by its marker.
    retried = GitHubAction.objects.filter(kind="review_post", attempts__gt=1)
    assert [a.result["found"] for a in retried] == [True], list(retried.values("key", "attempts"))
    posts = [r for r in served(github) if r.method == "POST" and r.path.endswith("/reviews")]
    assert len(posts) == len(PULLS), [r.path for r in posts]
    assert WorkItem.objects.filter(type=WorkItemType.REVIEW).count() == len(PULLS)


# --- 2. rate limited intake backs off, then catches up --------------------------------------


def issue_calls(fake: FakeGitHub, n: int) -> Counter[tuple[str, str]]:
    """The label and comment calls made on issue ``n``: (method, what) → how many."""
    prefix = f"/repos/{REPO}/issues/{n}/"
    calls: Counter[tuple[str, str]] = Counter()
    for r in served(fake):
        if r.path.startswith(prefix + "labels") and r.method == "POST":
            calls[("POST", ",".join(r.body["labels"]))] += 1
        elif r.path.startswith(prefix + "labels/") and r.method == "DELETE":
            calls[("DELETE", unquote(r.path.rsplit("/", 1)[1]))] += 1
        elif r.path == prefix + "comments" and r.method == "POST":
            calls[("POST", "comment")] += 1
    return calls


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_rate_limited_intake_waits_for_the_reset_then_takes_each_issue_once(
    celery_workers: Any, github: FakeGitHub, user_client: Client
) -> None:
    workers = celery_workers(
        GITHUB_API_URL=github.url,
        GITHUB_TOKEN="test-token",
        INTAKE_REPOS=REPO,
        INTAKE_ALLOWED_USERS="octocat",
        INTAKE_POLL_INTERVAL="1",
        SWEEP_GITHUB_EVERY="1",
        SPEC_GENERATOR="template",
        # Nothing is started: the items wait queued (the fake runtime reports no commit,
        # which GitHub credentials would make a refused completion anyway).
        DAILY_BUDGET="0",
    )
    workers.start(concurrency=4, beat=True)
    wait_for(
        lambda: Repository.objects.filter(name=REPO, polled_at__isnull=False).exists(),
        timeout=30,
        what="a first poll, of no labelled issue",
    )
    # Labelled issues appear as the requests run out, until a whole second ~7 s ahead
    # (x-ratelimit-reset counts whole seconds).
    reset = float(int(time.time()) + 7)
    with github._lock:
        github.rate_limit_remaining, github.rate_limit_reset = 0, reset
        for n in ISSUES:
            github.add_issue(REPO, n, title=f"Issue {n}", body="Do it.", labels=["whim"])
        before = len(github.requests)

    repo = wait_for(
        lambda: Repository.objects.filter(name=REPO, rate_limited_until__isnull=False).first(),
        timeout=10,
        what="the poll to meet the rate limit",
    )
    assert abs(repo.rate_limited_until.timestamp() - reset) < 1, repo.rate_limited_until
    assert "rate limit" in repo.poll_note, repo.poll_note
    dashboard = user_client.get(reverse("dashboard")).content.decode()
    assert 'id="github-status"' in dashboard and "rate limited" in dashboard, dashboard[:3000]
    assert f"{REPO} until" in dashboard
    # Until the reset: no item, and GitHub is not asked again (each 1 s poll backs off).
    while time.time() < reset - 0.3:
        assert not WorkItem.objects.exists()
        time.sleep(0.2)
    limited = served(github)[before:]
    assert 1 <= len(limited) <= 2, [(r.method, r.path) for r in limited]

    # After the reset the poll catches up: one item per issue, its label flow said once.
    wait_for(
        lambda: (
            WorkItem.objects.filter(status=WorkItemStatus.QUEUED).count() == len(ISSUES)
            and GitHubAction.objects.count() >= 2 * len(ISSUES)
            and not GitHubAction.objects.exclude(status=GitHubActionStatus.DONE).exists()
        ),
        timeout=45,
        interval=0.5,
        what="every issue taken and its labels changed",
    )
    time.sleep(3)  # three more polls: nothing is taken or said again
    items = WorkItem.objects.all()
    assert sorted(i.source_ref for i in items) == [f"issue:{n}" for n in ISSUES]
    assert not GitHubAction.objects.exclude(status=GitHubActionStatus.DONE).exists()
    for n in ISSUES:
        calls = issue_calls(github, n)
        assert calls == {("POST", "whim:processing"): 1, ("DELETE", "whim"): 1}, (n, calls)
        assert github.labels[REPO][n] == ["whim:processing"]
    repo.refresh_from_db()
    assert repo.rate_limited_until is None, repo.poll_note
    assert 'id="github-status"' not in user_client.get(reverse("dashboard")).content.decode()
    assert_invariants()


# --- 3. bad and hostile deliveries through the running web server ---------------------------


class Answer:
    """A urllib answer shaped like a Django test response, for tests.helpers.assert_error."""

    def __init__(self, status: int, content_type: str, content: bytes) -> None:
        self.status_code, self.content = status, content
        self.headers = {"Content-Type": content_type}

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def json(self) -> Any:
        return json.loads(self.content)


@pytest.fixture(scope="module")
def web(django_db_setup: None) -> Iterator[tuple[str, Path]]:
    """gunicorn on the test database watching acme/widgets (issues from octocat, and its
    pull requests), with the webhook secret of tests/intake_support.py. GitHub itself is a
    closed port: a delivery must be judged without asking it."""
    port, closed = free_ports(2)
    log = ROOT / "test-artifacts" / f"webhook-{uuid.uuid4().hex[:8]}-web.log"
    env = {
        **CeleryWorkers({}).env,  # the test database; a queue of its own nobody consumes
        "GITHUB_WEBHOOK_SECRET": intake_support.SECRET,
        "GITHUB_TOKEN": "test-token",
        "GITHUB_API_URL": f"http://127.0.0.1:{closed}",
        "INTAKE_REPOS": REPO,
        "INTAKE_ALLOWED_USERS": "octocat",
        "REVIEW_BOT": "true",
    }
    proc = start_web(env=env, binds=[f"127.0.0.1:{port}"], log=log)
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop_processes([proc], grace=10)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Internal Server Error" not in text, text[-3000:]


def post(
    base: str,
    body: bytes | dict[str, Any],
    *,
    event: str | None,
    delivery: str | None = None,
    signature: str | None = None,
) -> Answer:
    """One delivery to the running webhook, signed with the right secret unless
    ``signature`` says otherwise; never a 500, never a stack trace."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
    }
    if event is not None:
        headers["X-GitHub-Event"] = event
    secret = intake_support.SECRET.encode()
    headers["X-Hub-Signature-256"] = (
        signature
        if signature is not None
        else "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
    )
    req = urllib.request.Request(
        f"{base}/webhooks/github", data=raw, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = Answer(resp.status, resp.headers["Content-Type"], resp.read())
    except urllib.error.HTTPError as exc:
        answer = Answer(exc.code, exc.headers["Content-Type"], exc.read())
    assert answer.status_code < 500, answer.content[:2000]
    assert b"Traceback" not in answer.content and b'File "' not in answer.content
    return answer


def written() -> tuple[int, int, int]:
    return (
        WebhookDelivery.objects.count(),
        WorkItem.objects.count(),
        GitHubAction.objects.count(),
    )


def spoiled(payload: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``payload`` (a copy) with the value at ``path`` replaced, or removed for MISSING."""
    payload = copy.deepcopy(payload)
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is MISSING:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return payload


MISSING = object()
ISSUE_EVENT = intake_support.issue_event()
PULL_EVENT = pull_request_event()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("event", "payload", "field"),
    [
        # wrong types
        ("issues", spoiled(ISSUE_EVENT, ("issue", "number"), True), "number"),
        ("issues", spoiled(ISSUE_EVENT, ("issue", "number"), 2**40), "number"),
        ("issues", spoiled(ISSUE_EVENT, ("issue",), "an issue"), "number"),
        ("issues", spoiled(ISSUE_EVENT, ("issue", "labels"), "whim"), "labels"),
        ("issues", spoiled(ISSUE_EVENT, ("repository",), [REPO]), "repo"),
        ("issues", spoiled(ISSUE_EVENT, ("action",), 5), "action"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request",), [1, 2]), "number"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request", "number"), 7.5), "number"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request", "head"), "feature"), "headRef"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request", "user"), {"login": 3}), "author"),
        ("pull_request", spoiled(PULL_EVENT, ("action",), {"a": 1}), "action"),
        # missing fields
        ("issues", spoiled(ISSUE_EVENT, ("issue",), MISSING), "number"),
        ("issues", spoiled(ISSUE_EVENT, ("repository",), MISSING), "repo"),
        ("issues", spoiled(ISSUE_EVENT, ("issue", "title"), MISSING), "title"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request",), MISSING), "number"),
        ("pull_request", spoiled(PULL_EVENT, ("repository",), MISSING), "repo"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request", "head", "sha"), MISSING), "headSha"),
        # too long for a title, and text that is not text (a lone surrogate)
        ("issues", spoiled(ISSUE_EVENT, ("issue", "title"), "t" * 5000), "title"),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request", "title"), "t" * 5000), "title"),
        ("issues", spoiled(ISSUE_EVENT, ("issue", "title"), "bad \ud800 title"), None),
        ("pull_request", spoiled(PULL_EVENT, ("pull_request", "title"), "x\udfff"), None),
    ],
)
def test_a_delivery_of_the_wrong_shape_is_a_400_and_writes_nothing(
    web: tuple[str, Path], event: str, payload: dict[str, Any], field: str | None
) -> None:
    resp = post(web[0], payload, event=event)

    assert_error(resp, 400, "VALIDATION_ERROR", details=[field] if field else None)
    assert written() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{" + b'"zen": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413, "PAYLOAD_TOO_LARGE"),
        (b"[" * 200_000 + b"]" * 200_000, 400, "VALIDATION_ERROR"),  # nested past any stack
        (b'{"action": "opened", "title": "\xff\xfe"}', 400, "VALIDATION_ERROR"),  # not UTF-8
        (b'[{"action": "opened"}]', 400, "VALIDATION_ERROR"),
        (b'{"action": "opened", "n": NaN}', 400, "VALIDATION_ERROR"),
    ],
)
@pytest.mark.parametrize("event", ["issues", "pull_request"])
def test_a_body_too_big_or_not_a_json_object_is_refused_and_writes_nothing(
    web: tuple[str, Path], body: bytes, status: int, code: str, event: str
) -> None:
    assert_error(post(web[0], body, event=event), status, code)
    assert written() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("event", ["issues", "pull_request"])
def test_unsigned_or_missigned_deliveries_are_a_401_and_write_nothing(
    web: tuple[str, Path], event: str
) -> None:
    payload = ISSUE_EVENT if event == "issues" else PULL_EVENT
    forged = "sha256=" + hmac.new(b"guess", json.dumps(payload).encode(), "sha256").hexdigest()
    for signature in ("", "sha1=abc", forged, "sha256=" + "0" * 64):
        assert_error(post(web[0], payload, event=event, signature=signature), 401, "UNAUTHORIZED")
    assert written() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("push", {"ref": "refs/heads/main", "commits": [{"id": 1}] * 50}),
        ("issue_comment", {"action": "created", "issue": "not even an object"}),
        ("star", {}),
        ("pull_request", spoiled(PULL_EVENT, ("action",), "edited")),
        ("pull_request", {"action": "labeled", "pull_request": "garbage"}),
        ("issues", spoiled(ISSUE_EVENT, ("action",), "pinned")),
    ],
)
def test_events_and_actions_whim_does_not_act_on_are_200_ignored_once(
    web: tuple[str, Path], event: str, payload: dict[str, Any]
) -> None:
    resp = post(web[0], payload, event=event, delivery="ignored-1")
    again = post(web[0], payload, event=event, delivery="ignored-1")

    assert resp.status_code == 200 and resp.json()["outcome"] == "ignored", resp.content
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate", again.content
    assert written() == (1, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_bad_event_headers_are_a_400(web: tuple[str, Path]) -> None:
    for event in (None, "", "Pull-Request", "issues; drop", "x" * 51):
        assert_error(post(web[0], ISSUE_EVENT, event=event), 400, "VALIDATION_ERROR")
    assert written() == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_replayed_deliveries_are_duplicates_that_write_nothing_twice(
    web: tuple[str, Path],
) -> None:
    issue, pull = ISSUE_EVENT, PULL_EVENT
    assert post(web[0], issue, event="issues", delivery="d-1").json()["outcome"] == "item_created"
    first = post(web[0], pull, event="pull_request", delivery="d-2").json()
    assert first["outcome"] == "review_queued", first
    after = written()
    assert after[:2] == (2, 2) and after[2] > 0

    # The same ids again, as they were and with other contents (a replay cannot smuggle a new
    # event in under a delivery id already seen).
    other_issue = intake_support.issue_event(number=99)
    other_pull = pull_request_event(number=8, sha="3" * 40)
    for event, payload, delivery in [
        ("issues", issue, "d-1"),
        ("issues", other_issue, "d-1"),
        ("pull_request", pull, "d-2"),
        ("pull_request", other_pull, "d-2"),
        ("pull_request", other_pull, "d-1"),
    ]:
        resp = post(web[0], payload, event=event, delivery=delivery)
        assert resp.status_code == 200 and resp.json()["outcome"] == "duplicate", resp.content
    assert written() == after
    assert WorkItem.objects.filter(type=WorkItemType.REVIEW).get().pr_number == 7


@pytest.mark.django_db(transaction=True)
def test_a_nul_in_titles_is_dropped_not_a_500(web: tuple[str, Path]) -> None:
    issue = spoiled(ISSUE_EVENT, ("issue", "title"), "Dark\x00 mode")
    pull = spoiled(PULL_EVENT, ("pull_request", "title"), "Frob\x00nicate")

    assert post(web[0], issue, event="issues").json()["outcome"] == "item_created"
    assert post(web[0], pull, event="pull_request").json()["outcome"] == "review_queued"

    texts = list(WorkItem.objects.order_by("type").values_list("description", flat=True))
    assert texts[0].startswith("# Dark mode\n") and texts[1].startswith("# Frobnicate\n"), texts
