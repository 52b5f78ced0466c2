"""The credit audit: the accounts and the ledger against what the harness itself knows.

The harness seeded accounts 1..N, each at the same initial balance and at version 0
(ctx.baseline), and knows every call it made with what that call wrote (its value). Nothing is
taken from the tables audited as a starting point (the accounts' `initial_balance` column is
not read): the ledger's rows are proven by identity and content against the calls, and then
every balance, version and the total are proven against the baseline and that ledger.
"""

from __future__ import annotations

import psycopg

from db.audits import (
    SHOW_AT_MOST,
    AuditContext,
    Baseline,
    Check,
    identities_in_table,
    listing,
    listing_ids,
    rows_match_values,
)

__all__ = ["LEDGER_TOOLS", "audit_credits"]

# The tools that write one ledger row per successful call.
LEDGER_TOOLS = ("deduct_credits", "transfer_credits", "charge_usage", "deduct_from_read")


def audit_credits(ctx: AuditContext) -> list[Check]:
    """The credit accounts and their ledger, as the credit tools left them."""
    conn, acknowledged, baseline = ctx.conn, ctx.acknowledged_of(LEDGER_TOOLS), ctx.baseline
    # One snapshot for every check, so they agree with each other.
    with ctx.in_schema(one_snapshot=True):
        return [
            _accounts_as_seeded(conn, baseline),
            _credits_conserved(conn, baseline),
            _balances_match_ledger(conn, baseline),
            _no_negative_balance(conn),
            *identities_in_table(conn, "ledger", acknowledged, present="acknowledged_in_ledger",
                                 within="ledger_within_acknowledged", failed="failed_not_in_ledger"),
            rows_match_values(conn, "ledger",
                              {"debit_account": "debit", "credit_account": "credit", "amount": "amount"},
                              name="ledger_rows_match_calls"),
            _versions_count_updates(conn),
            _one_deduction_per_version(conn),
        ]


def _accounts_as_seeded(conn: psycopg.Connection, baseline: Baseline) -> Check:
    added_ids, added, removed_ids, removed = conn.execute(
        """SELECT (array_agg(a.id ORDER BY a.id) FILTER (WHERE s.id IS NULL))[1:%(n)s],
                  count(*) FILTER (WHERE s.id IS NULL),
                  (array_agg(s.id ORDER BY s.id) FILTER (WHERE a.id IS NULL))[1:%(n)s],
                  count(*) FILTER (WHERE a.id IS NULL)
           FROM accounts a FULL JOIN generate_series(1, %(accounts)s) AS s (id) ON s.id = a.id""",
        {"n": SHOW_AT_MOST, "accounts": baseline.accounts},
    ).fetchone()
    return Check(
        "accounts_as_seeded", not (added or removed), {"added": 0, "removed": 0}, {"added": added, "removed": removed},
        "; ".join(filter(None, (
            added and f"accounts no run seeded: {listing_ids(added_ids, added)}",
            removed and f"seeded accounts gone: {listing_ids(removed_ids, removed)}",
        ))) or f"the accounts are exactly the {baseline.accounts} the harness seeded (ids 1..{baseline.accounts})",
    )


def _credits_conserved(conn: psycopg.Connection, baseline: Baseline) -> Check:
    balances, deducted = conn.execute(
        """SELECT (SELECT coalesce(sum(balance), 0) FROM accounts),
                  (SELECT coalesce(sum(amount), 0) FROM ledger WHERE credit_account IS NULL)"""
    ).fetchone()
    expected = baseline.accounts * baseline.initial_balance - int(deducted)
    return Check(
        "credits_conserved",
        int(balances) == expected,
        expected,
        int(balances),
        f"sum of balances = {baseline.accounts} accounts × {baseline.initial_balance} seeded"
        f" − {int(deducted)} deducted in the ledger (transfers move credits, deductions remove them)",
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


def _balances_match_ledger(conn: psycopg.Connection, baseline: Baseline) -> Check:
    rows = conn.execute(
        _MOVEMENTS
        + """SELECT a.id, a.balance, %(initial)s + coalesce(p.delta, 0)
             FROM accounts a LEFT JOIN per_account p ON p.account = a.id
             WHERE a.balance <> %(initial)s + coalesce(p.delta, 0) ORDER BY a.id""",
        {"initial": baseline.initial_balance},
    ).fetchall()
    return Check(
        "balances_match_ledger",
        not rows,
        0,
        len(rows),
        listing(f"account {{}} holds {{}} but {baseline.initial_balance} seeded + its ledger movements = {{}}", rows)
        or f"every balance = the {baseline.initial_balance} seeded + its ledger movements",
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
        or "each applied update raised its account's version by exactly one, from the 0 seeded",
    )


def _one_deduction_per_version(conn: psycopg.Connection) -> Check:
    """The deductions' own word (their values: the account and the version each read and wrote
    from, inside the transaction of identities_in_table, whose copy of the outcomes it reads): a
    version is written from once, or an optimistic update was lost. A deduction counts if it
    succeeded, or if its outcome is unknown but its ledger row is there (it committed)."""
    rows = conn.execute(
        """SELECT account, version, count(*), (array_agg(op_id ORDER BY op_id))[1:%(n)s]
           FROM (SELECT h.op_id, (h.value::jsonb ->> 'debit')::bigint AS account,
                        (h.value::jsonb ->> 'version')::bigint AS version
                 FROM harness_outcomes h
                 WHERE h.value::jsonb ? 'version'
                   AND (h.outcome = 'succeeded'
                        OR (h.outcome = 'indeterminate' AND EXISTS (SELECT 1 FROM ledger l WHERE l.op_id = h.op_id)))
                ) deductions
           GROUP BY account, version HAVING count(*) > 1 ORDER BY account, version""",
        {"n": SHOW_AT_MOST},
    ).fetchall()
    lost = sum(times - 1 for _, _, times, _ in rows)
    return Check(
        "one_deduction_per_version", not rows, 0, lost,
        listing("account {}: {} deductions wrote from version {}: {}",
                ((account, times, version, listing_ids(ids, times)) for account, version, times, ids in rows))
        or "no two applied deductions of an account wrote from the same version",
        anomaly="lost_updates", anomaly_count=lost,
    )
