"""The workflows scenario: an agent reads, thinks, then writes what it computed from what it read,
in two calls of two turns with its think time between (docs/agents.md: Workflows across turns).
Three workflows on the existing data, each a read tool and a write tool:

- a balance (`read_balance`, then `deduct_from_read`: the balance read less an amount);
- a team's plan (`read_plan`, then `write_plan_step`: the plan's next step, counted from the read);
- the queue (`read_queue`, then `take_job`: the job seen at its head).

The agent keeps each read's value (harness.run.memory) and draws the write's arguments from it
(`Workflow.write_arguments`): over MCP, a write's arguments carry what was read, its version and
when. Each write comes in two forms, its `guarded` argument (--writes): blind, it writes what it
computed whatever happened since the read (a lost update); guarded, it checks at write time that
the state is still the one read (the version, the queue's head) and is refused otherwise
(`StaleRead`: never retried; the agent reads again).

Every write's value says how stale its read was: `stale_ms` (milliseconds between the read and the
write, on the server's clock; None when the read's time is not known), and `behind` (the versions
written since the read: 0 when it was current) or, where the data has no versions (the queue),
`stale` (whether the job read was no longer the queue's next). The audit (tasks/workflows_audit.py)
names the updates each stale write overwrote, by op id.

Each write's arguments step, drawn alone (a client calling the tool by hand, the contract tests),
makes the blind write of an agent that read the data as seeded (version 0), at a time not known.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.errors import Refused
from db.redis_keys import RedisKeys
from db.rows import one_row
from db.tool import Arguments, Transaction
from tasks.credits import MAX_AMOUNT, InsufficientCredits
from tasks.ledger import record_in_ledger
from tasks.queue import QueueKeys

__all__ = ["READ_AT_UNKNOWN", "WORKFLOWS", "StaleRead", "Workflow", "deduct_from_read", "deduct_from_read_arguments",
           "read_balance", "read_balance_arguments", "read_plan", "read_plan_arguments", "read_queue", "take_job",
           "take_job_arguments", "write_plan_step", "write_plan_step_arguments"]

# A write's `read_at` when its read's time is not known: its staleness in ms is then None.
READ_AT_UNKNOWN = 0


class StaleRead(Refused):
    """A guarded write found the state changed since its agent's read: refused (the platform said
    no, rightly), never retried: its agent reads again."""


@dataclass(frozen=True)
class Workflow:
    """A read tool and the write tool that writes from its value: `write_arguments(value, rng,
    guarded)` is the write's arguments, or None when the value leaves nothing to write (an empty
    queue): the agent then reads again."""

    read: str
    write: str
    write_arguments: Callable[[dict[str, Any], random.Random, bool], Arguments | None]


def _stale_ms(now_ms: int, read_at: int) -> int | None:
    return None if read_at == READ_AT_UNKNOWN else max(0, now_ms - read_at)


# -- a balance ------------------------------------------------------------------------------------

_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


def read_balance_arguments(rng: random.Random, *, accounts: int) -> dict[str, int]:
    return {"account": rng.randint(1, accounts)}


def read_balance(tx: Transaction, *, account: int) -> dict[str, Any]:
    """The account's balance, its version and when (ms since the epoch, the server's clock)."""
    balance, version, at = one_row(tx.execute(f"SELECT balance, version, {_NOW_MS} FROM accounts WHERE id = %s",
                                              (account,)))
    return {"account": account, "balance": balance, "version": version, "at": at}


def _deduction_from(read: dict[str, Any], rng: random.Random, guarded: bool) -> Arguments:
    return {"account": read["account"], "amount": rng.randint(1, MAX_AMOUNT), "balance": read["balance"],
            "version": read["version"], "read_at": read["at"], "guarded": guarded}


def deduct_from_read_arguments(rng: random.Random, *, accounts: int, initial_balance: int) -> Arguments:
    return _deduction_from({"account": rng.randint(1, accounts), "balance": initial_balance, "version": 0,
                            "at": READ_AT_UNKNOWN}, rng, False)


def deduct_from_read(tx: Transaction, *, account: int, amount: int, balance: int, version: int, read_at: int,
                     guarded: bool) -> dict[str, Any]:
    """Write `balance - amount` (the balance read, less what the agent decided to take), the
    version raised by one. Blind, whatever the account holds now; guarded, only if it is still
    at the version read. The ledger row says what the agent meant to take: a deduction this one
    overwrote keeps its row, so the balances no longer match the ledger (credits_audit)."""
    if balance < amount:
        raise InsufficientCredits(f"account {account} held {balance} when read, needs {amount}")
    found, now_ms = one_row(tx.execute(f"SELECT version, {_NOW_MS} FROM accounts WHERE id = %s FOR UPDATE",
                                       (account,)))
    if guarded and found != version:
        raise StaleRead(f"account {account} is at version {found}, read at {version}")
    tx.execute("UPDATE accounts SET balance = %s, version = version + 1 WHERE id = %s", (balance - amount, account))
    return {**record_in_ledger(tx, "deduct_from_read", debit=account, credit=None, amount=amount),
            "version": version, "behind": found - version, "stale_ms": _stale_ms(now_ms, read_at)}


# -- a team's plan --------------------------------------------------------------------------------

# Milliseconds of the Redis server's clock.
_REDIS_NOW_MS = """
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"""

# KEYS: the plan. Its version (every change's), its step (the steps the workflow wrote), the time.
_READ_PLAN = _REDIS_NOW_MS + """
local plan = redis.call('HMGET', KEYS[1], 'version', 'step')
return {tonumber(plan[1] or '0'), tonumber(plan[2] or '0'), now_ms()}
"""

# KEYS: the plan, the plans' log, the agent's last step written
# ARGV: the step (the call's op id), the team, the version read, the step read, 1 if guarded
# {version written, version found, now}, or {-1, version found, now}: refused. Sent again after a
# lost reply, it finds its step written by the agent's key and writes it no second time.
_WRITE_PLAN_STEP = _REDIS_NOW_MS + """
local step, written, found = string.match(redis.call('GET', KEYS[3]) or '', '^(%S+) (%d+) (%d+)$')
if step == ARGV[1] then
  return {tonumber(written), tonumber(found), now_ms()}
end
found = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[5] == '1' and found ~= tonumber(ARGV[3]) then
  return {-1, found, now_ms()}
end
local version = found + 1
redis.call('HSET', KEYS[1], 'version', version, 'step', tonumber(ARGV[4]) + 1, 'last_step', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'step', ARGV[1], 'team', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. version .. ' ' .. found)
return {version, found, now_ms()}
"""


def read_plan_arguments(rng: random.Random, *, teams: int) -> dict[str, int]:
    return {"team": rng.randint(1, teams)}


def read_plan(tx: Transaction, *, team: int, keys: RedisKeys) -> dict[str, Any]:
    """The team's plan: its version, its step (how many steps the workflow wrote), and when."""
    version, step, at = tx.redis.eval(_READ_PLAN, 1, keys("plan", team))
    return {"team": team, "version": version, "step": step, "at": at}


def _next_step_from(read: dict[str, Any], rng: random.Random, guarded: bool) -> Arguments:
    return {"team": read["team"], "version": read["version"], "step": read["step"], "read_at": read["at"],
            "guarded": guarded}


def write_plan_step_arguments(rng: random.Random, *, teams: int) -> Arguments:
    return _next_step_from({"team": rng.randint(1, teams), "version": 0, "step": 0, "at": READ_AT_UNKNOWN}, rng, False)


def write_plan_step(tx: Transaction, *, team: int, version: int, step: int, read_at: int, guarded: bool,
                    keys: RedisKeys) -> dict[str, Any]:
    """Write the plan's next step, `step + 1` (the step read, plus this one), as a change of the
    plan (its version raised by one, logged as update_plan's are). Blind, whatever the plan holds
    now: a step another agent wrote since the read is lost; guarded, only if the plan is still at
    the version read. The value: {"team", "version": the version written, "behind", "stale_ms"}."""
    written, found, now_ms = tx.redis.eval(_WRITE_PLAN_STEP, 3, keys("plan", team), keys("plan", "log"),
                                           keys("plan", "stepped_by", tx.lane), str(tx.op_id), team, version,
                                           step, int(guarded))
    if written < 0:
        raise StaleRead(f"team {team}'s plan is at version {found}, read at {version}")
    return {"team": team, "version": written, "behind": found - version, "stale_ms": _stale_ms(now_ms, read_at)}


# -- the queue ------------------------------------------------------------------------------------

# The job at the queue's head: the first job of the highest level that has one.
_HEAD = """
local function head()
  for level = 1, 3 do
    local job = redis.call('LINDEX', KEYS[level], 0)
    if job then
      return string.match(job, '^([^|]+)|'), level
    end
  end
  return false, 0
end
"""

# KEYS: the three levels (high first). {the job at the head or false, its level (0: none), now}
_READ_QUEUE = _REDIS_NOW_MS + _HEAD + """
local job, level = head()
return {job, level, now_ms()}
"""

# KEYS: the three levels (high first), the log, the agent's last job taken
# ARGV: the consumer (the call's op id), the job read, its level, 1 if guarded
# {1 if the job read was no longer the head, now}, or {-1, now}: refused. The job read is taken from
# its level wherever it is, and logged dequeued and acknowledged (a blind taker of a job that was
# taken already is its second taker). Sent again after a lost reply, it finds its job taken by the
# agent's key.
_TAKE_JOB = _REDIS_NOW_MS + _HEAD + """
local consumer, stale = string.match(redis.call('GET', KEYS[5]) or '', '^(%S+) (%d)$')
if consumer == ARGV[1] then
  return {tonumber(stale), now_ms()}
end
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
stale = head() ~= ARGV[2] and 1 or 0
if stale == 1 and ARGV[4] == '1' then
  return {-1, now_ms()}
end
local level = tonumber(ARGV[3])
for _, job in ipairs(redis.call('LRANGE', KEYS[level], 0, -1)) do
  if string.match(job, '^([^|]+)|') == ARGV[2] then
    redis.call('LREM', KEYS[level], 1, job)
    break
  end
end
redis.call('XADD', KEYS[4], '*', 'event', 'dequeue', 'job', ARGV[2], 'level', level, 'depth', depth,
           'consumer', ARGV[1])
redis.call('XADD', KEYS[4], '*', 'event', 'ack', 'job', ARGV[2], 'consumer', ARGV[1])
redis.call('SET', KEYS[5], ARGV[1] .. ' ' .. stale)
return {stale, now_ms()}
"""


def read_queue(tx: Transaction, *, keys: RedisKeys) -> dict[str, Any]:
    """The job at the queue's head (None: the queue is empty), its level, and when."""
    job, level, at = tx.redis.eval(_READ_QUEUE, 3, *QueueKeys(keys).levels)
    return {"job": job.decode() if job else None, "level": level, "at": at}


def _take_from(read: dict[str, Any], rng: random.Random, guarded: bool) -> Arguments | None:
    if read["job"] is None:
        return None
    return {"job": read["job"], "level": read["level"], "read_at": read["at"], "guarded": guarded}


def take_job_arguments(rng: random.Random) -> Arguments:
    return {"job": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "level": rng.randint(1, 3),
            "read_at": READ_AT_UNKNOWN, "guarded": False}


def take_job(tx: Transaction, *, job: str, level: int, read_at: int, guarded: bool, keys: RedisKeys) -> dict[str, Any]:
    """Take the job read, and acknowledge it at once (the consumer: the call's op id). Blind, even
    if it is no longer at the queue's head (another consumer took it: two takers); guarded, only
    if it still is. The value: {"job", "stale": it was no longer the head, "stale_ms"}."""
    k = QueueKeys(keys)
    stale, now_ms = tx.redis.eval(_TAKE_JOB, 5, *k.levels, k.log, keys("queue", "taken_by", tx.lane), str(tx.op_id),
                                  job, level, int(guarded))
    if stale < 0:
        raise StaleRead(f"job {job} is no longer the queue's next")
    return {"job": job, "stale": bool(stale), "stale_ms": _stale_ms(now_ms, read_at)}


WORKFLOWS = (
    Workflow("read_balance", "deduct_from_read", _deduction_from),
    Workflow("read_plan", "write_plan_step", _next_step_from),
    Workflow("read_queue", "take_job", _take_from),
)
