"""The queue scenario: a bounded priority queue of tool jobs in Redis.

Producers enqueue jobs at high, normal or low priority; a full queue refuses a job atomically
(one Lua script: the depth check and the push cannot be separated). Consumers take the
highest priority first, FIFO within a level, and acknowledge after processing. The scripts
keep their own account (counts, sets of job ids, the deepest the queue ever was, and whether a
higher priority was waiting when a lower one was served), which the audit checks.
"""

from __future__ import annotations

import time
import uuid

import redis

from db.audits import AuditContext, Check
from db.errors import QueueFull
from db.redis_keys import RedisKeys
from db.tool import Transaction

__all__ = ["PRIORITIES", "enqueue_job", "dequeue_job", "audit_queue", "queue_depth"]

PRIORITIES = ("high", "normal", "low")
_PRIORITY_WEIGHTS = (1, 3, 2)

# KEYS: the three levels (high first), stats hash, set of enqueued ids
# ARGV: capacity, level (1-3), job, job id
_ENQUEUE = """
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
local capacity = tonumber(ARGV[1])
if depth >= capacity then
  redis.call('HINCRBY', KEYS[4], 'rejected', 1)
  return -1
end
redis.call('RPUSH', KEYS[tonumber(ARGV[2])], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('HINCRBY', KEYS[4], 'enqueued', 1)
depth = depth + 1
if depth > tonumber(redis.call('HGET', KEYS[4], 'max_depth') or '0') then
  redis.call('HSET', KEYS[4], 'max_depth', depth)
end
if depth > capacity then
  redis.call('HINCRBY', KEYS[4], 'overshoots', 1)
end
return depth
"""

# KEYS: the three levels (high first), stats hash, set of dequeued ids, set of jobs in processing
_DEQUEUE = """
for level = 1, 3 do
  local job = redis.call('LPOP', KEYS[level])
  if job then
    for higher = 1, level - 1 do
      if redis.call('LLEN', KEYS[higher]) > 0 then
        redis.call('HINCRBY', KEYS[4], 'inversions', 1)
      end
    end
    local id = string.match(job, '^[^|]+')
    if redis.call('SADD', KEYS[5], id) == 0 then
      redis.call('HINCRBY', KEYS[4], 'duplicates', 1)
    end
    redis.call('SADD', KEYS[6], id)
    redis.call('HINCRBY', KEYS[4], 'dequeued', 1)
    return job
  end
end
return false
"""


class _Keys:
    def __init__(self, keys: RedisKeys) -> None:
        self.levels = [keys("queue", level) for level in PRIORITIES]
        self.stats = keys("queue", "stats")
        self.enqueued = keys("queue", "enqueued")
        self.dequeued = keys("queue", "dequeued")
        self.processing = keys("queue", "processing")
        self.acknowledged = keys("queue", "acknowledged")


def enqueue_job(tx: Transaction, *, keys: RedisKeys, capacity: int) -> None:
    k = _Keys(keys)
    level = tx.rng.choices((1, 2, 3), weights=_PRIORITY_WEIGHTS)[0]
    job = f"{tx.op_id}|{level}|{time.time()!r}"
    depth = tx.redis.eval(_ENQUEUE, 5, *k.levels, k.stats, k.enqueued, capacity, level, job, str(tx.op_id))
    if depth < 0:
        raise QueueFull(f"queue at its capacity of {capacity}")


def dequeue_job(tx: Transaction, *, keys: RedisKeys) -> None:
    k = _Keys(keys)
    job = tx.redis.eval(_DEQUEUE, 6, *k.levels, k.stats, k.dequeued, k.processing)
    if job is None:
        return  # nothing to do: an idle consumer
    job_id, _, enqueued_at = job.decode().split("|")
    tx.observe("queue_wait", max(0.0, time.time() - float(enqueued_at)))
    tx.work()
    tx.redis.smove(k.processing, k.acknowledged, job_id)


def queue_depth(client: redis.Redis, keys: RedisKeys) -> int:
    k = _Keys(keys)
    with client.pipeline(transaction=False) as pipe:
        for level in k.levels:
            pipe.llen(level)
        return sum(pipe.execute())


def audit_queue(ctx: AuditContext, *, capacity: int) -> list[Check]:
    k = _Keys(ctx.keys)
    r = ctx.redis
    stats = {key.decode(): int(value) for key, value in r.hgetall(k.stats).items()}
    enqueued, dequeued = stats.get("enqueued", 0), stats.get("dequeued", 0)
    queued = queue_depth(r, ctx.keys)
    enqueued_ids = {uuid.UUID(raw.decode()) for raw in r.smembers(k.enqueued)}
    dequeued_ids = {uuid.UUID(raw.decode()) for raw in r.smembers(k.dequeued)}
    acknowledged = ctx.acknowledged_of(["enqueue_job"])
    never_enqueued = [op for op in acknowledged.succeeded if op not in enqueued_ids]
    rejected_seen = [op for op in acknowledged.rejected if op in enqueued_ids or op in dequeued_ids]
    lost = enqueued - dequeued - queued
    in_processing = r.scard(k.processing)
    return [
        Check("jobs_accounted_for", lost == 0 and len(enqueued_ids) == enqueued, enqueued, dequeued + queued,
              f"enqueued {enqueued} = dequeued {dequeued} + still queued {queued}"
              f" ({in_processing} dequeued but not yet acknowledged)", anomaly="lost_jobs",
              anomaly_count=abs(lost)),
        Check("no_job_dequeued_twice", stats.get("duplicates", 0) == 0, 0, stats.get("duplicates", 0),
              "each job id was handed to one consumer only", anomaly="duplicate_jobs",
              anomaly_count=stats.get("duplicates", 0)),
        Check("acknowledged_jobs_enqueued", not never_enqueued, len(acknowledged.succeeded),
              len(acknowledged.succeeded) - len(never_enqueued),
              "every job a producer was told was queued is in the queue's record"
              + (f"; missing {never_enqueued[:3]}" if never_enqueued else "")),
        Check("rejected_jobs_never_appear", not rejected_seen, 0, len(rejected_seen),
              f"{len(acknowledged.rejected)} jobs were refused as overflow; none of them was queued"),
        Check("capacity_never_exceeded", stats.get("overshoots", 0) == 0, f"<= {capacity}",
              stats.get("max_depth", 0), f"deepest the queue ever was: {stats.get('max_depth', 0)}",
              anomaly="capacity_overshoots", anomaly_count=stats.get("overshoots", 0)),
        Check("priority_order_held", stats.get("inversions", 0) == 0, 0, stats.get("inversions", 0),
              "no consumer got a lower-priority job while a higher one was waiting", anomaly="priority_inversions",
              anomaly_count=stats.get("inversions", 0)),
    ]
