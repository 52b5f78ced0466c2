"""Credit tools: the agents' shared accounts, contended on purpose.

`deduct_credits` is optimistic: read the version, write only if it is unchanged.
`transfer_credits` locks two accounts in random order, so that two agents moving credits
between the same pair in opposite directions deadlock, as careless tool code does.

Each tool's arguments (which accounts, how much) are drawn by its `…_arguments` function
(db.tool: the arguments step); the tool executes them.
"""

from __future__ import annotations

import random
from typing import Any

from db.errors import Refused, VersionConflict
from db.tool import Transaction
from tasks.ledger import record_in_ledger

__all__ = ["InsufficientCredits", "debit", "deduct_credits", "deduct_credits_arguments", "transfer_credits",
           "transfer_credits_arguments", "MAX_AMOUNT"]

MAX_AMOUNT = 10


class InsufficientCredits(Refused):
    """The account cannot pay: a refusal by the tool, not a conflict, so never retried."""


def deduct_credits_arguments(rng: random.Random, *, accounts: int) -> dict[str, int]:
    """One of the `accounts` accounts, and an amount to take from it."""
    return {"account": rng.randint(1, accounts), "amount": rng.randint(1, MAX_AMOUNT)}


def deduct_credits(tx: Transaction, *, account: int, amount: int) -> dict[str, Any]:
    """What it wrote, and the version it read and wrote from (the audit finds two deductions
    that wrote from one version: an optimistic update lost)."""
    balance, version = tx.execute("SELECT balance, version FROM accounts WHERE id = %s", (account,)).fetchone()
    if balance < amount:
        raise InsufficientCredits(f"account {account} holds {balance}, needs {amount}")
    tx.work()
    updated = tx.execute(
        "UPDATE accounts SET balance = balance - %s, version = version + 1 WHERE id = %s AND version = %s",
        (amount, account, version),
    )
    if updated.rowcount == 0:
        raise VersionConflict(f"account {account} is no longer at version {version}")
    return {**record_in_ledger(tx, "deduct_credits", debit=account, credit=None, amount=amount), "version": version}


def debit(tx: Transaction, account: int, amount: int) -> None:
    """Take `amount` from `account`, locking its row, unless that would make it negative."""
    paid = tx.execute(
        "UPDATE accounts SET balance = balance - %s, version = version + 1 WHERE id = %s AND balance >= %s",
        (amount, account, amount),
    )
    if paid.rowcount == 0:
        raise InsufficientCredits(f"account {account} cannot pay {amount}")


def transfer_credits_arguments(rng: random.Random, *, accounts: int) -> dict[str, int]:
    """Two different accounts of the `accounts`, in random order (so that opposite transfers
    between one pair deadlock), and an amount to move from the first to the second."""
    payer, payee = rng.sample(range(1, accounts + 1), 2)
    return {"payer": payer, "payee": payee, "amount": rng.randint(1, MAX_AMOUNT)}


def transfer_credits(tx: Transaction, *, payer: int, payee: int, amount: int) -> dict[str, Any]:
    debit(tx, payer, amount)
    tx.work()
    tx.execute("UPDATE accounts SET balance = balance + %s, version = version + 1 WHERE id = %s", (amount, payee))
    return record_in_ledger(tx, "transfer_credits", debit=payer, credit=payee, amount=amount)
