"""Seed a realistic history of N work items with COPY: seconds for a million, not minutes.

``seed(items=N)`` empties Whim's item tables and fills them as a busy installation looks
under the default RETENTION_DAYS (30): N items spread over the last ``days`` days, nearly
all finished (completed 82 %, failed 12 %, cancelled 6 %), plus the unfinished set the queue
bounds keep small whatever the history (up to 500 queued, 20 running, 10 generating, 5 each
assigned and paused), all recent. Types (execution 80 %, review 12 %, verification 8 %),
priorities (medium 60 %, high 20 %, low 15 %, critical 5 %) and 200 repositories (a few busy,
many quiet) vary as the pages filter them. Every started item has its attempt (a Worker
row), every finished attempt its metrics, every item its events (submitted, claimed and
finished), and the cost ledger a row per day, repository and model.

Rows go in through COPY on Django's own connection, so the bench (a scratch database) and a
test (inside its transaction, small N) use the same helper. Triggers fire as for any insert:
the item tallies (``orchestration.tallies``) are kept by the database, not by this module.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction

ITEM_TABLES = (
    "orchestration_filelock",
    "orchestration_workermetrics",
    "orchestration_workitemevent",
    "orchestration_learning",
    "reviews_prreview",
    "intake_githubaction",
    "orchestration_worker",
    "orchestration_workitem",
    "orchestration_costusage",
    "orchestration_dailyusage",
)

# Every random draw, per item, in one pass: the inserts below read them (deterministic for
# one ``random_seed``: setseed() and a serial plan).
DRAWS = """
CREATE TEMP TABLE seed_item ON COMMIT DROP AS
SELECT i,
  ('10000000-0000-0000-0000-' || lpad(to_hex(i), 12, '0'))::uuid AS id,
  ('20000000-0000-0000-0000-' || lpad(to_hex(i), 12, '0'))::uuid AS worker_id,
  st AS status,
  CASE WHEN r2 < 0.80 THEN 'execution' WHEN r2 < 0.92 THEN 'review' ELSE 'verification' END
    AS type,
  CASE WHEN r3 < 0.60 THEN 'medium' WHEN r3 < 0.80 THEN 'high' WHEN r3 < 0.95 THEN 'low'
    ELSE 'critical' END AS priority,
  'acme/repo-' || lpad(floor(%(repos)s * r4 ^ 2.5)::int::text, 3, '0') AS repo,
  st IN ('completed', 'failed', 'cancelled') AS finished,
  st NOT IN ('queued', 'generating') AS started,
  r5, r6, r7, r8, r9
FROM (
  SELECT i, r2, r3, r4, r5, r6, r7, r8, r9,
    CASE WHEN i < %(queued)s THEN 'queued' WHEN i < %(in_progress)s THEN 'in_progress'
      WHEN i < %(generating)s THEN 'generating' WHEN i < %(assigned)s THEN 'assigned'
      WHEN i < %(paused)s THEN 'paused'
      WHEN r1 < 0.82 THEN 'completed' WHEN r1 < 0.94 THEN 'failed' ELSE 'cancelled' END AS st
  FROM (
    SELECT i, random() r1, random() r2, random() r3, random() r4, random() r5, random() r6,
      random() r7, random() r8, random() r9
    FROM generate_series(0, %(items)s - 1) AS i
  ) d
) s;
ALTER TABLE seed_item ADD COLUMN created timestamptz, ADD COLUMN done timestamptz,
  ADD COLUMN claimed timestamptz;
UPDATE seed_item SET created = CASE WHEN finished
    THEN %(now)s - make_interval(secs => 3600 + r5 * (%(days)s * 86400 - 3600))
    ELSE %(now)s - make_interval(secs => r5 * 7200) END;
UPDATE seed_item SET
  done = CASE WHEN finished THEN least(created + make_interval(secs => 300 + r6 * 3300), %(now)s)
    END,
  claimed = created + interval '2 seconds';
"""

ITEMS = """
INSERT INTO orchestration_workitem (id, repo, branch, spec, description, type, priority,
  priority_rank, status, iteration, max_iterations, retry_count, next_retry_at, pr_url,
  pr_number, commit_sha, verification_passed, source, source_ref, metadata, idempotency_key,
  error, error_category, created_at, updated_at, completed_at, parent_work_item_id, worker_id,
  cost_usd, tokens_in, tokens_out)
SELECT id, repo, 'whim/item-' || i,
  CASE WHEN status = 'generating' THEN '' ELSE E'# Item ' || i || E'\n\nDo the thing.' END,
  '', type, priority,
  CASE priority WHEN 'critical' THEN 3 WHEN 'high' THEN 2 WHEN 'medium' THEN 1 ELSE 0 END,
  status, CASE WHEN started THEN 3 ELSE 0 END, 50, (status = 'failed')::int, NULL,
  CASE WHEN pr THEN 'https://github.com/' || repo || '/pull/' || (i + 1) ELSE '' END,
  CASE WHEN pr THEN i + 1 END, '',
  CASE WHEN type = 'verification' AND status = 'completed' THEN r7 < 0.7 END,
  'bench', '', '{}', NULL,
  CASE WHEN status = 'failed' THEN 'agent gave up' ELSE '' END,
  CASE WHEN status = 'failed' THEN 'AGENT_ERROR' ELSE '' END,
  created, coalesce(done, created), done, NULL, CASE WHEN started THEN worker_id END,
  cost, tokens_in, tokens_out
FROM (
  SELECT *, type <> 'verification' AND status = 'completed' AS pr,
    CASE WHEN finished THEN 10000 + floor(r7 * 390000)::bigint ELSE 0 END AS tokens_in,
    CASE WHEN finished THEN 1000 + floor(r8 * 39000)::bigint ELSE 0 END AS tokens_out,
    CASE WHEN finished AND r9 < 0.9 THEN round((0.05 + r9 * 5)::numeric, 6) ELSE 0 END AS cost
  FROM seed_item
) s
"""

WORKERS = """
INSERT INTO orchestration_worker (id, status, attempt, iteration, tokens_in, tokens_out,
  token_hash, container_id, last_heartbeat, registered_at, last_progress_at, created_at,
  started_at, completed_at, error, error_category, log_tail, work_item_id, start_nudged_at,
  cost_usd, model, kind)
SELECT s.worker_id,
  CASE s.status WHEN 'completed' THEN 'completed' WHEN 'failed' THEN 'failed'
    WHEN 'cancelled' THEN 'killed' WHEN 'assigned' THEN 'starting' WHEN 'in_progress'
    THEN 'running' ELSE 'completed' END,
  1, 3, w.tokens_in, w.tokens_out, lpad(to_hex(s.i), 64, '0'), '',
  coalesce(s.done, %(now)s), s.claimed, coalesce(s.done, %(now)s), s.claimed, s.claimed,
  s.done, w.error, w.error_category, '', s.id, NULL, w.cost_usd,
  CASE WHEN s.i %% 2 = 0 THEN 'claude-sonnet' ELSE 'gpt-codex' END, 'work'
FROM seed_item s JOIN orchestration_workitem w ON w.id = s.id
WHERE s.started
"""

EVENTS = """
INSERT INTO orchestration_workitemevent (kind, from_status, to_status, actor, message, data,
  created_at, work_item_id, worker_id)
SELECT 'submitted', '', 'queued', 'bench', '', '{}'::jsonb, created, id, NULL FROM seed_item
UNION ALL
SELECT 'claimed', 'queued', 'assigned', 'system', '', '{}', claimed, id, worker_id
  FROM seed_item WHERE started
UNION ALL
SELECT status, 'in_progress', status, 'system', '', '{}', done, id, worker_id
  FROM seed_item WHERE finished
"""

METRICS = """
INSERT INTO orchestration_workermetrics (tokens_in, tokens_out, duration_ms, files_modified,
  tests_run, tests_passed, tests_failed, test_status, created_at, worker_id, work_item_id,
  cost_usd, iterations)
SELECT w.tokens_in, w.tokens_out, (extract(epoch FROM s.done - s.claimed) * 1000)::bigint, 3,
  12, CASE WHEN s.status = 'completed' THEN 12 ELSE 9 END,
  CASE WHEN s.status = 'completed' THEN 0 ELSE 3 END, 'passed', s.done, s.worker_id, s.id,
  w.cost_usd, 3
FROM seed_item s JOIN orchestration_workitem w ON w.id = s.id
WHERE s.status IN ('completed', 'failed')
"""

# The cost ledger (a row per day, busy repository and model) and the spawn budget per day.
LEDGER = """
INSERT INTO orchestration_costusage (date, repo, model, tokens_in, tokens_out, cost_usd)
SELECT (%(now)s - make_interval(days => d))::date, 'acme/repo-' || lpad(r::text, 3, '0'), m,
  100000 + floor(random() * 9900000)::bigint, 10000 + floor(random() * 990000)::bigint,
  round((1 + random() * 299)::numeric, 6)
FROM generate_series(0, %(days)s - 1) d, generate_series(0, least(%(repos)s, 60) - 1) r,
  unnest(ARRAY['claude-sonnet', 'gpt-codex']) m;
INSERT INTO orchestration_dailyusage (date, spawns, iterations)
SELECT (%(now)s - make_interval(days => d))::date, 100 + floor(random() * 4900)::int,
  100 + floor(random() * 19900)::int
FROM generate_series(0, %(days)s - 1) d;
"""


def unfinished_counts(items: int) -> dict[str, int]:
    """The unfinished set: bounded by the queue limits, not by the history's size."""
    return {
        "queued": min(500, items // 20),
        "in_progress": min(20, items // 500),
        "generating": min(10, items // 1000),
        "assigned": min(5, items // 2000),
        "paused": min(5, items // 2000),
    }


def _superuser(cursor: Any) -> bool:
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    row = cursor.fetchone()
    return bool(row and row[0])


def seed(
    *,
    items: int,
    days: int = 30,
    repos: int = 200,
    now: dt.datetime | None = None,
    random_seed: float = 0.12,
) -> dict[str, int]:
    """Empty the item tables and generate ``items`` work items with their history; returns
    how many rows went into each table. Runs on Django's default connection (a test's
    transaction, or the bench's scratch database)."""
    params: dict[str, Any] = {"items": items, "days": days, "repos": repos}
    params["now"] = now or dt.datetime.now(dt.UTC)
    # The unfinished statuses by index range: item i < bound[status] has that status.
    bound = 0
    for status, count in unfinished_counts(items).items():
        bound += count
        params[status] = bound
    counts: dict[str, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(ITEM_TABLES)}")
        fast = _superuser(cursor)
        if fast:
            # Generated rows are consistent by construction: skip the per-row foreign-key
            # checks (minutes at a million) and the tally triggers, rebuilt in one pass below.
            cursor.execute("SET LOCAL session_replication_role = replica")
        # Indexes are built once at the end (a sorted build), not row by row: ten times faster.
        indexes = _drop_indexes(cursor)
        cursor.execute("SELECT setseed(%s)", [random_seed])
        cursor.execute(DRAWS, params)
        for name, sql in (
            ("items", ITEMS),
            ("workers", WORKERS),
            ("events", EVENTS),
            ("metrics", METRICS),
        ):
            cursor.execute(sql, params)
            counts[name] = cursor.rowcount
        cursor.execute(LEDGER, params)
        cursor.execute("DROP TABLE seed_item")
        for definition in indexes:
            cursor.execute(definition)
        if fast:
            cursor.execute("SET LOCAL session_replication_role = origin")
            tallies_rebuild(cursor)
    return counts


SEEDED = (
    "orchestration_workitem",
    "orchestration_worker",
    "orchestration_workitemevent",
    "orchestration_workermetrics",
)


def _drop_indexes(cursor: Any) -> list[str]:
    """Drop the seeded tables' plain indexes (not those behind a constraint); return the
    statements that recreate them."""
    cursor.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        """,
        [list(SEEDED)],
    )
    rows = cursor.fetchall()
    for name, _definition in rows:
        cursor.execute(f'DROP INDEX "{name}"')
    return [definition for _name, definition in rows]


def tallies_rebuild(cursor: Any) -> None:
    """The item tallies from the rows (the migration's function; a no-op before it)."""
    cursor.execute("SELECT to_regprocedure('whim_tallies_rebuild()') IS NOT NULL")
    row = cursor.fetchone()
    if row and row[0]:
        cursor.execute("SELECT whim_tallies_rebuild()")


def vacuum_analyze() -> None:
    """What autovacuum would have done to a long-lived history: statistics for the planner
    and a visibility map for index-only scans. Outside any transaction (the bench only)."""
    with connection.cursor() as cursor:
        for table in ITEM_TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
