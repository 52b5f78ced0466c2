"""The queue scenario: a bounded priority queue of tool jobs in Redis.

Producers enqueue jobs at high, normal or low priority; a full queue refuses a job atomically
(one Lua script: the depth check and the push cannot be separated). Consumers take the
highest priority first, FIFO within a level, hold the job in `processing` while they work, and
acknowledge it. Each script also appends what it did to a log (a Redis stream) in the same
atomic step. The coordinator drains the log into PostgreSQL (queue_log) during the run, so Redis
holds the queue and the log's last few entries, however long the run; the audit
(tasks/queue_audit.py) replays the log on its own and compares it with the lists the consumers
really read and with what each call was told (the level a job was queued at, the job a consumer
took): capacity, priority and FIFO order, every job and every consumer by id.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import redis

from db.audits import AuditContext
from db.errors import QueueFull
from db.redis_drain import drain_stream
from db.redis_keys import RedisKeys
from db.tool import Transaction

__all__ = ["PRIORITIES", "QueueKeys", "enqueue_job", "enqueue_job_arguments", "dequeue_job", "queue_depth",
           "drain_queue_log"]

T = TypeVar("T")

PRIORITIES = ("high", "normal", "low")
_PRIORITY_WEIGHTS = (1, 3, 2)

# A job in a level's list is "<job id>|<enqueued at>", a job held in `processing` is that and
# "|<dequeued at>": microseconds of the Redis server's clock (TIME), so that producers and
# consumers on different hosts are timed by one clock.
_SERVER_NOW = """
local function server_now()
  local time = redis.call('TIME')
  return time[1] .. string.format('%06d', tonumber(time[2]))
end
"""
_DEPTH = "redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])"

# Each log entry has `event` (enqueue, dequeue or ack) and `job`; an enqueue and a dequeue also
# `level` (1 = high) and `depth`: the most jobs the script saw in the queue (after its push,
# before its pop), counted from the lists themselves; a dequeue and an ack `consumer`.

# KEYS: the three levels (high first), the log, the agent's last job queued
# ARGV: capacity, level (1-3), job id
# Sent again (over MCP: the call sent again whole after its reply was lost), it finds its job
# queued already by the agent's key, and queues it no second time.
_ENQUEUE = _SERVER_NOW + f"""
if redis.call('GET', KEYS[5]) == ARGV[3] then
  return 0
end
local depth = {_DEPTH}
if depth >= tonumber(ARGV[1]) then
  return -1
end
redis.call('RPUSH', KEYS[tonumber(ARGV[2])], ARGV[3] .. '|' .. server_now())
redis.call('XADD', KEYS[4], '*', 'event', 'enqueue', 'job', ARGV[3], 'level', ARGV[2], 'depth', depth + 1)
redis.call('SET', KEYS[5], ARGV[3])
return depth + 1
"""

# KEYS: the three levels (high first), processing (consumer -> the job it holds), the log, the
# agent's last job acknowledged
# ARGV: the consumer (its call's op id)
# {the job held, 1 when it was acknowledged already}, or false: the queue is empty. Sent again
# after a lost reply, it returns the job the first send took instead of a second one: still held,
# or (the call sent again whole, over MCP) acknowledged already.
_DEQUEUE = _SERVER_NOW + f"""
local held = redis.call('HGET', KEYS[4], ARGV[1])
if held then
  return {{held, 0}}
end
local consumer, acknowledged = string.match(redis.call('GET', KEYS[6]) or '', '^(%S+) (.+)$')
if consumer == ARGV[1] then
  return {{acknowledged, 1}}
end
local depth = {_DEPTH}
for level = 1, 3 do
  local job = redis.call('LINDEX', KEYS[level], 0)
  if job then
    local id = string.match(job, '^([^|]+)|%d+$')
    if not id then
      return redis.error_reply('ERR the head of queue level ' .. level .. ' is no job: ' .. job)
    end
    redis.call('LPOP', KEYS[level])
    held = job .. '|' .. server_now()
    redis.call('HSET', KEYS[4], ARGV[1], held)
    redis.call('XADD', KEYS[5], '*', 'event', 'dequeue', 'job', id, 'level', level, 'depth', depth,
               'consumer', ARGV[1])
    return {{held, 0}}
  end
end
return false
"""

# KEYS: processing, the log, the agent's last job acknowledged
# ARGV: the consumer, the job id, 1 when an earlier send's reply was lost (else 0)
_ACK = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held and ARGV[3] == '1' then
  return 0
end
if not held or string.match(held, '^[^|]+') ~= ARGV[2] then
  return redis.error_reply('ERR consumer ' .. ARGV[1] .. ' does not hold job ' .. ARGV[2] .. ': ' .. tostring(held))
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'event', 'ack', 'job', ARGV[2], 'consumer', ARGV[1])
redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. held)
return 1
"""

# The dequeue and ack scripts are idempotent under the consumer's id, so a send whose reply was
# lost (--chaos redis-kill) is sent again instead of leaving a job held by nobody. A connection
# lost this many times in a row ends the call indeterminate, its job left in `processing`. The
# agents' keys (one each: an agent makes one call at a time, and a call is sent again only before
# its agent's next) make a whole call sent again idempotent too (--chaos mcp-kill), as
# update_plan's do.
_SENDS = 3
_REPLY_LOST = (redis.ConnectionError, redis.TimeoutError)


class QueueKeys:
    def __init__(self, keys: RedisKeys) -> None:
        self.levels = [keys("queue", level) for level in PRIORITIES]
        self.processing = keys("queue", "processing")
        self.log = keys("queue", "log")
        self._keys = keys

    def enqueued_by(self, agent_id: str) -> str:
        """The agent's last job queued."""
        return self._keys("queue", "enqueued_by", agent_id)

    def acknowledged_by(self, agent_id: str) -> str:
        """The consumer the agent last ran, and the job it acknowledged."""
        return self._keys("queue", "acknowledged_by", agent_id)


def enqueue_job_arguments(rng: random.Random) -> dict[str, int]:
    """The job's priority: its level, 1 = high."""
    return {"level": rng.choices((1, 2, 3), weights=_PRIORITY_WEIGHTS)[0]}


def enqueue_job(tx: Transaction, *, level: int, keys: RedisKeys, capacity: int) -> dict[str, int]:
    """Queue a job (its id: the call's op id) at `level`; the level it was queued at."""
    k = QueueKeys(keys)
    depth = tx.redis.eval(_ENQUEUE, 5, *k.levels, k.log, k.enqueued_by(tx.lane), capacity, level, str(tx.op_id))
    if depth < 0:
        raise QueueFull(f"queue at its capacity of {capacity}")
    return {"level": level}


def dequeue_job(tx: Transaction, *, keys: RedisKeys) -> dict[str, str | None]:
    """Take the next job, work on it, acknowledge it; the job taken ({"job": None}: the queue
    was empty). The consumer is the call's op id.

    Locust kills an agent it stops when it finds it waiting, and one waking from its think time
    just then is killed in the middle of its next call. A consumer is not left holding a job
    so: it finishes the job in hand first, as a worker told to stop does, and then stops. Only
    a consumer that really dies (its process, or its connection for good) leaves a job held by
    nobody, which the audit reports.
    """
    consumer = gevent.spawn(_take_work_acknowledge, tx, QueueKeys(keys))
    try:
        return {"job": consumer.get()}
    except gevent.GreenletExit:
        consumer.get()
        raise


def _take_work_acknowledge(tx: Transaction, k: QueueKeys) -> str | None:
    """The job taken and acknowledged, None for an idle consumer. A failed acknowledgement (the
    job is no longer held by this consumer) is an error of the call: the script's error reply."""
    consumer, acknowledged_by = str(tx.op_id), k.acknowledged_by(tx.lane)
    taken = _sent_until_answered(lambda resent: tx.redis.eval(_DEQUEUE, 6, *k.levels, k.processing, k.log,
                                                              acknowledged_by, consumer))
    if taken is None:
        return None
    held, acknowledged = taken
    job_id, enqueued_at, dequeued_at = held.decode().split("|")
    if acknowledged:  # this call, sent again: an earlier send took the job and acknowledged it
        return job_id
    # One server's clock, which may still be stepped back between the two readings.
    tx.observe("queue_wait", max(0.0, (int(dequeued_at) - int(enqueued_at)) / 1e6))
    tx.work()
    _sent_until_answered(lambda resent: tx.redis.eval(_ACK, 3, k.processing, k.log, acknowledged_by, consumer, job_id,
                                                      int(resent)))
    return job_id


def _sent_until_answered(send: Callable[[bool], T]) -> T:
    """`send(resent)`'s answer, sent again while its connection is lost (at most _SENDS times)."""
    for attempt in range(1, _SENDS):
        try:
            return send(attempt > 1)
        except _REPLY_LOST:
            continue
    return send(True)


def queue_depth(client: redis.Redis, keys: RedisKeys) -> int:
    k = QueueKeys(keys)
    with client.pipeline(transaction=False) as pipe:
        for level in k.levels:
            pipe.llen(level)
        return sum(pipe.execute())


_LOG_COLUMNS = ("event", "job", "level", "depth", "consumer")
_LOG_FIELDS = {  # what each script writes besides `event` and `job`
    "enqueue": ("level", "depth"),
    "dequeue": ("level", "depth", "consumer"),
    "ack": ("consumer",),
}


def _log_row(fields: dict[bytes, bytes]) -> tuple[Any, ...]:
    """A log entry as a queue_log row; 'unreadable' (and NULLs) for one no script wrote."""
    try:
        entry = {key.decode(): value.decode() for key, value in fields.items()}
        event = entry["event"]
        wanted = _LOG_FIELDS[event]
        level = int(entry["level"]) if "level" in wanted else None
        if level is not None and not 1 <= level <= len(PRIORITIES):
            raise ValueError(f"no queue level {level}")
        return (event, uuid.UUID(entry["job"]), level,
                int(entry["depth"]) if "depth" in wanted else None,
                uuid.UUID(entry["consumer"]) if "consumer" in wanted else None)
    except (KeyError, ValueError, UnicodeDecodeError):
        return ("unreadable", None, None, None, None)


def drain_queue_log(ctx: AuditContext) -> int:
    """Move the queue's log from Redis into queue_log; how many entries were moved."""
    return drain_stream(ctx.conn, ctx.schema, ctx.redis, QueueKeys(ctx.keys).log, "queue_log", _LOG_COLUMNS, _log_row)
