"""The tool server's careless mode (`python -m toolserver --careless`; docs/mcp.md: Careless mode):
each built-in tool as a platform team might plausibly have written it, without a thought for the
agents calling it at the same time. The same name, arguments and schemas as the careful tool (an
agent cannot tell them apart), and the call's op id written where the careful tool writes it, so
that the audits judge it by identity as they judge the careful one: what they must find is the
carelessness itself, and docs/mcp.md's table names, per tool, the check that fails and why.

The windows each one leaves open are the careful tools' own knobs: `tx.work()` (--tool-work)
between a read and the write that trusts it, the summary's hold (--hold-time) between its reads.
The PostgreSQL ones are careless at read committed (the server's default isolation), where a
platform's code usually runs; the isolation tools pin that level themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import redis

from db.errors import QueueFull
from db.redis_keys import RedisKeys
from db.rows import one_row
from db.tool import Tool, Transaction
from tasks import isolation
from tasks.credits import InsufficientCredits, debit
from tasks.ledger import record_in_ledger
from tasks.list_append import list_append
from tasks.queue import QueueKeys
from tasks.scenarios import ScenarioParams, built_in_tools

__all__ = ["careless_tools"]

_Run = Callable[..., Any]


def deduct_credits(tx: Transaction, *, account: int, amount: int) -> dict[str, Any]:
    """Reads the balance and its version, then writes the balance it computed, bumping the version
    but never checking it (the `AND version = …` forgotten): a deduction that ran meanwhile is
    overwritten, and two deductions report the same version read."""
    balance, version = one_row(tx.execute("SELECT balance, version FROM accounts WHERE id = %s", (account,)))
    if balance < amount:
        raise InsufficientCredits(f"account {account} holds {balance}, needs {amount}")
    tx.work()
    tx.execute("UPDATE accounts SET balance = %s, version = version + 1 WHERE id = %s", (balance - amount, account))
    return {**record_in_ledger(tx, "deduct_credits", debit=account, credit=None, amount=amount), "version": version}


def transfer_credits(tx: Transaction, *, payer: int, payee: int, amount: int) -> dict[str, Any]:
    """An ORM's transfer: both accounts loaded, their new balances computed, both written back as
    computed, in the order given as the careful tool locks them (opposite transfers can still
    deadlock, and are retried). Whatever another transfer wrote to either account between the read
    and the write is lost."""
    balances: dict[int, int] = dict(tx.execute("SELECT id, balance FROM accounts WHERE id = ANY(%s)",
                                               ([payer, payee],)).fetchall())
    if balances[payer] < amount:
        raise InsufficientCredits(f"account {payer} holds {balances[payer]}, needs {amount}")
    tx.work()
    for account, balance in ((payer, balances[payer] - amount), (payee, balances[payee] + amount)):
        tx.execute("UPDATE accounts SET balance = %s, version = version + 1 WHERE id = %s", (balance, account))
    return record_in_ledger(tx, "transfer_credits", debit=payer, credit=payee, amount=amount)


def _at_read_committed(run: _Run) -> _Run:
    """The careful tool, its transaction lowered to read committed first, whatever the server's
    --isolation (to be rid of the serialization failures): what the higher levels refuse, it
    lets happen."""

    def lowered(tx: Transaction, **arguments: Any) -> Any:
        tx.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return run(tx, **arguments)

    return lowered


def summarize_accounts(tx: Transaction, *, hold_s: float) -> dict[str, int]:
    """Each figure by its own query, the hold (a model call) between them: at read committed each
    statement reads its own snapshot, and a deduction committed between the two is counted in the
    deductions read but not in the balances read."""
    accounts, balance = one_row(tx.execute("SELECT count(*), coalesce(sum(balance), 0) FROM accounts"))
    time.sleep(hold_s)
    deducted = one_row(tx.execute("SELECT coalesce(sum(amount), 0) FROM ledger WHERE credit_account IS NULL"))[0]
    return {"accounts": accounts, "balance": int(balance), "deducted": int(deducted)}


def charge_usage(tx: Transaction, *, account: int, amount: int, keys: RedisKeys) -> dict[str, Any]:
    """The charge and its outbox row as the careful tool writes them, but the usage also counted
    in Redis by the tool itself, with a plain HINCRBY before the PostgreSQL commit: the relay,
    whose guard never saw that increment, applies the outbox row again (each charge counted
    twice), and a charge rolled back after its increment stays counted."""
    debit(tx, account, amount)
    charged = {**record_in_ledger(tx, "charge_usage", debit=account, credit=None, amount=amount), "agent": tx.agent_id}
    tx.execute("INSERT INTO usage_outbox (op_id, agent_id, amount) VALUES (%s, %s, %s)",
               (tx.op_id, tx.agent_id, amount))
    _redis(tx).hincrby(keys("usage"), tx.agent_id, amount)
    tx.work()
    return charged


def enqueue_job(tx: Transaction, *, level: int, keys: RedisKeys, capacity: int) -> dict[str, int]:
    """The depth checked, then the job pushed, in two round trips rather than one script: producers
    that checked at once all push, past the capacity; each logs the depth it saw, plus its own."""
    k, client = QueueKeys(keys), _redis(tx)
    depth = _depth(client, k)
    if depth >= capacity:
        raise QueueFull(f"queue at its capacity of {capacity}")
    tx.work()  # the job's payload made ready
    with client.pipeline(transaction=True) as pipe:
        pipe.rpush(k.levels[level - 1], f"{tx.op_id}|{_server_now(client)}")
        pipe.xadd(k.log, {"event": "enqueue", "job": str(tx.op_id), "level": level, "depth": depth + 1})
        pipe.execute()
    return {"level": level}


def dequeue_job(tx: Transaction, *, keys: RedisKeys) -> dict[str, str | None]:
    """The next job peeked at (LINDEX), looked at, then claimed by LREM, whose count is not read:
    consumers that peeked at once all take the same job; then worked on and acknowledged, as the
    careful consumer does but with plain commands."""
    k, client, consumer = QueueKeys(keys), _redis(tx), str(tx.op_id)
    with client.pipeline(transaction=False) as pipe:
        for key in k.levels:
            pipe.lindex(key, 0)
        heads = pipe.execute()
    depth = _depth(client, k)
    taken = next(((level, head) for level, head in enumerate(heads, 1) if head is not None), None)
    if taken is None:
        return {"job": None}
    level, head = taken
    tx.work()  # the job looked at before it is claimed
    client.lrem(k.levels[level - 1], 1, head)
    job = head.decode().split("|", 1)[0]
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(k.processing, consumer, f"{head.decode()}|{_server_now(client)}")
        pipe.xadd(k.log, {"event": "dequeue", "job": job, "level": level, "depth": depth, "consumer": consumer})
        pipe.execute()
    tx.work()
    with client.pipeline(transaction=True) as pipe:
        pipe.hdel(k.processing, consumer)
        pipe.xadd(k.log, {"event": "ack", "job": job, "consumer": consumer})
        pipe.execute()
    return {"job": job}


def update_plan(tx: Transaction, *, team: int, keys: RedisKeys) -> dict[str, int]:
    """The plan's version read, the change decided, then the new version and the step written in
    a MULTI/EXEC that watches nothing: agents of a team that read at once all write the same
    version, and each is told it wrote it."""
    client, plan, step = _redis(tx), keys("plan", team), str(tx.op_id)
    version = int(client.hget(plan, "version") or 0) + 1
    tx.work()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(plan, mapping={"version": version, "last_step": step})
        pipe.xadd(keys("plan", "log"), {"step": step, "team": team})
        pipe.execute()
    return {"team": team, "version": version}


def _redis(tx: Transaction) -> redis.Redis:
    if tx.redis is None:
        raise RuntimeError("a careless Redis tool called without a Redis client")
    return tx.redis


def _depth(client: redis.Redis, k: QueueKeys) -> int:
    with client.pipeline(transaction=False) as pipe:
        for key in k.levels:
            pipe.llen(key)
        return sum(pipe.execute())


def _server_now(client: redis.Redis) -> str:
    """Microseconds of the Redis server's clock, as the careful scripts stamp a job."""
    seconds, micros = client.time()
    return f"{seconds}{micros:06d}"


def _unguarded(run: _Run) -> _Run:
    """A workflow's write (tasks/workflows.py) that ignores its `guarded` argument: the version or
    the job read is never checked, and a write from a stale read overwrites what changed since."""

    def blind(tx: Transaction, *, guarded: bool, **arguments: Any) -> Any:
        return run(tx, guarded=False, **arguments)

    return blind


def _careless_runs(p: ScenarioParams) -> dict[str, _Run]:
    careful = built_in_tools(p)
    return {
        **{name: _unguarded(careful[name].run) for name in ("deduct_from_read", "write_plan_step", "take_job")},
        "deduct_credits": deduct_credits,
        "transfer_credits": transfer_credits,
        "increment_counter": _at_read_committed(isolation.increment_counter),
        "reserve_slot": _at_read_committed(isolation.reserve_slot),
        "list_append": _at_read_committed(list_append),
        "summarize_accounts": partial(summarize_accounts, hold_s=p.hold_s),
        "enqueue_job": partial(enqueue_job, keys=p.keys, capacity=p.queue_capacity),
        "dequeue_job": partial(dequeue_job, keys=p.keys),
        "charge_usage": partial(charge_usage, keys=p.keys),
        "update_plan": partial(update_plan, keys=p.keys),
    }


def careless_tools(p: ScenarioParams) -> dict[str, Tool]:
    """Every built-in tool by name, each run replaced by its careless one (the same name, backend
    and arguments step), but the workflows' reads: one read each, nothing to be careless about."""
    careful = built_in_tools(p)
    return {**careful, **{name: replace(careful[name], run=run) for name, run in _careless_runs(p).items()}}
