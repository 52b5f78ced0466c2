"""The isolation scenario: tools written the way that is only safe at the right isolation level.

`increment_counter` reads a counter, works, then writes back value + 1 (a lost update, unless
the level refuses it). `reserve_slot` takes one of two on-call agents off duty after checking
that the other one stays (write skew, unless the level refuses it). PostgreSQL documents what
each level allows: read committed both; repeatable read refuses the lost update (40001) but
allows write skew; serializable allows neither.
"""

from __future__ import annotations

from psycopg import sql

from db.audits import AuditContext, Check, identities_in_table, listing
from db.tool import Transaction

__all__ = ["increment_counter", "reserve_slot", "audit_isolation"]


def increment_counter(tx: Transaction, *, counters: int) -> None:
    counter = tx.rng.randint(1, counters)
    value = tx.execute("SELECT value FROM counters WHERE id = %s", (counter,)).fetchone()[0]
    tx.work()
    tx.execute("UPDATE counters SET value = %s WHERE id = %s", (value + 1, counter))
    tx.execute("INSERT INTO counter_ops (op_id, counter_id, amount) VALUES (%s, %s, 1)", (tx.op_id, counter))


def reserve_slot(tx: Transaction) -> None:
    # Two calls per pair, one per slot: each pair is raced at most once, so every violation
    # that ever happened is still there for the audit. A retried call takes a fresh pair.
    call = tx.execute("SELECT nextval('duty_pair_calls')").fetchone()[0]
    pair, slot = _scattered(call // 2), call % 2
    off_duty = tx.execute("SELECT count(*) FROM duty_leave WHERE pair_id = %s", (pair,)).fetchone()[0]
    if off_duty:
        return  # the rule holds: the other agent of the pair is already off, this one stays
    tx.work()
    tx.execute("INSERT INTO duty_leave (pair_id, slot, op_id) VALUES (%s, %s, %s)", (pair, slot, tx.op_id))


def _scattered(pair: int) -> int:
    """Consecutive pairs far apart in the index (a bijection of 32-bit integers): serializable
    isolation tracks reads by index page, and pairs raced side by side on one page would fail
    each other for no real conflict."""
    return (pair * 2654435761) & 0xFFFFFFFF


def audit_isolation(ctx: AuditContext) -> list[Check]:
    conn = ctx.conn
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(ctx.schema)))
        short = conn.execute(
            """SELECT c.id, c.value, coalesce(sum(o.amount), 0) AS applied
               FROM counters c LEFT JOIN counter_ops o ON o.counter_id = c.id
               GROUP BY c.id, c.value HAVING c.value <> coalesce(sum(o.amount), 0) ORDER BY c.id"""
        ).fetchall()
        # Counted per counter: a lost increment on one and an invented one on another must not
        # cancel out in a sum.
        lost = sum(max(0, applied - value) for _, value, applied in short)
        invented = sum(max(0, value - applied) for _, value, applied in short)
        skewed = conn.execute(
            "SELECT pair_id FROM duty_leave GROUP BY pair_id HAVING count(*) > 1 ORDER BY pair_id"
        ).fetchall()
        increments = ctx.acknowledged_of(["increment_counter"])
        checks = identities_in_table(conn, "counter_ops", increments, present="increments_in_counter_ops",
                                     within="counter_ops_within_acknowledged", failed="failed_not_in_counter_ops")
    return [
        Check("no_lost_updates", not short, 0, {"lost": lost, "invented": invented},
              listing("counter {} holds {} after {} recorded increments", short)
              or "every counter = the number of its recorded increments", anomaly="lost_updates",
              anomaly_count=lost + invented),
        Check("no_write_skew", not skewed, 0, len(skewed),
              ("both agents off duty in pairs " + ", ".join(str(p[0]) for p in skewed[:5])) if skewed
              else "every pair kept one agent on duty", anomaly="write_skew", anomaly_count=len(skewed)),
        *checks,
    ]


