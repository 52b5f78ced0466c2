"""The isolation scenario: tools written the way that is only safe at the right isolation level.

`increment_counter` reads a counter, works, then writes back value + 1 (a lost update, unless
the level refuses it). `reserve_slot` takes one of two on-call agents off duty after checking
that the other one stays (write skew, unless the level refuses it). PostgreSQL documents what
each level allows: read committed both; repeatable read refuses the lost update (40001) but
allows write skew; serializable allows neither.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg

from db.audits import SHOW_AT_MOST, AuditContext, Check, identities_in_table, listing, listing_ids, rows_match_values
from db.tool import Transaction

__all__ = ["increment_counter", "increment_counter_arguments", "reserve_slot", "audit_isolation"]

# The levels at which PostgreSQL refuses a lost update: there no two committed increments of a
# counter read the same value.
_LEVELS_WITHOUT_LOST_UPDATES = ("repeatable_read", "serializable")


def increment_counter_arguments(rng: random.Random, *, counters: int) -> dict[str, int]:
    """One of the `counters` counters."""
    return {"counter": rng.randint(1, counters)}


def increment_counter(tx: Transaction, *, counter: int) -> dict[str, int]:
    value = tx.execute("SELECT value FROM counters WHERE id = %s", (counter,)).fetchone()[0]
    tx.work()
    tx.execute("UPDATE counters SET value = %s WHERE id = %s", (value + 1, counter))
    tx.execute("INSERT INTO counter_ops (op_id, counter_id, amount) VALUES (%s, %s, 1)", (tx.op_id, counter))
    return {"counter": counter, "read": value}


def reserve_slot(tx: Transaction) -> dict[str, Any]:
    # No arguments: the server deals the pairs. Two calls per pair, one per slot: each pair is
    # raced at most once, so every violation that ever happened is still there for the audit. A
    # retried call takes a fresh pair.
    call = tx.execute("SELECT nextval('duty_pair_calls')").fetchone()[0]
    pair, slot = _scattered(call // 2), call % 2
    off_duty = tx.execute("SELECT count(*) FROM duty_leave WHERE pair_id = %s", (pair,)).fetchone()[0]
    if off_duty:
        # The rule holds: the other agent of the pair is already off, this one stays.
        return {"pair": pair, "slot": slot, "wrote": False}
    tx.work()
    tx.execute("INSERT INTO duty_leave (pair_id, slot, op_id) VALUES (%s, %s, %s)", (pair, slot, tx.op_id))
    return {"pair": pair, "slot": slot, "wrote": True}


def _scattered(pair: int) -> int:
    """Consecutive pairs far apart in the index (a bijection of 32-bit integers): serializable
    isolation tracks reads by index page, and pairs raced side by side on one page would fail
    each other for no real conflict."""
    return (pair * 2654435761) & 0xFFFFFFFF


def audit_isolation(ctx: AuditContext, *, isolation: str) -> list[Check]:
    """The counters against their seeded ids and recorded increments, each table by the calls'
    identities and values, and, at the levels that refuse lost updates, what the increments read."""
    conn = ctx.conn
    counters = ctx.baseline.counters
    with ctx.in_schema(one_snapshot=True):
        seeded = _counters_as_seeded(conn, counters)
        lost_updates = _no_lost_updates(conn, counters)
        skewed = conn.execute(
            "SELECT pair_id FROM duty_leave GROUP BY pair_id HAVING count(*) > 1 ORDER BY pair_id"
        ).fetchall()
        increments = identities_in_table(conn, "counter_ops", ctx.acknowledged_of(["increment_counter"]),
                                         present="increments_in_counter_ops", within="counter_ops_within_acknowledged",
                                         failed="failed_not_in_counter_ops")
        increments.append(rows_match_values(conn, "counter_ops", {"counter_id": "counter"},
                                            name="counter_ops_match_calls"))
        if isolation in _LEVELS_WITHOUT_LOST_UPDATES:
            increments.append(_increment_reads_serial(conn, isolation))
        reservations = identities_in_table(conn, "duty_leave", ctx.acknowledged_of(["reserve_slot"]),
                                           present="reservations_in_duty_leave",
                                           within="duty_leave_within_acknowledged", failed="failed_not_in_duty_leave",
                                           wrote="(value->>'wrote')::boolean")
        reservations.append(rows_match_values(conn, "duty_leave", {"pair_id": "pair", "slot": "slot"},
                                              name="duty_leave_match_calls"))
    return [
        seeded,
        lost_updates,
        Check("no_write_skew", not skewed, 0, len(skewed),
              ("both agents off duty in pairs " + ", ".join(str(p[0]) for p in skewed[:5])) if skewed
              else "every pair kept one agent on duty", anomaly="write_skew", anomaly_count=len(skewed)),
        *increments,
        *reservations,
    ]


def _counters_as_seeded(conn: psycopg.Connection, counters: int) -> Check:
    missing, extra = conn.execute(
        """SELECT array_agg(s.id ORDER BY s.id) FILTER (WHERE c.id IS NULL),
                  array_agg(c.id ORDER BY c.id) FILTER (WHERE s.id IS NULL)
           FROM generate_series(1, %s) AS s (id) FULL JOIN counters c USING (id)""",
        (counters,),
    ).fetchone()
    missing, extra = missing or [], extra or []
    return Check("counters_as_seeded", not (missing or extra), counters, counters - len(missing) + len(extra),
                 "; ".join(what for what in (missing and f"seeded counters missing: {listing_ids(missing)}",
                                             extra and f"counters the harness never seeded: {listing_ids(extra)}")
                           if what)
                 or f"the counters are the {counters} the harness seeded, ids 1 to {counters}")


def _no_lost_updates(conn: psycopg.Connection, counters: int) -> Check:
    """Each seeded counter (from 0) against its recorded increments."""
    short = conn.execute(
        """SELECT s.id, coalesce(c.value, 0), coalesce(o.applied, 0)
           FROM generate_series(1, %s) AS s (id) LEFT JOIN counters c USING (id)
           LEFT JOIN (SELECT counter_id AS id, sum(amount) AS applied FROM counter_ops GROUP BY counter_id) o USING (id)
           WHERE coalesce(c.value, 0) <> coalesce(o.applied, 0) ORDER BY s.id""",
        (counters,),
    ).fetchall()
    # Counted per counter: a lost increment on one and an invented one on another must not
    # cancel out in a sum.
    lost = sum(max(0, applied - value) for _, value, applied in short)
    invented = sum(max(0, value - applied) for _, value, applied in short)
    return Check("no_lost_updates", not short, 0, {"lost": lost, "invented": invented},
                 listing("counter {} holds {} after {} recorded increments", short)
                 or "every counter = the number of its recorded increments", anomaly="lost_updates",
                 anomaly_count=lost + invented)


# Per counter, the values its succeeded increments read that another one read too, or that no
# increment can have left: at least the number of increments of it that may have committed
# (succeeded or indeterminate; an indeterminate call that never ran its tool to the end may be
# of any counter). Reads the outcomes identities_in_table copied.
_IMPOSSIBLE_READS = """
    WITH increments AS (
        SELECT outcome, (value::jsonb ->> 'counter')::int AS counter, (value::jsonb ->> 'read')::bigint AS read
        FROM harness_outcomes WHERE outcome <> 'failed'
    ), made AS (
        SELECT counter, count(*) + (SELECT count(*) FROM increments WHERE counter IS NULL) AS at_most
        FROM increments WHERE counter IS NOT NULL GROUP BY counter
    ), reads AS (
        SELECT counter, read, count(*) AS times FROM increments WHERE outcome = 'succeeded' GROUP BY counter, read
    ), impossible AS (
        SELECT counter, read, times, at_most,
               CASE WHEN read < 0 OR read >= at_most THEN times ELSE times - 1 END AS wrong
        FROM reads JOIN made USING (counter)
        WHERE times > 1 OR read < 0 OR read >= at_most
    )
    SELECT (array_agg(ARRAY[counter, read, times, at_most] ORDER BY counter, read))[1:%(n)s],
           coalesce(sum(wrong), 0)::bigint,
           (SELECT count(*) FROM increments WHERE outcome = 'succeeded')
    FROM impossible
"""


def _increment_reads_serial(conn: psycopg.Connection, isolation: str) -> Check:
    """At a level that refuses lost updates, the increments of a counter committed one after
    the other: each succeeded one read a value no other one read, below the number of
    increments of it the harness made (its counter started at 0)."""
    shown, wrong, succeeded = conn.execute(_IMPOSSIBLE_READS, {"n": SHOW_AT_MOST}).fetchone()
    return Check("increment_reads_serial", not wrong, 0, wrong,
                 "; ".join(f"counter {counter} read {read} by {times} increments (of at most {at_most} made of it)"
                           for counter, read, times, at_most in shown or [])
                 + f" ({wrong} reads no serial order of the increments explains)" if wrong
                 else f"at {isolation}, each of the {succeeded} succeeded increments read a value of its counter"
                      f" no other one read, below the number of increments the harness made of it")
