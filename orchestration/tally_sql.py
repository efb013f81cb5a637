"""The SQL behind the tallies (``orchestration.tallies``): triggers that append deltas,
``whim_tallies_rebuild()`` (recount from the rows) and ``whim_tallies_compact()`` (fold the
deltas into one row per key). Installed by migration 0011; kept here so that a later
migration that must change them can import the text instead of copying it.
"""

from __future__ import annotations

# table → (tally table, key columns of the source row, tally columns they go to, the values
# one source row adds). A source row adds ``+value`` on insert, ``-value`` on delete.
_ITEM_KEY = "repo, type, status, priority, verification_passed"
_ITEM_TALLY = "orchestration_itemtally (repo, type, status, priority, verdict, n)"
_WORKER_TALLY = "orchestration_workertally (status, n)"
_METRICS_TALLY = (
    "orchestration_metricstally (n, tokens_in, tokens_out, reported_usd, unpriced_in, unpriced_out)"
)


_FINISHED_TALLY = "orchestration_finishedtally (bucket, type, status, n, took_us)"
_FLOW_TALLY = "orchestration_queueflowtally (bucket, entered, exited)"
# The quarter hour a moment falls in (every time zone's midnight is on one).
BIN = "date_bin('15 minutes', {0}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
_TOOK = "(extract(epoch FROM {0}completed_at - {0}created_at) * 1000000)::bigint"
# The waiting states (WorkItem.PENDING) as the queue-flow triggers test them.
_PENDING = "('generating', 'queued')"


def _item_rows(rows: str, sign: str) -> str:
    """Per repository, and for every repository at once (repo ''): the pages' unfiltered
    counts sum a few hundred rows, not one per repository."""
    return (
        f"INSERT INTO {_ITEM_TALLY} SELECT coalesce(repo, ''), type, status, priority, "
        f"verification_passed, {sign}count(*) FROM {rows} GROUP BY GROUPING SETS "
        f"(({_ITEM_KEY}), (type, status, priority, verification_passed))"
    )


def _finished_rows(rows: str, sign: str) -> str:
    return (
        f"INSERT INTO {_FINISHED_TALLY} SELECT {BIN.format('completed_at')}, type, status, "
        f"{sign}count(*), {sign}sum({_TOOK.format('')}) FROM {rows} "
        f"WHERE completed_at IS NOT NULL GROUP BY 1, 2, 3"
    )


def _flow_rows(rows: str, sign: str) -> str:
    return (
        f"INSERT INTO {_FLOW_TALLY} SELECT {BIN.format('created_at')}, "
        f"{sign}count(*) FILTER (WHERE to_status IN {_PENDING} "
        f"AND from_status NOT IN {_PENDING}), "
        f"{sign}count(*) FILTER (WHERE from_status IN {_PENDING} "
        f"AND to_status NOT IN {_PENDING} AND to_status <> '') "
        f"FROM {rows} WHERE to_status IN {_PENDING} OR from_status IN {_PENDING} GROUP BY 1"
    )


def _metrics_sums(rows: str, sign: str) -> str:
    return (
        f"SELECT {sign}count(*), {sign}coalesce(sum(tokens_in), 0), "
        f"{sign}coalesce(sum(tokens_out), 0), "
        f"{sign}coalesce(sum(cost_usd) FILTER (WHERE cost_usd > 0), 0), "
        f"{sign}coalesce(sum(tokens_in) FILTER (WHERE cost_usd <= 0), 0), "
        f"{sign}coalesce(sum(tokens_out) FILTER (WHERE cost_usd <= 0), 0) FROM {rows} "
        "HAVING count(*) > 0"
    )


def _statement_triggers(table: str, name: str, insert_sql: str, delete_sql: str) -> str:
    """AFTER INSERT / DELETE statement triggers (one delta row per key and statement) and a
    TRUNCATE trigger that empties the tally with its table."""
    return f"""
CREATE FUNCTION whim_{name}_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {insert_sql}; RETURN NULL; END $$;
CREATE FUNCTION whim_{name}_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {delete_sql}; RETURN NULL; END $$;
CREATE FUNCTION whim_{name}_tally_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN DELETE FROM orchestration_{name}tally; RETURN NULL; END $$;
CREATE TRIGGER whim_{name}_tally_insert AFTER INSERT ON {table}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION whim_{name}_tally_insert();
CREATE TRIGGER whim_{name}_tally_delete AFTER DELETE ON {table}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
  EXECUTE FUNCTION whim_{name}_tally_delete();
CREATE TRIGGER whim_{name}_tally_truncate AFTER TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION whim_{name}_tally_truncate();
"""


def _row_update_trigger(table: str, name: str, columns: str, body: str) -> str:
    """An UPDATE that changes ``columns`` moves the row between keys: -old, +new. The WHEN
    clause is evaluated without calling the function, so a heartbeat's UPDATE costs nothing."""
    olds = ", ".join(f"OLD.{c.strip()}" for c in columns.split(","))
    news = ", ".join(f"NEW.{c.strip()}" for c in columns.split(","))
    return f"""
CREATE FUNCTION whim_{name}_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {body}; RETURN NULL; END $$;
CREATE TRIGGER whim_{name}_tally_update AFTER UPDATE OF {columns} ON {table}
  FOR EACH ROW WHEN (({olds}) IS DISTINCT FROM ({news}))
  EXECUTE FUNCTION whim_{name}_tally_update();
"""


INSTALL = (
    _statement_triggers(
        "orchestration_workitem",
        "item",
        _item_rows("new_rows", ""),
        _item_rows("old_rows", "-"),
    )
    + _row_update_trigger(
        "orchestration_workitem",
        "item",
        _ITEM_KEY,
        f"INSERT INTO {_ITEM_TALLY} VALUES "
        "(OLD.repo, OLD.type, OLD.status, OLD.priority, OLD.verification_passed, -1), "
        "('', OLD.type, OLD.status, OLD.priority, OLD.verification_passed, -1), "
        "(NEW.repo, NEW.type, NEW.status, NEW.priority, NEW.verification_passed, 1), "
        "('', NEW.type, NEW.status, NEW.priority, NEW.verification_passed, 1)",
    )
    + _statement_triggers(
        "orchestration_worker",
        "worker",
        f"INSERT INTO {_WORKER_TALLY} SELECT status, count(*) FROM new_rows GROUP BY status",
        f"INSERT INTO {_WORKER_TALLY} SELECT status, -count(*) FROM old_rows GROUP BY status",
    )
    + _row_update_trigger(
        "orchestration_worker",
        "worker",
        "status",
        f"INSERT INTO {_WORKER_TALLY} VALUES (OLD.status, -1), (NEW.status, 1)",
    )
    + _statement_triggers(
        "orchestration_workermetrics",
        "metrics",
        f"INSERT INTO {_METRICS_TALLY} {_metrics_sums('new_rows', '')}",
        f"INSERT INTO {_METRICS_TALLY} {_metrics_sums('old_rows', '-')}",
    )
    + _row_update_trigger(
        "orchestration_workermetrics",
        "metrics",
        "tokens_in, tokens_out, cost_usd",
        f"INSERT INTO {_METRICS_TALLY} "
        f"{_metrics_sums('(SELECT OLD.tokens_in, OLD.tokens_out, OLD.cost_usd) o', '-')}; "
        f"INSERT INTO {_METRICS_TALLY} "
        f"{_metrics_sums('(SELECT NEW.tokens_in, NEW.tokens_out, NEW.cost_usd) o', '')}",
    )
    + _statement_triggers(
        "orchestration_workitem",
        "finished",
        _finished_rows("new_rows", ""),
        _finished_rows("old_rows", "-"),
    )
    + _row_update_trigger(
        "orchestration_workitem",
        "finished",
        "completed_at, status, type, created_at",
        f"IF OLD.completed_at IS NOT NULL THEN INSERT INTO {_FINISHED_TALLY} VALUES "
        f"({BIN.format('OLD.completed_at')}, OLD.type, OLD.status, -1, "
        f"-{_TOOK.format('OLD.')}); END IF; "
        f"IF NEW.completed_at IS NOT NULL THEN INSERT INTO {_FINISHED_TALLY} VALUES "
        f"({BIN.format('NEW.completed_at')}, NEW.type, NEW.status, 1, "
        f"{_TOOK.format('NEW.')}); END IF",
    )
    + _statement_triggers(
        "orchestration_workitemevent",
        "queueflow",
        _flow_rows("new_rows", ""),
        _flow_rows("old_rows", "-"),
    )
    + f"""
CREATE FUNCTION whim_tallies_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  -- Writers wait while the tallies are recounted (none is lost or counted twice).
  LOCK TABLE orchestration_workitem, orchestration_worker, orchestration_workermetrics,
    orchestration_workitemevent IN SHARE MODE;
  DELETE FROM orchestration_itemtally;
  DELETE FROM orchestration_workertally;
  DELETE FROM orchestration_metricstally;
  DELETE FROM orchestration_finishedtally;
  DELETE FROM orchestration_queueflowtally;
  {_finished_rows("orchestration_workitem", "")};
  {_flow_rows("orchestration_workitemevent", "")};
  {_item_rows("orchestration_workitem", "")};
  INSERT INTO {_WORKER_TALLY} SELECT status, count(*) FROM orchestration_worker GROUP BY status;
  INSERT INTO {_METRICS_TALLY} {_metrics_sums("orchestration_workermetrics", "")};
END $$;

CREATE FUNCTION whim_tallies_compact() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE folded bigint := 0; step bigint;
BEGIN
  -- One compaction at a time (a second would find nothing to fold anyway).
  IF NOT pg_try_advisory_xact_lock(hashtext('whim.tallies.compact')) THEN RETURN 0; END IF;
  -- Rows a concurrent transaction has not committed are invisible here: they stay, and
  -- are folded next time. Readers see the old rows or the folded ones, never a mix.
  WITH gone AS (DELETE FROM orchestration_itemtally RETURNING *),
  kept AS (INSERT INTO {_ITEM_TALLY}
    SELECT repo, type, status, priority, verdict, sum(n) FROM gone
    GROUP BY repo, type, status, priority, verdict HAVING sum(n) <> 0 RETURNING 1)
  SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO step;
  folded := folded + step;
  WITH gone AS (DELETE FROM orchestration_workertally RETURNING *),
  kept AS (INSERT INTO {_WORKER_TALLY} SELECT status, sum(n) FROM gone GROUP BY status
    HAVING sum(n) <> 0 RETURNING 1)
  SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO step;
  folded := folded + step;
  WITH gone AS (DELETE FROM orchestration_metricstally RETURNING *),
  kept AS (INSERT INTO {_METRICS_TALLY}
    SELECT sum(n), sum(tokens_in), sum(tokens_out), sum(reported_usd), sum(unpriced_in),
      sum(unpriced_out) FROM gone HAVING count(*) > 0 AND sum(n) <> 0 RETURNING 1)
  SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO step;
  folded := folded + step;
  WITH gone AS (DELETE FROM orchestration_finishedtally RETURNING *),
  kept AS (INSERT INTO {_FINISHED_TALLY}
    SELECT bucket, type, status, sum(n), sum(took_us) FROM gone GROUP BY bucket, type, status
    HAVING sum(n) <> 0 OR sum(took_us) <> 0 RETURNING 1)
  SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO step;
  folded := folded + step;
  WITH gone AS (DELETE FROM orchestration_queueflowtally RETURNING *),
  kept AS (INSERT INTO {_FLOW_TALLY}
    SELECT bucket, sum(entered), sum(exited) FROM gone GROUP BY bucket
    HAVING sum(entered) <> 0 OR sum(exited) <> 0 RETURNING 1)
  SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO step;
  RETURN folded + step;
END $$;

SELECT whim_tallies_rebuild();
"""
)

UNINSTALL = """
DROP TRIGGER IF EXISTS whim_item_tally_insert ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_item_tally_delete ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_item_tally_update ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_item_tally_truncate ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_worker_tally_insert ON orchestration_worker;
DROP TRIGGER IF EXISTS whim_worker_tally_delete ON orchestration_worker;
DROP TRIGGER IF EXISTS whim_worker_tally_update ON orchestration_worker;
DROP TRIGGER IF EXISTS whim_worker_tally_truncate ON orchestration_worker;
DROP TRIGGER IF EXISTS whim_metrics_tally_insert ON orchestration_workermetrics;
DROP TRIGGER IF EXISTS whim_metrics_tally_delete ON orchestration_workermetrics;
DROP TRIGGER IF EXISTS whim_metrics_tally_update ON orchestration_workermetrics;
DROP TRIGGER IF EXISTS whim_metrics_tally_truncate ON orchestration_workermetrics;
DROP TRIGGER IF EXISTS whim_finished_tally_insert ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_finished_tally_delete ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_finished_tally_update ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_finished_tally_truncate ON orchestration_workitem;
DROP TRIGGER IF EXISTS whim_queueflow_tally_insert ON orchestration_workitemevent;
DROP TRIGGER IF EXISTS whim_queueflow_tally_delete ON orchestration_workitemevent;
DROP TRIGGER IF EXISTS whim_queueflow_tally_truncate ON orchestration_workitemevent;
DROP FUNCTION IF EXISTS whim_tallies_rebuild(), whim_tallies_compact(),
  whim_item_tally_insert(), whim_item_tally_delete(), whim_item_tally_update(),
  whim_item_tally_truncate(), whim_worker_tally_insert(), whim_worker_tally_delete(),
  whim_worker_tally_update(), whim_worker_tally_truncate(), whim_metrics_tally_insert(),
  whim_metrics_tally_delete(), whim_metrics_tally_update(), whim_metrics_tally_truncate(),
  whim_finished_tally_insert(), whim_finished_tally_delete(), whim_finished_tally_update(),
  whim_finished_tally_truncate(), whim_queueflow_tally_insert(), whim_queueflow_tally_delete(),
  whim_queueflow_tally_truncate();
"""
