"""The list_append scenario: Elle's list-append workload on PostgreSQL, at the run's level.

Each call is one transaction of 1 to 4 micro-operations over a few keys: an append of an
element unique to the attempt (its op id's first 12 hex digits and the attempt's number: a
retry never appends the same element twice) or a read of a key's whole list. A key takes a
bounded number of appends (APPENDS_PER_KEY) before its slot moves on to a fresh key, as Elle's
generator does, so that reads stay short and the checking linear in the run's length.

What each attempt did goes into the call's value (history_check.toolclash says how): its
micro-operations with what the reads returned, and what each earlier attempt of the call set out
to append before it was rolled back. Each attempt says what it sets out to do before its first
statement (db.tool.Transaction.attempted): a call whose last attempt raised (it failed, its tries
spent or its failure not retried) has that for its value, so that every attempt is in the
history. The audit (tasks/list_append_audit.py) gives the run's calls, and the lists PostgreSQL
holds at the end, to the history checker."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, OrderedDict
from typing import Any

from db.tool import Transaction

__all__ = ["APPENDS_PER_KEY", "KEY_SLOTS", "element_of", "list_append", "list_append_arguments"]

# Keys written at once (slots), and the appends a key takes before its slot moves to a new key.
KEY_SLOTS = 5
APPENDS_PER_KEY = 32
_MOPS_AT_MOST = 4

# This process's appends per slot: the key of a slot is its generation (appends // APPENDS_PER_KEY).
# Shared by the process's agents (and a tool server's threads), as Elle's generator's state is.
_appends: Counter[int] = Counter()
_lock = threading.Lock()
# Each call in flight: what its attempts so far set out to do, [[attempt, mops], ...]. A call's
# last attempt never tells it is the last, so the oldest are dropped past a bound far above the
# calls one process has in flight.
_tried: OrderedDict[uuid.UUID, list[list[Any]]] = OrderedDict()
_TRIED_AT_MOST = 50_000


def list_append_arguments(rng: random.Random) -> dict[str, Any]:
    """1 to 4 micro-operations, each an append or a read of one of the key slots; the appends'
    slots in ascending order (reads anywhere between them), so that two transactions take their
    row locks in one order and never deadlock each other: at the server's default deadlock_timeout
    (1 s) the deadlocks of appends in any order left a 50-agent run a few calls a second."""
    txn = [[rng.choice(("append", "r")), rng.randrange(KEY_SLOTS)] for _ in range(rng.randint(1, _MOPS_AT_MOST))]
    ascending = iter(sorted(slot for f, slot in txn if f == "append"))
    return {"txn": [[f, next(ascending) if f == "append" else slot] for f, slot in txn]}


def element_of(op_id: uuid.UUID, attempt: int) -> str:
    return f"{op_id.hex[:12]}.{attempt}"


def _key(slot: int, append: bool) -> str:
    """The slot's current key; an append counts toward its rotation."""
    with _lock:
        generation = _appends[slot] // APPENDS_PER_KEY
        if append:
            _appends[slot] += 1
    return f"{slot}.{generation}"


def _attempt(op_id: uuid.UUID, mops: list[list[Any]]) -> tuple[int, list[list[Any]]]:
    """This attempt's number, from 1, and the earlier attempts' micro-operations; it is recorded."""
    with _lock:
        tried = _tried.setdefault(op_id, [])
        _tried.move_to_end(op_id)
        earlier = list(tried)
        tried.append([len(earlier) + 1, mops])
        while len(_tried) > _TRIED_AT_MOST:
            _tried.popitem(last=False)
    return len(earlier) + 1, earlier


def list_append(tx: Transaction, *, txn: list[list[Any]]) -> dict[str, Any]:
    started_ns = time.monotonic_ns()
    planned = [[f, _key(slot, f == "append"), None] for f, slot in txn]
    attempt, earlier = _attempt(tx.op_id, planned)
    element = element_of(tx.op_id, attempt)
    for i, mop in enumerate(planned):
        if mop[0] == "append":  # a second append of the attempt to one key is told apart
            mop[2] = element if not any(m[0] == "append" and m[1] == mop[1] for m in planned[:i]) else f"{element}.{i}"
    tx.attempted = {"lane": tx.lane, "started_ns": started_ns, "attempt": attempt, "txn": planned, "tried": earlier}
    done: list[list[Any]] = []
    for f, key, value in planned:
        if done:
            tx.work()  # --tool-work between two statements, holding what the transaction has locked
        if f == "append":
            tx.execute("INSERT INTO append_lists (key, elements) VALUES (%s, ARRAY[%s::text])"
                       " ON CONFLICT (key) DO UPDATE SET elements = append_lists.elements || excluded.elements",
                       (key, value))
            done.append([f, key, value])
        else:
            row = tx.execute("SELECT elements FROM append_lists WHERE key = %s", (key,)).fetchone()
            done.append([f, key, list(row[0]) if row else []])
    return {**tx.attempted, "txn": done}
