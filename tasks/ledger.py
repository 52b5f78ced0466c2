"""The ledger row every successful credit operation writes in its own transaction."""

from __future__ import annotations

from typing import Any

from db.tool import Transaction

__all__ = ["record_in_ledger"]


def record_in_ledger(tx: Transaction, tool: str, *, debit: int | None, credit: int | None,
                     amount: int) -> dict[str, Any]:
    """Keyed by the call's operation id: a retried or replayed call can never be counted twice.

    What it wrote, as the call's value: {"debit", "credit", "amount"}, without "credit" when no
    account is credited (every call's value is kept in memory to the end of the run: a byte saved
    here is saved a call; the audits read an absent key as NULL, which is what the row holds)."""
    tx.execute(
        "INSERT INTO ledger (op_id, tool, agent_id, debit_account, credit_account, amount)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (tx.op_id, tool, tx.agent_id, debit, credit, amount),
    )
    wrote: dict[str, Any] = {"debit": debit, "amount": amount}
    if credit is not None:
        wrote["credit"] = credit
    return wrote
