"""The queue scenario: a bounded priority queue of tool jobs in Redis.

Producers enqueue jobs at high, normal or low priority; a full queue refuses a job atomically
(one Lua script: the depth check and the push cannot be separated). Consumers take the
highest priority first, FIFO within a level, hold the job in `processing` while they work, and
acknowledge it. Each script also appends what it did to a log (a Redis stream) in the same
atomic step. The audit replays that log on its own and compares it with the lists the
consumers really read: capacity, priority and FIFO order, and every job by id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import gevent
import redis

from db.audits import AuditContext, Check, listing_ids
from db.errors import QueueFull
from db.op_ids import OpIds
from db.redis_keys import RedisKeys
from db.tool import Transaction

__all__ = ["PRIORITIES", "enqueue_job", "dequeue_job", "audit_queue", "queue_depth"]

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

# KEYS: the three levels (high first), the log
# ARGV: capacity, level (1-3), job id
_ENQUEUE = _SERVER_NOW + f"""
local depth = {_DEPTH}
if depth >= tonumber(ARGV[1]) then
  return -1
end
redis.call('RPUSH', KEYS[tonumber(ARGV[2])], ARGV[3] .. '|' .. server_now())
redis.call('XADD', KEYS[4], '*', 'event', 'enqueue', 'job', ARGV[3], 'level', ARGV[2], 'depth', depth + 1)
return depth + 1
"""

# KEYS: the three levels (high first), processing (consumer -> the job it holds), the log
# ARGV: the consumer (its call's op id)
# Sent again after a lost reply, it returns the job the first send took instead of a second one.
_DEQUEUE = _SERVER_NOW + f"""
local held = redis.call('HGET', KEYS[4], ARGV[1])
if held then
  return held
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
    return held
  end
end
return false
"""

# KEYS: processing, the log
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
return 1
"""

# The dequeue and ack scripts are idempotent under the consumer's id, so a send whose reply was
# lost (--chaos redis-kill) is sent again instead of leaving a job held by nobody. A connection
# lost this many times in a row ends the call indeterminate, its job left in `processing`.
_SENDS = 3
_REPLY_LOST = (redis.ConnectionError, redis.TimeoutError)


class _Keys:
    def __init__(self, keys: RedisKeys) -> None:
        self.levels = [keys("queue", level) for level in PRIORITIES]
        self.processing = keys("queue", "processing")
        self.log = keys("queue", "log")


def enqueue_job(tx: Transaction, *, keys: RedisKeys, capacity: int) -> None:
    k = _Keys(keys)
    level = tx.rng.choices((1, 2, 3), weights=_PRIORITY_WEIGHTS)[0]
    depth = tx.redis.eval(_ENQUEUE, 4, *k.levels, k.log, capacity, level, str(tx.op_id))
    if depth < 0:
        raise QueueFull(f"queue at its capacity of {capacity}")


def dequeue_job(tx: Transaction, *, keys: RedisKeys) -> None:
    """Take the next job, work on it, acknowledge it.

    Locust kills an agent it stops when it finds it waiting, and one waking from its think time
    just then is killed in the middle of its next call. A consumer is not left holding a job
    so: it finishes the job in hand first, as a worker told to stop does, and then stops. Only
    a consumer that really dies (its process, or its connection for good) leaves a job held by
    nobody, which the audit reports.
    """
    consumer = gevent.spawn(_take_work_acknowledge, tx, _Keys(keys))
    try:
        consumer.get()
    except gevent.GreenletExit:
        consumer.get()
        raise


def _take_work_acknowledge(tx: Transaction, k: _Keys) -> None:
    """A failed acknowledgement (the job is no longer held by this consumer) is an error of the
    call: the script's error reply."""
    consumer = str(tx.op_id)
    held = _sent_until_answered(lambda resent: tx.redis.eval(_DEQUEUE, 5, *k.levels, k.processing, k.log, consumer))
    if held is None:
        return  # nothing to do: an idle consumer
    job_id, enqueued_at, dequeued_at = held.decode().split("|")
    # One server's clock, which may still be stepped back between the two readings.
    tx.observe("queue_wait", max(0.0, (int(dequeued_at) - int(enqueued_at)) / 1e6))
    tx.work()
    _sent_until_answered(lambda resent: tx.redis.eval(_ACK, 2, k.processing, k.log, consumer, job_id, int(resent)))


def _sent_until_answered(send: Callable[[bool], T]) -> T:
    """`send(resent)`'s answer, sent again while its connection is lost (at most _SENDS times)."""
    for attempt in range(1, _SENDS):
        try:
            return send(attempt > 1)
        except _REPLY_LOST:
            continue
    return send(True)


def queue_depth(client: redis.Redis, keys: RedisKeys) -> int:
    k = _Keys(keys)
    with client.pipeline(transaction=False) as pipe:
        for level in k.levels:
            pipe.llen(level)
        return sum(pipe.execute())


# --- The audit -------------------------------------------------------------------------------

_LOG_BATCH = 10_000


@dataclass(frozen=True)
class _Snapshot:
    """The queue's keys at one instant (one MULTI): job ids per level, head first; who holds
    which job; and the log's last entry, up to which the audit replays it."""

    levels: list[list[str]]
    held: dict[str, str]  # consumer -> job id
    log_end: bytes | None

    @property
    def queued(self) -> Counter[str]:
        return Counter(job for level in self.levels for job in level)


def _job_id(entry: bytes) -> str:
    return entry.decode().split("|", 1)[0]


def _snapshot(r: redis.Redis, k: _Keys) -> _Snapshot:
    with r.pipeline(transaction=True) as pipe:
        for level in k.levels:
            pipe.lrange(level, 0, -1)
        pipe.hgetall(k.processing)
        pipe.xrevrange(k.log, count=1)
        *levels, held, last = pipe.execute()
    return _Snapshot(
        levels=[[_job_id(entry) for entry in level] for level in levels],
        held={consumer.decode(): _job_id(job) for consumer, job in held.items()},
        log_end=last[0][0] if last else None,
    )


def _log_entries(r: redis.Redis, log: str, end: bytes | None) -> Iterator[dict[str, str]]:
    """The log's entries up to `end`, oldest first, in batches."""
    start = "-"
    while end is not None:
        batch = r.xrange(log, min=start, max=end, count=_LOG_BATCH)
        for _, fields in batch:
            yield {key.decode(): value.decode() for key, value in fields.items()}
        if len(batch) < _LOG_BATCH:
            return
        start = "(" + batch[-1][0].decode()


@dataclass
class _Replay:
    """The queue as its log tells it, rebuilt event by event without the scripts' help.

    Order and the deepest the queue was are judged only among `real` jobs: those the log later
    shows dequeued, or that are still in the lists. A job removed behind the log's back is no
    longer in the lists while the log thinks it waits, so counting it would blame the consumers
    that passed it by and the producers that took its place; it is reported lost instead.
    `depth` counts every job the log enqueued and did not dequeue, to compare with the depth
    the scripts counted in the lists.
    """

    real: set[str]
    waiting: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in PRIORITIES])  # job -> rank
    level_of: dict[str, int] = field(default_factory=dict)  # a waiting real job -> its level (0 = high)
    depth: int = 0
    deepest: int = 0
    rank: int = 0
    enqueued: set[str] = field(default_factory=set)
    dequeued: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # job -> consumer, dequeued and not acknowledged
    duplicates: set[str] = field(default_factory=set)
    inversions: int = 0
    fifo_violations: int = 0
    # Where the lists and the log disagree, as the log shows it.
    depth_disagreements: int = 0
    never_enqueued: set[str] = field(default_factory=set)  # dequeued, but the log never enqueued them
    moved: set[str] = field(default_factory=set)  # dequeued from another level than their own
    stray_acks: set[str] = field(default_factory=set)  # acknowledged by a consumer that did not hold them
    unreadable: int = 0

    def apply(self, entry: dict[str, str]) -> None:
        try:
            event, job = entry["event"], entry["job"]
            if event == "enqueue":
                self._enqueue(job, int(entry["level"]) - 1, int(entry["depth"]))
            elif event == "dequeue":
                self._dequeue(job, int(entry["level"]) - 1, int(entry["depth"]), entry["consumer"])
            elif event == "ack":
                self._ack(job, entry["consumer"])
            else:
                self.unreadable += 1
        except (KeyError, ValueError):  # written by something other than the scripts
            self.unreadable += 1

    def _saw(self, depth: int) -> None:
        self.deepest = max(self.deepest, depth, len(self.level_of))
        if depth != self.depth:
            self.depth_disagreements += 1

    def _enqueue(self, job: str, level: int, depth: int) -> None:
        if job in self.enqueued:
            self.duplicates.add(job)  # its first enqueue keeps its place
        else:
            self.enqueued.add(job)
            self.depth += 1
            if job in self.real:
                self.waiting[level][job] = self.rank
                self.level_of[job] = level
        self.rank += 1
        self._saw(depth)

    def _dequeue(self, job: str, level: int, depth: int, consumer: str) -> None:
        self._saw(depth)
        if job in self.dequeued:
            self.duplicates.add(job)
        elif job in self.enqueued:
            self.depth -= 1
        else:
            self.never_enqueued.add(job)
        self.dequeued.add(job)
        self.held[job] = consumer
        own = self.level_of.pop(job, None)
        if own is None:
            return
        self._judge_order(job, own)
        del self.waiting[own][job]
        if own != level:
            self.moved.add(job)

    def _judge_order(self, job: str, level: int) -> None:
        """A dequeue should take the oldest job of the highest level that has one."""
        if any(self.waiting[higher] for higher in range(level)):
            self.inversions += 1
        elif next(iter(self.waiting[level])) != job:
            self.fifo_violations += 1

    def _ack(self, job: str, consumer: str) -> None:
        if self.held.get(job) == consumer:
            del self.held[job]
        else:
            self.stray_acks.add(job)


def _replayed(r: redis.Redis, k: _Keys, snapshot: _Snapshot) -> _Replay:
    """Two passes over the log: which jobs were really dequeued, then the replay."""
    dequeued = {entry.get("job") for entry in _log_entries(r, k.log, snapshot.log_end) if entry.get("event") == "dequeue"}
    replay = _Replay(real=dequeued | set(snapshot.queued))
    for entry in _log_entries(r, k.log, snapshot.log_end):
        replay.apply(entry)
    return replay


def _served_ahead_of_older(ranks: list[int]) -> int:
    """Jobs in a level's list (head first, by enqueue rank) that would be served while an older
    job of the level still waits behind them."""
    ahead, oldest_behind = 0, None
    for rank in reversed(ranks):
        if oldest_behind is not None and rank > oldest_behind:
            ahead += 1
        oldest_behind = rank if oldest_behind is None else min(oldest_behind, rank)
    return ahead


def _ids(op_ids: OpIds) -> set[str]:
    return {str(op) for op in op_ids}


def audit_queue(ctx: AuditContext, *, capacity: int) -> list[Check]:
    """The queue's keys at one instant, the log replayed up to that instant, and the enqueue
    calls' outcomes, compared job by job."""
    k = _Keys(ctx.keys)
    snapshot = _snapshot(ctx.redis, k)
    replay = _replayed(ctx.redis, k, snapshot)
    acknowledged = ctx.acknowledged_of(["enqueue_job"])
    succeeded, indeterminate, failed = (_ids(acknowledged.succeeded), _ids(acknowledged.indeterminate),
                                        _ids(acknowledged.failed))
    queued, held = snapshot.queued, set(snapshot.held.values())
    every_job = replay.enqueued | replay.dequeued | set(queued) | held
    missing_from_levels = replay.enqueued - replay.dequeued - set(queued)
    lost = missing_from_levels - held
    return [
        _acknowledged_jobs_enqueued(succeeded, replay),
        _jobs_within_acknowledged(every_job, succeeded | indeterminate | failed, len(indeterminate)),
        _failed_jobs_never_queued(every_job & failed, len(failed), len(acknowledged.rejected)),
        _jobs_accounted_for(lost, replay),
        _no_duplicate_jobs(snapshot, replay),
        _no_unacknowledged_jobs(snapshot, replay),
        _capacity_never_exceeded(capacity, max(replay.deepest, sum(queued.values()))),
        _priority_order_held(replay),
        _fifo_within_level(snapshot, replay),
        _queue_matches_its_log(snapshot, replay, missing_from_levels),
    ]


def _acknowledged_jobs_enqueued(succeeded: set[str], replay: _Replay) -> Check:
    missing = succeeded - replay.enqueued
    return Check("acknowledged_jobs_enqueued", not missing, len(succeeded), len(succeeded) - len(missing),
                 f"producers were told these were queued, the log never enqueued them: {listing_ids(missing)}"
                 if missing else "every job a producer was told was queued is in the log's enqueues",
                 anomaly="lost_jobs", anomaly_count=len(missing))


def _jobs_within_acknowledged(every_job: set[str], called: set[str], indeterminate: int) -> Check:
    unknown = every_job - called
    return Check("jobs_within_acknowledged", not unknown, 0, len(unknown),
                 f"jobs of no enqueue the harness made: {listing_ids(unknown)}" if unknown
                 else f"every job in the log, the levels or processing belongs to a succeeded enqueue,"
                      f" or to one of the {indeterminate} indeterminate ones")


def _failed_jobs_never_queued(applied: set[str], failed: int, rejected: int) -> Check:
    return Check("failed_jobs_never_queued", not applied, 0, len(applied),
                 f"queued although the producer was told it failed: {listing_ids(applied)}" if applied
                 else f"none of the {failed} failed enqueues ({rejected} refused by a full queue) was ever queued",
                 anomaly="failed_but_applied", anomaly_count=len(applied))


def _jobs_accounted_for(lost: set[str], replay: _Replay) -> Check:
    enqueued = len(replay.enqueued)
    return Check("jobs_accounted_for", not lost, enqueued, enqueued - len(lost),
                 f"enqueued, never dequeued, and in no level nor in processing: {listing_ids(lost)}" if lost
                 else "every job the log enqueued was dequeued or is still queued",
                 anomaly="lost_jobs", anomaly_count=len(lost))


def _no_duplicate_jobs(snapshot: _Snapshot, replay: _Replay) -> Check:
    twice_queued = {job for job, times in snapshot.queued.items() if times > 1}
    queued_again = set(snapshot.queued) & replay.dequeued
    duplicates = replay.duplicates | twice_queued | queued_again
    return Check("no_duplicate_jobs", not duplicates, 0, len(duplicates),
                 f"enqueued or dequeued more than once, or queued again after their dequeue: {listing_ids(duplicates)}"
                 if duplicates else "each job was enqueued once and handed to one consumer only",
                 anomaly="duplicate_jobs", anomaly_count=len(duplicates))


def _no_unacknowledged_jobs(snapshot: _Snapshot, replay: _Replay) -> Check:
    """After the drain (agents finish the call they are in, a consumer killed mid-call its job),
    a job still held was taken by a consumer that died, or by something other than a consumer:
    it is neither done nor queued."""
    unacknowledged = set(replay.held) | set(snapshot.held.values())
    return Check("no_unacknowledged_jobs", not unacknowledged, 0, len(unacknowledged),
                 f"dequeued and never acknowledged: {listing_ids(unacknowledged)}" if unacknowledged
                 else "every dequeued job was acknowledged by the consumer that took it",
                 anomaly="unacknowledged_jobs", anomaly_count=len(unacknowledged))


def _capacity_never_exceeded(capacity: int, deepest: int) -> Check:
    over = max(0, deepest - capacity)
    return Check("capacity_never_exceeded", not over, f"<= {capacity}", deepest,
                 f"deepest the queue was, in the log's replay, as the scripts counted it, and now: {deepest}",
                 anomaly="capacity_overshoots", anomaly_count=over)


def _priority_order_held(replay: _Replay) -> Check:
    return Check("priority_order_held", not replay.inversions, 0, replay.inversions,
                 "dequeues that took a job while one of a higher priority waited, replaying the log",
                 anomaly="priority_inversions", anomaly_count=replay.inversions)


def _fifo_within_level(snapshot: _Snapshot, replay: _Replay) -> Check:
    queued_ahead = sum(
        _served_ahead_of_older([replay.waiting[level][job] for job in dict.fromkeys(jobs) if job in replay.waiting[level]])
        for level, jobs in enumerate(snapshot.levels)
    )
    violations = replay.fifo_violations + queued_ahead
    return Check("fifo_within_level", not violations, 0, violations,
                 f"dequeues that passed an older job of their level: {replay.fifo_violations}; jobs still"
                 f" queued ahead of an older one of their level: {queued_ahead}",
                 anomaly="fifo_violations", anomaly_count=violations)


def _queue_matches_its_log(snapshot: _Snapshot, replay: _Replay, missing_from_levels: set[str]) -> Check:
    """Whatever changed the lists or `processing` without a script leaves them unlike the log."""
    misplaced = {job for level, jobs in enumerate(snapshot.levels) for job in jobs if job not in replay.waiting[level]}
    held_unlike_log = set(snapshot.held.items()) ^ {(consumer, job) for job, consumer in replay.held.items()}
    disagreements = {
        "events at which the scripts counted another depth than the log's": replay.depth_disagreements,
        "jobs dequeued that the log never enqueued": len(replay.never_enqueued),
        "jobs dequeued from another level than their own": len(replay.moved),
        "acknowledgements by a consumer that did not hold the job": len(replay.stray_acks),
        "log entries no script wrote": replay.unreadable,
        "jobs in a level where the log has them nowhere or elsewhere": len(misplaced),
        "jobs the log has queued that are in no level": len(missing_from_levels),
        "jobs held in processing unlike the log": len(held_unlike_log),
    }
    found = {what: count for what, count in disagreements.items() if count}
    return Check("queue_matches_its_log", not found, 0, sum(found.values()),
                 "; ".join(f"{what}: {count}" for what, count in found.items())
                 or "the levels, in order, and processing hold what the log's replay leaves in them")
