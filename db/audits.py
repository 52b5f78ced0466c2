"""What every end-of-run audit is made of: checks, what the agents were told, and the context
an audit runs in. The audits themselves live beside their tools in tasks/.

Each check compares what the harness acknowledged with what the servers hold, and says what
it expected and what it observed, so a failed audit tells the user where to look.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import redis
from psycopg import sql

from db.op_ids import OpIds
from db.redis_keys import RedisKeys

__all__ = ["ANOMALIES", "SHOW_AT_MOST", "Check", "Acknowledged", "AuditContext", "copy_outcomes", "identities_in_table",
           "listing", "listing_ids"]

# The ids or rows a check's detail names at most.
SHOW_AT_MOST = 5

# What the audits count as anomalies; the report always shows them all (0 when none was seen).
ANOMALIES = (
    "lost_updates",
    "write_skew",
    "lost_jobs",
    "duplicate_jobs",
    "priority_inversions",
    "fifo_violations",
    "capacity_overshoots",
    "unacknowledged_jobs",
    "cross_service_mismatches",
    "failed_but_applied",
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: Any
    observed: Any
    detail: str = ""
    # The report's anomaly this check counts, e.g. "lost_updates", and how many it found.
    anomaly: str | None = None
    anomaly_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Acknowledged:
    """What the harness told its agents, by operation id, in Jepsen's three outcomes: succeeded
    (ok: COMMIT returned), failed (fail: rolled back or refused, never applied; `rejected` is the
    part a full queue refused) and indeterminate (info: the connection was lost during COMMIT,
    the server may or may not have applied it)."""

    succeeded: OpIds = field(default_factory=OpIds)
    failed: OpIds = field(default_factory=OpIds)
    indeterminate: OpIds = field(default_factory=OpIds)
    rejected: OpIds = field(default_factory=OpIds)


@dataclass(frozen=True)
class AuditContext:
    """What an audit gets: the coordinator's autocommit session, Redis, and what the harness
    acknowledged for the tools the audit covers."""

    conn: psycopg.Connection
    schema: str
    redis: redis.Redis
    keys: RedisKeys
    acknowledged_of: Callable[[Collection[str]], Acknowledged]  # by tool names
    # Adds a measurement only the servers' data holds to the run's distributions (name, seconds).
    observe: Callable[[str, float], None]
    # What each load process saw when it stopped (its pool's state, ...).
    findings: list[dict[str, Any]] = field(default_factory=list)


def identities_in_table(conn: psycopg.Connection, table: str, acknowledged: Acknowledged, *,
                        present: str, within: str, failed: str, lost_anomaly: str | None = None) -> list[Check]:
    """Compare the set of op_ids in `table` with the calls' outcomes (inside a transaction):

    - `present`: every succeeded call is in the table exactly once (else lost, or applied twice;
      the lost ones count as `lost_anomaly`, if given);
    - `within`: every row belongs to a succeeded or indeterminate call (else invented; a row with
      no op_id, an entry no call wrote, is one too);
    - `failed`: no call reported failed is in the table (a failure that was applied).
    """
    copy_outcomes(conn, acknowledged)
    found = conn.execute(
        sql.SQL(
            """WITH stored AS (SELECT op_id, count(*) AS times FROM {0} WHERE op_id IS NOT NULL GROUP BY op_id),
                    told AS (SELECT op_id, min(outcome) AS outcome, count(*) AS times
                             FROM harness_outcomes GROUP BY op_id)
               SELECT (array_agg(op_id) FILTER (WHERE t.outcome = 'succeeded' AND s.op_id IS NULL))[1:%(n)s],
                      count(*) FILTER (WHERE t.outcome = 'succeeded' AND s.op_id IS NULL),
                      (array_agg(op_id) FILTER (WHERE s.times > 1))[1:%(n)s],
                      count(*) FILTER (WHERE s.times > 1),
                      (array_agg(op_id) FILTER (WHERE t.op_id IS NULL))[1:%(n)s],
                      count(*) FILTER (WHERE t.op_id IS NULL),
                      (array_agg(op_id) FILTER (WHERE t.outcome = 'failed' AND s.op_id IS NOT NULL))[1:%(n)s],
                      count(*) FILTER (WHERE t.outcome = 'failed' AND s.op_id IS NOT NULL),
                      count(*) FILTER (WHERE t.outcome = 'indeterminate' AND s.op_id IS NOT NULL),
                      count(*) FILTER (WHERE t.times > 1),
                      (SELECT count(*) FROM {0} WHERE op_id IS NULL)
               FROM told t FULL JOIN stored s USING (op_id)"""
        ).format(sql.Identifier(table)),
        {"n": SHOW_AT_MOST},
    ).fetchone()
    lost_ids, lost, twice_ids, twice, unknown_ids, unknown, applied_ids, applied, maybe, told_twice, no_id = found
    succeeded = len(acknowledged.succeeded)
    detail = f"every succeeded call is in {table} exactly once"
    if lost:
        detail = f"lost: {listing_ids(lost_ids or [], lost)}"
    if twice:
        detail += f"; applied more than once: {listing_ids(twice_ids or [], twice)}"
    if told_twice:
        detail += f"; {told_twice} operation ids were reported more than once"
    within_detail = (f"{unknown} {table} rows belong to no call the harness made: {listing_ids(unknown_ids or [], unknown)}"
                     if unknown else f"every {table} row belongs to a succeeded call, or to one of the"
                     f" {len(acknowledged.indeterminate)} indeterminate ones ({maybe} of which were applied)")
    if no_id:
        within_detail = f"{no_id} {table} rows of no operation id" + (f"; {within_detail}" if unknown else "")
    return [
        Check(present, not (lost or twice or told_twice), succeeded, succeeded - lost, detail,
              anomaly=lost_anomaly, anomaly_count=lost if lost_anomaly else 0),
        Check(within, not (unknown or no_id), 0, unknown + no_id, within_detail),
        Check(failed, not applied, 0, applied,
              f"applied although reported failed: {listing_ids(applied_ids or [], applied)}" if applied
              else f"none of the {len(acknowledged.failed)} calls reported failed is in {table}",
              anomaly="failed_but_applied", anomaly_count=applied),
    ]


def copy_outcomes(conn: psycopg.Connection, acknowledged: Acknowledged) -> None:
    """The calls' ids and outcomes into a temporary table harness_outcomes (op_id, outcome: succeeded,
    failed or indeterminate), inside a transaction, by binary COPY of their raw bytes (a
    uuid's binary form is its 16 bytes, so they go as bytea and land as uuid)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS harness_outcomes (op_id uuid, outcome text) ON COMMIT DROP")
    conn.execute("TRUNCATE harness_outcomes")
    with conn.cursor().copy("COPY harness_outcomes (op_id, outcome) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["bytea", "text"])
        for outcome, op_ids in (("succeeded", acknowledged.succeeded), ("failed", acknowledged.failed),
                                ("indeterminate", acknowledged.indeterminate)):
            for raw in op_ids.raw():
                copy.write_row((raw, outcome))


def listing_ids(op_ids: Collection[Any], total: int | None = None) -> str:
    """A few of `op_ids` (of `total` in all) for a check's detail."""
    shown = sorted(map(str, op_ids))[:SHOW_AT_MOST]
    total = len(op_ids) if total is None else total
    return ", ".join(shown) + (f" … ({total} in all)" if total > len(shown) else "")


def listing(template: str, rows: Iterable[tuple[Any, ...]]) -> str:
    rows = list(rows)
    shown = "; ".join(template.format(*row) for row in rows[:SHOW_AT_MOST])
    return shown + (" …" if len(rows) > SHOW_AT_MOST else "")
