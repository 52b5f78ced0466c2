"""The pool_exhaustion scenario: more agents than connections, and a tool that keeps its
connection for a while (it works inside its transaction), so that agents queue for the pool.

Graceful under exhaustion: a call waits up to --pool-timeout, then fails as a pool timeout;
nothing hangs, and no connection leaks (checked when the load stops: the pool holds all its
connections again and no harness session is idle in a transaction)."""

from __future__ import annotations

import gevent

from db.audits import AuditContext, Check
from db.tool import Transaction

__all__ = ["summarize_accounts", "audit_pool"]


def summarize_accounts(tx: Transaction, *, hold_s: float) -> None:
    tx.execute("SELECT count(*), sum(balance) FROM accounts")
    gevent.sleep(hold_s)  # e.g. a model call with the transaction (and its connection) still open


def audit_pool(ctx: AuditContext) -> list[Check]:
    leaked = [f for f in ctx.findings if f["available"] != f["connections"] or f["connections"] != f["size"]]
    unasked = [f["process"] for f in ctx.findings if f["idle_in_transaction"] is None]
    idle = sum(f["idle_in_transaction"] or 0 for f in ctx.findings)
    return [
        Check("pool_connections_returned", not leaked, "all", "all" if not leaked else leaked,
              "; ".join(f"{f['process']}: {f['available']} of {f['connections']} connections free, pool size {f['size']}"
                        + (f", {f['calls_in_flight']} calls still in flight after the load's 10 s wait"
                           if f["calls_in_flight"] else "")
                        for f in ctx.findings)),
        Check("no_session_idle_in_transaction", idle == 0 and not unasked, 0, idle,
              f"the server could not be asked for the sessions of process(es) {unasked}" if unasked else
              "pg_stat_activity shows no harness session idle in transaction when the load stopped"),
    ]
