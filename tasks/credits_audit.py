"""The credit audit: conserved credits, balances and versions that match the ledger, and the
ledger's rows compared by operation id with the calls' outcomes: every succeeded call in it
exactly once, no row of a failed call, no row of a call the harness never made."""

from __future__ import annotations

import psycopg
from psycopg import sql

from db.audits import AuditContext, Check, identities_in_table, listing

__all__ = ["LEDGER_TOOLS", "audit_credits"]

# The tools that write one ledger row per successful call.
LEDGER_TOOLS = ("deduct_credits", "transfer_credits", "charge_usage")


def audit_credits(ctx: AuditContext) -> list[Check]:
    """The credit accounts and their ledger, as the credit tools left them."""
    conn, acknowledged = ctx.conn, ctx.acknowledged_of(LEDGER_TOOLS)
    with conn.transaction():
        # One snapshot for every check, so they agree with each other.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(ctx.schema)))
        return [
            _credits_conserved(conn),
            _balances_match_ledger(conn),
            _no_negative_balance(conn),
            *identities_in_table(conn, "ledger", acknowledged, present="acknowledged_in_ledger",
                                 within="ledger_within_acknowledged", failed="failed_not_in_ledger"),
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
        listing("account {} holds {} but its ledger says {}", rows)
        or "every balance = its initial balance + its ledger movements",
    )


def _no_negative_balance(conn: psycopg.Connection) -> Check:
    rows = conn.execute("SELECT id, balance FROM accounts WHERE balance < 0 ORDER BY id").fetchall()
    return Check("no_negative_balance", not rows, 0, len(rows), listing("account {} at {}", rows))


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
        listing("account {} at version {} after {} applied updates", rows)
        or "each applied update raised its account's version by exactly one",
    )
