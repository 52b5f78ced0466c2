"""End-of-run audits: nothing acknowledged was lost, nothing was invented, no invariant broke.

Each check compares what the harness acknowledged with what the database holds, and says what
it expected and what it observed, so a failed audit tells the user where to look.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["Check", "Acknowledged", "audit_credits"]

_SHOW_AT_MOST = 5


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: Any
    observed: Any
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Acknowledged:
    """What the harness told its agents: these operations succeeded, these may have."""

    succeeded_op_ids: list[uuid.UUID]
    indeterminate: int


def audit_credits(conn: psycopg.Connection, schema: str, acknowledged: Acknowledged) -> list[Check]:
    """The credit accounts and their ledger, as the optimistic_locking and deadlock tools left them."""
    with conn.transaction():
        # One snapshot for every check, so they agree with each other.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        return [
            _credits_conserved(conn),
            _balances_match_ledger(conn),
            _no_negative_balance(conn),
            _acknowledged_in_ledger(conn, acknowledged.succeeded_op_ids),
            _ledger_within_acknowledged(conn, acknowledged),
            _versions_count_updates(conn),
        ]


def _credits_conserved(conn: psycopg.Connection) -> Check:
    initial, balances, deducted = conn.execute(
        """SELECT (SELECT coalesce(sum(initial_balance), 0) FROM accounts),
                  (SELECT coalesce(sum(balance), 0) FROM accounts),
                  (SELECT coalesce(sum(amount), 0) FROM ledger WHERE credit_account IS NULL)"""
    ).fetchone()
    expected = int(initial - deducted)
    return Check(
        "credits_conserved",
        int(balances) == expected,
        expected,
        int(balances),
        "sum of balances = initial total + sum of ledger deltas (transfers move credits, deductions remove them)",
    )


# An account's movements in the ledger, as (account, net change, number of ledger rows).
_MOVEMENTS = """
    WITH movements AS (
        SELECT debit_account AS account, -amount AS delta FROM ledger WHERE debit_account IS NOT NULL
        UNION ALL
        SELECT credit_account, amount FROM ledger WHERE credit_account IS NOT NULL
    ), per_account AS (
        SELECT account, sum(delta) AS delta, count(*) AS updates FROM movements GROUP BY account
    )
"""


def _balances_match_ledger(conn: psycopg.Connection) -> Check:
    rows = conn.execute(
        _MOVEMENTS
        + """SELECT a.id, a.balance, a.initial_balance + coalesce(p.delta, 0)
             FROM accounts a LEFT JOIN per_account p ON p.account = a.id
             WHERE a.balance <> a.initial_balance + coalesce(p.delta, 0) ORDER BY a.id"""
    ).fetchall()
    return Check(
        "balances_match_ledger",
        not rows,
        0,
        len(rows),
        _listing("account {} holds {} but its ledger says {}", rows)
        or "every balance = its initial balance + its ledger movements",
    )


def _no_negative_balance(conn: psycopg.Connection) -> Check:
    rows = conn.execute("SELECT id, balance FROM accounts WHERE balance < 0 ORDER BY id").fetchall()
    return Check("no_negative_balance", not rows, 0, len(rows), _listing("account {} at {}", rows))


def _acknowledged_in_ledger(conn: psycopg.Connection, succeeded: list[uuid.UUID]) -> Check:
    conn.execute("CREATE TEMP TABLE acknowledged (op_id uuid) ON COMMIT DROP")
    with conn.cursor().copy("COPY acknowledged (op_id) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["uuid"])
        for op_id in succeeded:
            copy.write_row((op_id,))
    missing = conn.execute(
        "SELECT a.op_id FROM acknowledged a LEFT JOIN ledger l USING (op_id) WHERE l.op_id IS NULL LIMIT %s",
        (_SHOW_AT_MOST,),
    ).fetchall()
    missing_count, repeated = conn.execute(
        """SELECT count(*) FILTER (WHERE l.op_id IS NULL),
                  (SELECT count(*) - count(DISTINCT op_id) FROM acknowledged)
           FROM acknowledged a LEFT JOIN ledger l USING (op_id)"""
    ).fetchone()
    found = len(succeeded) - missing_count
    detail = "every acknowledged operation is in the ledger exactly once"
    if missing:
        detail = "lost: " + ", ".join(str(r[0]) for r in missing) + (" …" if missing_count > len(missing) else "")
    if repeated:
        detail += f"; {repeated} operation ids were acknowledged more than once"
    return Check("acknowledged_in_ledger", missing_count == 0 and repeated == 0, len(succeeded), found, detail)


def _ledger_within_acknowledged(conn: psycopg.Connection, acknowledged: Acknowledged) -> Check:
    rows, distinct = conn.execute("SELECT count(*), count(DISTINCT op_id) FROM ledger").fetchone()
    low = len(acknowledged.succeeded_op_ids)
    high = low + acknowledged.indeterminate
    ok = low <= rows <= high and rows == distinct
    detail = "ledger rows lie between succeeded and succeeded + indeterminate"
    if rows != distinct:
        detail = f"{rows - distinct} operations appear more than once in the ledger"
    elif rows > high:
        detail = f"{rows - high} ledger rows belong to no operation the harness acknowledged"
    return Check("ledger_within_acknowledged", ok, [low, high], rows, detail)


def _versions_count_updates(conn: psycopg.Connection) -> Check:
    rows = conn.execute(
        _MOVEMENTS
        + """SELECT a.id, a.version, coalesce(p.updates, 0)
             FROM accounts a LEFT JOIN per_account p ON p.account = a.id
             WHERE a.version <> coalesce(p.updates, 0) ORDER BY a.id"""
    ).fetchall()
    return Check(
        "versions_count_updates",
        not rows,
        0,
        len(rows),
        _listing("account {} at version {} after {} applied updates", rows)
        or "each applied update raised its account's version by exactly one",
    )


def _listing(template: str, rows: Iterable[tuple[Any, ...]]) -> str:
    rows = list(rows)
    shown = "; ".join(template.format(*row) for row in rows[:_SHOW_AT_MOST])
    return shown + (" …" if len(rows) > _SHOW_AT_MOST else "")
