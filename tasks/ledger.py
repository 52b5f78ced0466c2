"""The ledger row every successful credit operation writes in its own transaction."""

from __future__ import annotations

from db.tool import Transaction

__all__ = ["record_in_ledger"]


def record_in_ledger(tx: Transaction, tool: str, *, debit: int | None, credit: int | None, amount: int) -> None:
    """Keyed by the call's operation id: a retried or replayed call can never be counted twice."""
    tx.execute(
        "INSERT INTO ledger (op_id, tool, agent_id, debit_account, credit_account, amount)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (tx.op_id, tool, tx.agent_id, debit, credit, amount),
    )
