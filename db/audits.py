"""What every end-of-run audit is made of: checks, what the agents were told, and the context
an audit runs in. The audits themselves live beside their tools in tasks/.

Each check compares what the harness acknowledged with what the servers hold, and says what
it expected and what it observed, so a failed audit tells the user where to look.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import redis
from psycopg import sql

from db.redis_keys import RedisKeys

__all__ = ["ANOMALIES", "Check", "Acknowledged", "AuditContext", "acknowledged_in_table", "listing", "rows_within_acknowledged"]

_SHOW_AT_MOST = 5

# What the audits count as anomalies; the report always shows them all (0 when none was seen).
ANOMALIES = (
    "lost_updates",
    "write_skew",
    "lost_jobs",
    "duplicate_jobs",
    "priority_inversions",
    "capacity_overshoots",
    "cross_service_mismatches",
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
    """What the harness told its agents: these operations succeeded, these may have."""

    succeeded_op_ids: list[uuid.UUID]
    indeterminate: int
    rejected_op_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class AuditContext:
    """What an audit gets: the coordinator's autocommit session, Redis, and what the harness
    acknowledged for the tools the audit covers."""

    conn: psycopg.Connection
    schema: str
    redis: redis.Redis
    keys: RedisKeys
    acknowledged_of: Callable[[Collection[str]], Acknowledged]  # by tool names
    # What each load process saw when it stopped (its pool's state, ...).
    findings: list[dict[str, Any]] = field(default_factory=list)


def acknowledged_in_table(conn: psycopg.Connection, name: str, table: str, succeeded: list[uuid.UUID]) -> Check:
    """Every acknowledged operation id is in `table`'s op_id column (inside a transaction)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS acknowledged (op_id uuid) ON COMMIT DROP")
    conn.execute("TRUNCATE acknowledged")
    with conn.cursor().copy("COPY acknowledged (op_id) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["uuid"])
        for op_id in succeeded:
            copy.write_row((op_id,))
    missing = conn.execute(
        sql.SQL("SELECT a.op_id FROM acknowledged a LEFT JOIN {} l USING (op_id) WHERE l.op_id IS NULL LIMIT %s").format(
            sql.Identifier(table)
        ),
        (_SHOW_AT_MOST,),
    ).fetchall()
    missing_count, repeated = conn.execute(
        sql.SQL(
            """SELECT count(*) FILTER (WHERE l.op_id IS NULL),
                  (SELECT count(*) - count(DISTINCT op_id) FROM acknowledged)
           FROM acknowledged a LEFT JOIN {} l USING (op_id)"""
        ).format(sql.Identifier(table))
    ).fetchone()
    found = len(succeeded) - missing_count
    detail = f"every acknowledged operation is in {table} exactly once"
    if missing:
        detail = "lost: " + ", ".join(str(r[0]) for r in missing) + (" …" if missing_count > len(missing) else "")
    if repeated:
        detail += f"; {repeated} operation ids were acknowledged more than once"
    return Check(name, missing_count == 0 and repeated == 0, len(succeeded), found, detail)


def rows_within_acknowledged(conn: psycopg.Connection, name: str, table: str, acknowledged: Acknowledged) -> Check:
    """succeeded <= rows of `table` <= succeeded + indeterminate, with no op_id twice: nothing
    invented, nothing counted twice."""
    rows, distinct = conn.execute(
        sql.SQL("SELECT count(*), count(DISTINCT op_id) FROM {}").format(sql.Identifier(table))
    ).fetchone()
    low = len(acknowledged.succeeded_op_ids)
    high = low + acknowledged.indeterminate
    detail = f"{table} rows lie between succeeded and succeeded + indeterminate"
    if rows != distinct:
        detail = f"{rows - distinct} operations appear more than once in {table}"
    elif rows > high:
        detail = f"{rows - high} {table} rows belong to no operation the harness acknowledged"
    return Check(name, low <= rows <= high and rows == distinct, [low, high], rows, detail)


def listing(template: str, rows: Iterable[tuple[Any, ...]]) -> str:
    rows = list(rows)
    shown = "; ".join(template.format(*row) for row in rows[:_SHOW_AT_MOST])
    return shown + (" …" if len(rows) > _SHOW_AT_MOST else "")
