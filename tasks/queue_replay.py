"""The queue's log replayed without the scripts' help, from PostgreSQL (queue_log, where the
drain moved it), in stream order, in batches from a server-side cursor.

What a replay holds is bounded by the queue, not by the run: the jobs waiting in each level and
those held by consumers, and the violations found. What a judgement needs to know of a job's
whole history (was it enqueued or dequeued before; is it ever dequeued later) PostgreSQL adds to
each entry, so the replay keeps no set of every job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg

from db.redis_drain import StreamId
from tasks.queue import PRIORITIES

__all__ = ["Replay", "replay_log"]

_FETCH = 10_000

# Each entry up to the audit's instant, oldest first, with what the log says of its job: how
# many times it was enqueued and dequeued before this entry, and whether it is real: dequeued at
# some point, or still in a level at the end (the temporary table queue_now).
_ENTRIES = """
    SELECT event, job, level, depth, consumer,
           count(*) FILTER (WHERE event = 'enqueue') OVER earlier,
           count(*) FILTER (WHERE event = 'dequeue') OVER earlier,
           bool_or(event = 'dequeue') OVER whole OR job IN (SELECT job FROM queue_now WHERE place = 'level')
    FROM queue_log
    WHERE (stream_ms, stream_seq) <= (%s, %s)
    WINDOW earlier AS (PARTITION BY job ORDER BY stream_ms, stream_seq
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           whole AS (PARTITION BY job)
    ORDER BY stream_ms, stream_seq
"""


@dataclass
class Replay:
    """The queue as its log tells it, rebuilt event by event.

    Order and the deepest the queue was are judged only among real jobs: those the log shows
    dequeued at some point, or that are still in the lists. A job removed behind the log's back
    is no longer in the lists while the log thinks it waits, so counting it would blame the
    consumers that passed it by and the producers that took its place; it is reported lost
    instead. `deepest` is the most real jobs the log had waiting at once (its own count, never
    the scripts'); `depth` counts every job the log enqueued and did not dequeue, to compare
    with the depth the scripts counted in the lists.
    """

    waiting: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in PRIORITIES])  # job -> rank
    level_of: dict[str, int] = field(default_factory=dict)  # a waiting real job -> its level (0 = high)
    depth: int = 0
    deepest: int = 0
    rank: int = 0
    held: dict[str, str] = field(default_factory=dict)  # job -> consumer, dequeued and not acknowledged
    duplicates: set[str] = field(default_factory=set)  # enqueued, or dequeued, more than once
    inversions: int = 0
    fifo_violations: int = 0
    # Where the lists and the log disagree, as the log shows it.
    depth_disagreements: int = 0
    never_enqueued: set[str] = field(default_factory=set)  # dequeued, but the log never enqueued them before
    moved: set[str] = field(default_factory=set)  # dequeued from another level than their own
    stray_acks: set[str] = field(default_factory=set)  # acknowledged by a consumer that did not hold them
    unreadable: int = 0

    def apply(self, event: str, job: str, level: int | None, depth: int | None, consumer: str,
              enqueues_before: int, dequeues_before: int, real: bool) -> None:
        if event == "enqueue":
            self._enqueue(job, level - 1, depth, enqueues_before, real)
        elif event == "dequeue":
            self._dequeue(job, level - 1, depth, consumer, enqueues_before, dequeues_before)
        elif event == "ack":
            self._ack(job, consumer)
        else:  # written by something other than the scripts
            self.unreadable += 1

    def _saw(self, depth: int) -> None:
        if depth != self.depth:
            self.depth_disagreements += 1

    def _enqueue(self, job: str, level: int, depth: int, enqueues_before: int, real: bool) -> None:
        if enqueues_before:
            self.duplicates.add(job)  # its first enqueue keeps its place
        else:
            self.depth += 1
            if real:
                self.waiting[level][job] = self.rank
                self.level_of[job] = level
                self.deepest = max(self.deepest, len(self.level_of))
        self.rank += 1
        self._saw(depth)

    def _dequeue(self, job: str, level: int, depth: int, consumer: str, enqueues_before: int,
                 dequeues_before: int) -> None:
        self._saw(depth)
        if dequeues_before:
            self.duplicates.add(job)
        elif enqueues_before:
            self.depth -= 1
        else:
            self.never_enqueued.add(job)
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


def replay_log(conn: psycopg.Connection, through: StreamId) -> Replay:
    """The replay of queue_log up to `through` (inside a transaction that holds queue_now)."""
    replay = Replay()
    with conn.cursor(name="queue_replay") as entries:
        entries.itersize = _FETCH
        entries.execute(_ENTRIES, (through.ms, through.seq))
        for event, job, level, depth, consumer, enqueues_before, dequeues_before, real in entries:
            replay.apply(event, _text(job), level, depth, _text(consumer), enqueues_before, dequeues_before,
                         bool(real))
    return replay


def _text(op_id: uuid.UUID | None) -> str:
    return "" if op_id is None else str(op_id)
