"""What every end-of-run audit is made of: checks, what the agents were told, and the context
an audit runs in. The audits themselves live beside their tools in tasks/.

Each check compares what the harness acknowledged with what the servers hold, and says what
it expected and what it observed, so a failed audit tells the user where to look.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import redis
from psycopg import sql

from db.op_ids import OpIds
from db.redis_keys import RedisKeys
from db.rows import one_row

__all__ = ["ANOMALIES", "SHOW_AT_MOST", "Check", "Acknowledged", "AuditContext", "Baseline", "OpIdsNotStored",
           "copy_outcomes", "identities_in_table", "listing", "listing_ids", "rows_match_values"]

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
    "stale_writes",
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
    # Judged by the identities of this run's own calls alone (their rows there, absent, or as they
    # wrote them), so it keeps its meaning on data earlier runs wrote to: a capacity probe on kept
    # data judges these and no other check (harness.run.capacity). Not part of the report's check.
    scoped: bool = False


class OpIdsNotStored(Exception):
    """What the run's calls wrote (a table's rows, the queue's jobs or consumers) is there, but
    carries none of their op ids, or the table has no `op_id` column: whoever wrote it did not
    store toolclash's op id (an MCP server not told to), so the calls cannot be compared with it by
    identity. Raised instead of checks that would fail as if every call's write were lost, or hold
    on nothing."""

    @classmethod
    def none_of(cls, held: str, calls: str) -> OpIdsNotStored:
        """`held` (e.g. "the 4 rows of bookings") carries the op id of none of `calls` (e.g.
        "this run's 4 calls that wrote there")."""
        return cls(f"none of {held} carries the op id of one of {calls}")


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
class Baseline:
    """The state a run starts from, as the harness seeds it from the options: what the audits
    compare the servers' data with. Never read back from the tables they audit, so a row added,
    removed or rewritten there outside a tool call is found."""

    accounts: int  # ids 1..accounts
    initial_balance: int  # each account's
    counters: int  # ids 1..counters, each at 0
    teams: int  # plans 1..teams, each at version 0
    queue_capacity: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class AuditContext:
    """What an audit gets: the coordinator's autocommit session, Redis, and what the harness
    acknowledged for the tools the audit covers."""

    conn: psycopg.Connection
    schema: str
    redis: redis.Redis
    keys: RedisKeys
    acknowledged_of: Callable[[Collection[str]], Acknowledged]  # by tool names
    baseline: Baseline
    # Adds a measurement only the servers' data holds to the run's distributions (name, seconds).
    observe: Callable[[str, float], None]
    # What each load process saw when it stopped (its pool's state, ...).
    findings: list[dict[str, Any]] = field(default_factory=list)
    # What the reader must know of the audit but no check fails on ({kind, detail}: the relay
    # applied charges their agents could not); they join the report's evidence notes.
    notes: list[dict[str, str]] = field(default_factory=list)
    # The tools an audit asked for but could not compare by identity (their op ids are not in the
    # servers' data: OpIdsNotStored): the report lists them as not audited by identity all the same.
    not_by_identity: set[str] = field(default_factory=set)

    def note(self, kind: str, detail: str) -> None:
        self.notes.append({"kind": kind, "detail": detail})

    @contextmanager
    def in_schema(self, *, one_snapshot: bool = False) -> Iterator[psycopg.Connection]:
        """A transaction on the audit's session with the run's schema on its search path;
        `one_snapshot`: at repeatable read, so that every check read in it agrees with the others."""
        with self.conn.transaction():
            if one_snapshot:
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self.conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema)))
            yield self.conn

    def check_writes(self, table: str, tools: Collection[str], *, wrote: str = "true",
                     columns: Mapping[str, str] | None = None) -> list[Check]:
        """For a user's tools: the identity checks of the built-in ones, on `table` of the run's
        schema, whose rows carry the writing call's `tx.op_id` in an `op_id` column (written in
        the call's own transaction). Every succeeded call that wrote has its row, every row is a
        succeeded or indeterminate call's, no failed call's row is there (see identities_in_table
        for `wrote`); with `columns` ({column: key of the call's value}), each row holds what its
        call returned it wrote. Asking marks `tools` as audited by identity, unless the table holds
        none of their op ids (OpIdsNotStored): then no check is made, the tools are listed as not
        audited by identity, and a note (`op_ids_not_stored`) says why."""
        try:
            with self.in_schema():
                checks = identities_in_table(self.conn, table, self.acknowledged_of(tools),
                                             present=f"{table}_written", within=f"{table}_within_acknowledged",
                                             failed=f"{table}_not_of_failed_calls", wrote=wrote)
                if columns:
                    checks.append(rows_match_values(self.conn, table, columns, name=f"{table}_as_written"))
        except OpIdsNotStored as exc:
            self.not_by_identity.update(tools)
            self.note("op_ids_not_stored", f"{exc}: the server that wrote them does not store toolclash's op id,"
                                           f" so the calls of {', '.join(sorted(tools))} cannot be compared with them"
                                           " by identity (store each call's op id in its tool's own transaction:"
                                           " docs/mcp.md, your own server)")
            return []
        return checks


def identities_in_table(conn: psycopg.Connection, table: str, acknowledged: Acknowledged, *,
                        present: str, within: str, failed: str, lost_anomaly: str | None = None,
                        wrote: str = "true") -> list[Check]:
    """Compare the set of op_ids in `table` with the calls' outcomes (inside a transaction):

    - `present`: every succeeded call that wrote is in the table exactly once (else lost, or
      applied twice; the lost ones count as `lost_anomaly`, if given); a row twice that is of no
      call is `within`'s;
    - `within`: every row belongs to a succeeded or indeterminate call that wrote (else
      invented; a row with no op_id, an entry no call wrote, is one too);
    - `failed`: no call reported failed is in the table (a failure that was applied).

    `wrote` is an SQL condition on the call's value (`value`, jsonb: what its tool returned)
    that says whether the call writes a row here, for a tool that may decide not to (e.g.
    "(value->>'wrote')::boolean"); by default every call writes one. "Applied more than once"
    is looked for only where the table lets it happen: not under a unique index on op_id alone.

    OpIdsNotStored when the table has no `op_id` column, or holds rows while none carries the op
    id of one of the calls and some succeeded call wrote there: the op ids were not stored, and
    no check can say whether a call's row is there. (An empty table after succeeded writes fails
    `present`: every row lost.)

    `present` and `failed` ask only of the calls' own op ids: they are `scoped`. `within` asks of
    every row, so it needs to know all a table held before the calls: on kept data it is not judged.
    """
    if not _has_op_id_column(conn, table):
        raise OpIdsNotStored(f"{table} has no op_id column")
    copy_outcomes(conn, acknowledged)
    unique = _op_id_is_unique(conn, table)
    found = one_row(conn.execute(
        sql.SQL(
            """WITH stored AS (SELECT op_id, count(*) AS times FROM {0} WHERE op_id IS NOT NULL GROUP BY op_id),
                    told AS (SELECT op_id, min(outcome) AS outcome, count(*) AS times,
                                    bool_or(coalesce({1}, false)) AS wrote
                             FROM (SELECT op_id, outcome, value::jsonb AS value FROM harness_outcomes) h
                             GROUP BY op_id)
               SELECT (array_agg(op_id) FILTER (WHERE t.outcome = 'succeeded' AND t.wrote
                                                AND s.op_id IS NULL))[1:%(n)s],
                      count(*) FILTER (WHERE t.outcome = 'succeeded' AND t.wrote AND s.op_id IS NULL),
                      (array_agg(op_id) FILTER (WHERE s.times > 1 AND t.op_id IS NOT NULL))[1:%(n)s],
                      count(*) FILTER (WHERE s.times > 1 AND t.op_id IS NOT NULL),
                      (array_agg(op_id) FILTER (WHERE s.op_id IS NOT NULL AND (t.op_id IS NULL
                                                OR (t.outcome <> 'failed' AND NOT t.wrote))))[1:%(n)s],
                      count(*) FILTER (WHERE s.op_id IS NOT NULL AND (t.op_id IS NULL
                                       OR (t.outcome <> 'failed' AND NOT t.wrote))),
                      (array_agg(op_id) FILTER (WHERE t.outcome = 'failed' AND s.op_id IS NOT NULL))[1:%(n)s],
                      count(*) FILTER (WHERE t.outcome = 'failed' AND s.op_id IS NOT NULL),
                      count(*) FILTER (WHERE t.outcome = 'indeterminate' AND s.op_id IS NOT NULL),
                      count(*) FILTER (WHERE t.times > 1),
                      count(*) FILTER (WHERE t.outcome = 'succeeded' AND t.wrote),
                      (SELECT count(*) FROM {0} WHERE op_id IS NULL),
                      count(*) FILTER (WHERE s.op_id IS NOT NULL AND t.op_id IS NOT NULL),
                      coalesce(sum(s.times), 0)
               FROM told t FULL JOIN stored s USING (op_id)"""
        ).format(sql.Identifier(table), sql.SQL(wrote)),
        {"n": SHOW_AT_MOST},
    ))
    (lost_ids, lost, twice_ids, twice, unknown_ids, unknown, applied_ids, applied, maybe, told_twice, writes,
     no_id, of_calls, with_id) = found
    if writes and not of_calls and (rows := no_id + int(with_id)):
        raise OpIdsNotStored.none_of(f"the {rows} rows of {table}", f"this run's {writes} calls that wrote there")
    detail = f"every succeeded call that wrote is in {table} exactly once" if not unique else \
        f"every succeeded call that wrote is in {table} (once: op_id is unique there)"
    if lost:
        detail = f"lost: {listing_ids(lost_ids or [], lost)}"
    if twice:
        detail += f"; applied more than once: {listing_ids(twice_ids or [], twice)}"
    if told_twice:
        detail += f"; {told_twice} operation ids were reported more than once"
    within_detail = (f"{unknown} {table} rows belong to no call the harness made or to a call that wrote none:"
                     f" {listing_ids(unknown_ids or [], unknown)}"
                     if unknown else f"every {table} row belongs to a succeeded call that wrote, or to one of the"
                     f" {len(acknowledged.indeterminate)} indeterminate ones ({maybe} of which were applied)")
    if no_id:
        within_detail = f"{no_id} {table} rows of no operation id" + (f"; {within_detail}" if unknown else "")
    return [
        Check(present, not (lost or twice or told_twice), writes, writes - lost, detail,
              anomaly=lost_anomaly, anomaly_count=lost if lost_anomaly else 0, scoped=True),
        Check(within, not (unknown or no_id), 0, unknown + no_id, within_detail),
        Check(failed, not applied, 0, applied,
              f"applied although reported failed: {listing_ids(applied_ids or [], applied)}" if applied
              else f"none of the {len(acknowledged.failed)} calls reported failed is in {table}",
              anomaly="failed_but_applied", anomaly_count=applied, scoped=True),
    ]


def rows_match_values(conn: psycopg.Connection, table: str, columns: Mapping[str, str], *, name: str) -> Check:
    """Every row of `table` that belongs to a call the harness knows holds what that call said
    it wrote: for each (column, key) of `columns`, the row's column = the call's value[key]
    (compared as text; JSON null = SQL NULL). An indeterminate call without a value (over MCP, a
    reply lost: what the tool returned never came) has nothing to compare its row with; its
    identity is still judged. Inside the transaction of an identities_in_table (whose copy of
    the outcomes it reads)."""
    differs = sql.SQL(" OR ").join(
        sql.SQL("t.{}::text IS DISTINCT FROM (h.value::jsonb ->> {})").format(sql.Identifier(column), sql.Literal(key))
        for column, key in columns.items()
    )
    ids, count, compared, unknown = one_row(conn.execute(
        sql.SQL("""SELECT (array_agg(t.op_id) FILTER (WHERE ({1}) AND h.known))[1:%(n)s],
                          count(*) FILTER (WHERE ({1}) AND h.known), count(*) FILTER (WHERE h.known),
                          count(*) FILTER (WHERE NOT h.known)
                   FROM {0} t JOIN (SELECT op_id, value, outcome = 'succeeded' OR value <> 'null' AS known
                                    FROM harness_outcomes WHERE outcome <> 'failed') h ON h.op_id = t.op_id"""
                ).format(sql.Identifier(table), differs),
        {"n": SHOW_AT_MOST},
    ))
    what = ", ".join(columns)
    not_compared = (f"; {unknown} rows of indeterminate calls whose value never came not compared" if unknown
                    else "")
    return Check(name, not count, 0, count,
                 (f"{table} rows whose {what} differ from what their call wrote: {listing_ids(ids or [], count)}"
                  if count else f"each of the {compared} {table} rows of a call holds the {what} that call wrote")
                 + not_compared, scoped=True)


def _has_op_id_column(conn: psycopg.Connection, table: str) -> bool:
    """Whether `table` (which exists: a missing table fails the audit as such) has an op_id column."""
    has: bool = one_row(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'op_id'"
        " AND NOT attisdropped) OR to_regclass(%s) IS NULL",
        (table, table),
    ))[0]
    return has


def _op_id_is_unique(conn: psycopg.Connection, table: str) -> bool:
    """Whether a unique index on op_id alone keeps `table` from holding an op_id twice."""
    unique: bool = one_row(conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                          AND a.attnum = i.indkey[0]
                          WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indnkeyatts = 1
                          AND a.attname = 'op_id')""",
        (table,),
    ))[0]
    return unique


def copy_outcomes(conn: psycopg.Connection, acknowledged: Acknowledged) -> None:
    """The calls' ids, outcomes and values into a temporary table harness_outcomes (op_id,
    outcome: succeeded, failed or indeterminate; value: the JSON text of what the call's tool
    returned), inside a transaction, by binary COPY (a uuid's binary form is its 16 bytes, so
    they go as bytea and land as uuid)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS harness_outcomes (op_id uuid, outcome text, value text)"
                 " ON COMMIT DROP")
    conn.execute("TRUNCATE harness_outcomes")
    with conn.cursor().copy("COPY harness_outcomes (op_id, outcome, value) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["bytea", "text", "text"])
        for outcome, op_ids in (("succeeded", acknowledged.succeeded), ("failed", acknowledged.failed),
                                ("indeterminate", acknowledged.indeterminate)):
            for raw, value in op_ids.raw_with_values():
                copy.write_row((raw, outcome, value))


def listing_ids(op_ids: Collection[Any], total: int | None = None) -> str:
    """A few of `op_ids` (of `total` in all) for a check's detail."""
    shown = sorted(map(str, op_ids))[:SHOW_AT_MOST]
    total = len(op_ids) if total is None else total
    return ", ".join(shown) + (f" … ({total} in all)" if total > len(shown) else "")


def listing(template: str, rows: Iterable[tuple[Any, ...]]) -> str:
    rows = list(rows)
    shown = "; ".join(template.format(*row) for row in rows[:SHOW_AT_MOST])
    return shown + (" …" if len(rows) > SHOW_AT_MOST else "")
