"""The pool_exhaustion scenario: more agents than connections, and a tool that keeps its
connection for a while (it works inside its transaction), so that agents queue for the pool.

Graceful under exhaustion: a call waits up to --pool-timeout, then fails as a pool timeout;
nothing hangs, and no connection leaks (checked when the load stops: the pool holds all its
connections again and no harness session is idle in a transaction). What the reads saw is checked
against the harness's baseline (audit_summaries)."""

from __future__ import annotations

import gevent

from db.audits import SHOW_AT_MOST, AuditContext, Check, copy_outcomes, listing_ids
from db.tool import Transaction

__all__ = ["summarize_accounts", "audit_summaries", "audit_pool"]


def summarize_accounts(tx: Transaction, *, hold_s: float) -> dict[str, int]:
    """The accounts, their total balance and the credits deducted so far, read in one statement
    (one snapshot, at any isolation level): what the agent is handed, checked by the audit."""
    accounts, balance, deducted = tx.execute(
        """SELECT (SELECT count(*) FROM accounts), (SELECT coalesce(sum(balance), 0) FROM accounts),
                  (SELECT coalesce(sum(amount), 0) FROM ledger WHERE credit_account IS NULL)"""
    ).fetchone()
    gevent.sleep(hold_s)  # e.g. a model call with the transaction (and its connection) still open
    return {"accounts": accounts, "balance": int(balance), "deducted": int(deducted)}


def audit_summaries(ctx: AuditContext) -> list[Check]:
    """Every summary an agent was handed (or that of a call whose outcome is unknown: it read a
    committed snapshot all the same) against the harness's baseline: the accounts seeded, and
    the credits seeded = the balances + the deductions, both seen in one snapshot.

    Not checked: that a summary saw the state committed between its call's start and its return
    (it could be an older one, e.g. a lagging replica's): the values carry no time, and the
    harness does not know when each deduction committed relative to the read."""
    baseline = ctx.baseline
    seeded = baseline.accounts * baseline.initial_balance
    conn = ctx.conn
    with conn.transaction():
        copy_outcomes(conn, ctx.acknowledged_of(["summarize_accounts"]))
        wrong_ids, wrong, read, first = conn.execute(
            """WITH summaries AS (
                   SELECT op_id, value::jsonb AS seen FROM harness_outcomes
                   WHERE outcome <> 'failed' AND value::jsonb ? 'accounts'),
                wrong AS (
                   SELECT op_id, seen FROM summaries
                   WHERE (seen ->> 'accounts')::bigint <> %(accounts)s
                      OR (seen ->> 'balance')::numeric + (seen ->> 'deducted')::numeric <> %(seeded)s)
               SELECT (SELECT (array_agg(op_id ORDER BY op_id))[1:%(n)s] FROM wrong), (SELECT count(*) FROM wrong),
                      (SELECT count(*) FROM summaries), (SELECT seen::text FROM wrong ORDER BY op_id LIMIT 1)""",
            {"accounts": baseline.accounts, "seeded": seeded, "n": SHOW_AT_MOST},
        ).fetchone()
    return [Check(
        "summaries_match_baseline", not wrong, 0, wrong,
        f"{wrong} of {read} summaries saw other than {baseline.accounts} accounts holding {seeded} credits"
        f" less those deducted (e.g. {first}): {listing_ids(wrong_ids, wrong)}" if wrong else
        f"each of the {read} summaries read saw the {baseline.accounts} accounts seeded, holding the {seeded}"
        " credits seeded less those deducted",
    )]


def audit_pool(ctx: AuditContext) -> list[Check]:
    """Each load process's pool as its load stopped (ctx.findings). Over MCP the pool is the tool
    server's: there is none to look at, and no check is made rather than one that holds on
    nothing (the report's transport says the pool is not measurable)."""
    if not ctx.findings:
        return []
    leaked = [f for f in ctx.findings if f["available"] != f["connections"] or f["connections"] != f["size"]]
    unasked = [f["process"] for f in ctx.findings if f["idle_in_transaction"] is None]
    idle = sum(f["idle_in_transaction"] or 0 for f in ctx.findings)
    return [
        Check("pool_connections_returned", not leaked, "all", "all" if not leaked else leaked,
              "; ".join(f"{f['process']}: {f['available']} of {f['connections']} connections free,"
                        f" pool size {f['size']}"
                        + (f", {f['calls_in_flight']} calls still in flight after the load's 10 s wait"
                           if f["calls_in_flight"] else "")
                        for f in ctx.findings)),
        Check("no_session_idle_in_transaction", idle == 0 and not unasked, 0, idle,
              f"the server could not be asked for the sessions of process(es) {unasked}" if unasked else
              "pg_stat_activity shows no harness session idle in transaction when the load stopped"),
    ]
