"""The queue's audit: the queue's keys at one instant, its log (drained into queue_log first)
replayed up to that instant, and the enqueue and dequeue calls' outcomes and values, compared
job by job and consumer by consumer (tasks/queue_consumers.py).

Sets of jobs are compared in PostgreSQL (the calls' outcomes and the jobs now in the queue are
copied beside queue_log), and the replay streams the log through a bounded state
(tasks/queue_replay.py): the audit's memory does not grow with the run.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass

import psycopg
import redis

from db.audits import SHOW_AT_MOST, AuditContext, Check, OpIdsNotStored, copy_outcomes, listing_ids
from db.redis_drain import StreamId
from tasks.queue import QueueKeys, drain_queue_log
from tasks.queue_consumers import Consumers, Found, consumers_in_log, consumers_within_dequeues, dequeues_in_log
from tasks.queue_replay import Replay, replay_log

__all__ = ["CONSUMER_TOOLS", "audit_queue"]

# The tools that take a job (the consumer: the call's op id), each told the job it took in its value
# (tasks/workflows.py's take_job too).
CONSUMER_TOOLS = ("dequeue_job", "take_job")

# The bound of a replay of every entry there is (a log Redis never had, or that was deleted).
_EVERY_ENTRY = StreamId(2**63 - 1, 2**63 - 1)


@dataclass(frozen=True)
class _Snapshot:
    """The queue's keys at one instant (one MULTI): job ids per level, head first; who holds
    which job; and the last id the log was given, up to which the audit replays it."""

    levels: list[list[str]]
    held: dict[str, str]  # consumer -> job id
    log_end: StreamId

    @property
    def queued(self) -> Counter[str]:
        return Counter(job for level in self.levels for job in level)


def _job_id(entry: bytes) -> str:
    return entry.decode().split("|", 1)[0]


def _snapshot(r: redis.Redis, k: QueueKeys) -> _Snapshot:
    with r.pipeline(transaction=True) as pipe:
        for level in k.levels:
            pipe.lrange(level, 0, -1)
        pipe.hgetall(k.processing)
        # The last id even when the drain has trimmed every entry; an error when there is no log.
        pipe.xinfo_stream(k.log)
        *levels, held, log = pipe.execute(raise_on_error=False)
    return _Snapshot(
        levels=[[_job_id(entry) for entry in level] for level in levels],
        held={consumer.decode(): _job_id(job) for consumer, job in held.items()},
        log_end=_EVERY_ENTRY if isinstance(log, redis.ResponseError) else StreamId.parse(log["last-generated-id"]),
    )


@dataclass(frozen=True)
class _Membership:
    """The jobs of the log, the levels and processing against the enqueues' outcomes."""

    enqueued: int  # jobs the log enqueued
    jobs: int  # jobs in the log, the levels or processing
    of_enqueues: int  # of those, the jobs of an enqueue the harness made (whatever its outcome)
    unreadable: int  # log entries no script wrote (their job or consumer no UUID)
    not_enqueued: Found  # succeeded enqueues the log never enqueued
    elsewhere: Found  # succeeded enqueues the log enqueued at another level than their producer was told
    unknown: Found  # jobs anywhere of no enqueue the harness made
    failed_applied: Found  # jobs anywhere of an enqueue reported failed
    lost: Found  # enqueued, never dequeued, in no level and not held
    missing_from_levels: int  # enqueued, never dequeued, in no level
    queued_again: set[str]  # in a level, and dequeued in the log


_MEMBERSHIP = """
    WITH logged AS (
        SELECT job, bool_or(event = 'enqueue') AS enqueued, bool_or(event = 'dequeue') AS dequeued,
               array_agg(DISTINCT level) FILTER (WHERE event = 'enqueue') AS levels
        FROM queue_log WHERE event IN ('enqueue', 'dequeue') AND (stream_ms, stream_seq) <= (%(ms)s, %(seq)s)
        GROUP BY job
    ), now AS (
        SELECT job, bool_or(place = 'level') AS queued, bool_or(place = 'processing') AS held
        FROM queue_now GROUP BY job
    ), jobs AS (
        SELECT job, coalesce(l.enqueued, false) AS enqueued, coalesce(l.dequeued, false) AS dequeued,
               coalesce(n.queued, false) AS queued, coalesce(n.held, false) AS held, l.levels
        FROM logged l FULL JOIN now n USING (job)
    ), told AS (
        SELECT op_id AS job, min(outcome) AS outcome, min(value::jsonb ->> 'level') AS level
        FROM harness_outcomes GROUP BY op_id
    ), both_sides AS (
        SELECT job, j.job IS NOT NULL AS anywhere, t.outcome,
               coalesce(j.enqueued AND j.levels = ARRAY[t.level::smallint], false) AS enqueued_as_told,
               coalesce(j.enqueued, false) AS enqueued,
               coalesce(j.dequeued, false) AS dequeued, coalesce(j.queued, false) AS queued,
               coalesce(j.held, false) AS held
        FROM jobs j FULL JOIN told t USING (job)
    )
    SELECT count(*) FILTER (WHERE enqueued), count(*) FILTER (WHERE anywhere),
           count(*) FILTER (WHERE anywhere AND outcome IS NOT NULL),
           (SELECT count(*) FROM queue_log
            WHERE event = 'unreadable' AND (stream_ms, stream_seq) <= (%(ms)s, %(seq)s)),
           (array_agg(job) FILTER (WHERE outcome = 'succeeded' AND NOT enqueued))[1:%(n)s],
           count(*) FILTER (WHERE outcome = 'succeeded' AND NOT enqueued),
           (array_agg(job) FILTER (WHERE outcome = 'succeeded' AND enqueued AND NOT enqueued_as_told))[1:%(n)s],
           count(*) FILTER (WHERE outcome = 'succeeded' AND enqueued AND NOT enqueued_as_told),
           (array_agg(job) FILTER (WHERE anywhere AND outcome IS NULL))[1:%(n)s],
           count(*) FILTER (WHERE anywhere AND outcome IS NULL),
           (array_agg(job) FILTER (WHERE anywhere AND outcome = 'failed'))[1:%(n)s],
           count(*) FILTER (WHERE anywhere AND outcome = 'failed'),
           (array_agg(job) FILTER (WHERE enqueued AND NOT dequeued AND NOT queued AND NOT held))[1:%(n)s],
           count(*) FILTER (WHERE enqueued AND NOT dequeued AND NOT queued AND NOT held),
           count(*) FILTER (WHERE enqueued AND NOT dequeued AND NOT queued),
           array_agg(job) FILTER (WHERE queued AND dequeued)
    FROM both_sides
"""


def _copy_queue_now(conn: psycopg.Connection, snapshot: _Snapshot) -> list[str]:
    """The jobs in the levels and in processing into the temporary table queue_now (job, place);
    those whose id is no UUID (no script wrote them) are returned instead."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS queue_now (job uuid, place text) ON COMMIT DROP")
    conn.execute("TRUNCATE queue_now")
    places = ([(job, "level") for job in snapshot.queued.elements()]
              + [(job, "processing") for job in snapshot.held.values()])
    strangers = []
    with conn.cursor().copy("COPY queue_now (job, place) FROM STDIN") as rows:
        for job, place in places:
            try:
                rows.write_row((uuid.UUID(job), place))
            except ValueError:
                strangers.append(job)
    return strangers


def _membership(conn: psycopg.Connection, log_end: StreamId, strangers: list[str]) -> _Membership:
    row = conn.execute(_MEMBERSHIP, {"ms": log_end.ms, "seq": log_end.seq, "n": SHOW_AT_MOST}).fetchone()
    enqueued, jobs, of_enqueues, unreadable, *found, missing_from_levels, queued_again = row
    sets = [Found([str(job) for job in shown or []], count) for shown, count in zip(found[0::2], found[1::2])]
    not_enqueued, elsewhere, unknown, failed_applied, lost = sets
    unknown = Found(unknown.shown + strangers, unknown.count + len(set(strangers)))
    return _Membership(enqueued, jobs + len(set(strangers)), of_enqueues, unreadable, not_enqueued, elsewhere,
                       unknown, failed_applied, lost, missing_from_levels, {str(job) for job in queued_again or []})


def audit_queue(ctx: AuditContext) -> list[Check]:
    """The queue's keys at one instant, the log replayed up to that instant, and the enqueue and
    dequeue calls' outcomes and values, compared job by job and consumer by consumer; none of it
    when the queue holds none of the calls' op ids (_op_ids_stored)."""
    snapshot = _snapshot(ctx.redis, QueueKeys(ctx.keys))
    drain_queue_log(ctx)  # the log up to the snapshot's instant, and maybe a little more
    enqueues = ctx.acknowledged_of(["enqueue_job"])
    dequeues = ctx.acknowledged_of(CONSUMER_TOOLS)
    conn = ctx.conn
    with ctx.in_schema():
        copy_outcomes(conn, enqueues)
        strangers = _copy_queue_now(conn, snapshot)
        found = _membership(conn, snapshot.log_end, strangers)
        consumers = consumers_in_log(conn, dequeues, snapshot.log_end)
        _op_ids_stored(len(enqueues.succeeded), found, consumers)
        replay = replay_log(conn, snapshot.log_end)
    return [
        _acknowledged_jobs_enqueued(len(enqueues.succeeded), found.not_enqueued, found.elsewhere),
        _jobs_within_acknowledged(found.unknown, len(enqueues.indeterminate)),
        _failed_jobs_never_queued(found.failed_applied, len(enqueues.failed), len(enqueues.rejected)),
        _jobs_accounted_for(found.lost, found.enqueued),
        dequeues_in_log(consumers),
        consumers_within_dequeues(consumers),
        _no_duplicate_jobs(snapshot, replay, found.queued_again, consumers),
        _no_unacknowledged_jobs(snapshot, replay),
        _capacity_never_exceeded(ctx.baseline.queue_capacity, replay.deepest, sum(snapshot.queued.values())),
        _priority_order_held(replay),
        _fifo_within_level(snapshot, replay),
        _queue_matches_its_log(snapshot, replay, found.missing_from_levels),
    ]


def _op_ids_stored(enqueued: int, found: _Membership, consumers: Consumers) -> None:
    """OpIdsNotStored when the queue holds jobs after succeeded enqueues, none of which is an
    enqueue's op id, or its log names consumers after dequeues that took a job, none of which is a
    dequeue's: the server that ran the scripts gave them ids of its own, not the calls' op ids (the
    job id and the consumer of tasks/queue.py), and no check could tell a job lost from one under
    another id. A log entry no script wrote (an id of the server's that is no UUID: the drain
    cannot read it) counts as one of either. A queue that holds nothing after succeeded enqueues
    is judged: every job lost."""
    unreadable = f" and the {found.unreadable} unreadable entries of its log" if found.unreadable else ""
    if enqueued and (found.jobs or found.unreadable) and not found.of_enqueues:
        raise OpIdsNotStored.none_of(f"the {found.jobs} jobs of the queue (its log, levels and processing){unreadable}",
                                     f"this run's {enqueued} succeeded enqueue_job calls")
    if consumers.took and (consumers.logged or found.unreadable) and not consumers.of_dequeues:
        raise OpIdsNotStored.none_of(f"the {consumers.logged} consumers of the queue's log{unreadable}",
                                     f"this run's {consumers.took} succeeded dequeue_job calls that took a job")


def _acknowledged_jobs_enqueued(succeeded: int, missing: Found, elsewhere: Found) -> Check:
    wrong = missing.count + elsewhere.count
    detail = "; ".join(what for what in (
        missing.count and f"producers were told these were queued, the log never enqueued them: {missing.listing()}",
        elsewhere.count and ("the log enqueued these at another level than their producers were told:"
                             f" {elsewhere.listing()}"),
    ) if what)
    return Check("acknowledged_jobs_enqueued", not wrong, succeeded, succeeded - wrong,
                 detail or "every job a producer was told was queued is in the log's enqueues, at the level the"
                           " producer was told",
                 anomaly="lost_jobs", anomaly_count=missing.count)


def _jobs_within_acknowledged(unknown: Found, indeterminate: int) -> Check:
    return Check("jobs_within_acknowledged", not unknown.count, 0, unknown.count,
                 f"jobs of no enqueue the harness made: {unknown.listing()}" if unknown.count
                 else f"every job in the log, the levels or processing belongs to a succeeded enqueue,"
                      f" or to one of the {indeterminate} indeterminate ones")


def _failed_jobs_never_queued(applied: Found, failed: int, rejected: int) -> Check:
    return Check("failed_jobs_never_queued", not applied.count, 0, applied.count,
                 f"queued although the producer was told it failed: {applied.listing()}" if applied.count
                 else f"none of the {failed} failed enqueues ({rejected} refused by a full queue) was ever queued",
                 anomaly="failed_but_applied", anomaly_count=applied.count)


def _jobs_accounted_for(lost: Found, enqueued: int) -> Check:
    return Check("jobs_accounted_for", not lost.count, enqueued, enqueued - lost.count,
                 f"enqueued, never dequeued, and in no level nor in processing: {lost.listing()}" if lost.count
                 else "every job the log enqueued was dequeued or is still queued",
                 anomaly="lost_jobs", anomaly_count=lost.count)


def _no_duplicate_jobs(snapshot: _Snapshot, replay: Replay, queued_again: set[str], consumers: Consumers) -> Check:
    twice_queued = {job for job, times in snapshot.queued.items() if times > 1}
    duplicates = replay.duplicates | twice_queued | queued_again | consumers.told_twice
    return Check("no_duplicate_jobs", not duplicates, 0, len(duplicates),
                 f"enqueued or dequeued more than once, queued again after their dequeue, or taken by more than one"
                 f" consumer: {listing_ids(duplicates)}"
                 if duplicates else "each job was enqueued once and handed to one consumer only, in the log and"
                                    " by what the consumers were told",
                 anomaly="duplicate_jobs", anomaly_count=len(duplicates))


def _no_unacknowledged_jobs(snapshot: _Snapshot, replay: Replay) -> Check:
    """After the drain (agents finish the call they are in, a consumer killed mid-call its job),
    a job still held was taken by a consumer that died, or by something other than a consumer:
    it is neither done nor queued."""
    unacknowledged = set(replay.held) | set(snapshot.held.values())
    return Check("no_unacknowledged_jobs", not unacknowledged, 0, len(unacknowledged),
                 f"dequeued and never acknowledged: {listing_ids(unacknowledged)}" if unacknowledged
                 else "every dequeued job was acknowledged by the consumer that took it",
                 anomaly="unacknowledged_jobs", anomaly_count=len(unacknowledged))


def _capacity_never_exceeded(capacity: int, deepest_in_log: int, queued_now: int) -> Check:
    """Against the capacity the harness gave the queue: the most jobs the log itself had waiting
    at once, and the jobs in the lists now."""
    deepest = max(deepest_in_log, queued_now)
    over = max(0, deepest - capacity)
    return Check("capacity_never_exceeded", not over, f"<= {capacity}", deepest,
                 f"the most jobs waiting at once in the log's replay: {deepest_in_log}; in the lists now: {queued_now}",
                 anomaly="capacity_overshoots", anomaly_count=over)


def _priority_order_held(replay: Replay) -> Check:
    return Check("priority_order_held", not replay.inversions, 0, replay.inversions,
                 "dequeues that took a job while one of a higher priority waited, replaying the log",
                 anomaly="priority_inversions", anomaly_count=replay.inversions)


def _served_ahead_of_older(ranks: list[int]) -> int:
    """Jobs in a level's list (head first, by enqueue rank) that would be served while an older
    job of the level still waits behind them."""
    ahead, oldest_behind = 0, None
    for rank in reversed(ranks):
        if oldest_behind is not None and rank > oldest_behind:
            ahead += 1
        oldest_behind = rank if oldest_behind is None else min(oldest_behind, rank)
    return ahead


def _fifo_within_level(snapshot: _Snapshot, replay: Replay) -> Check:
    queued_ahead = sum(
        _served_ahead_of_older([replay.waiting[level][job] for job in dict.fromkeys(jobs)
                                if job in replay.waiting[level]])
        for level, jobs in enumerate(snapshot.levels)
    )
    violations = replay.fifo_violations + queued_ahead
    return Check("fifo_within_level", not violations, 0, violations,
                 f"dequeues that passed an older job of their level: {replay.fifo_violations}; jobs still"
                 f" queued ahead of an older one of their level: {queued_ahead}",
                 anomaly="fifo_violations", anomaly_count=violations)


def _queue_matches_its_log(snapshot: _Snapshot, replay: Replay, missing_from_levels: int) -> Check:
    """Whatever changed the lists or `processing` without a script leaves them unlike the log."""
    misplaced = {job for level, jobs in enumerate(snapshot.levels) for job in jobs if job not in replay.waiting[level]}
    held_unlike_log = set(snapshot.held.items()) ^ {(consumer, job) for job, consumer in replay.held.items()}
    disagreements: dict[str, int] = {
        "events at which the scripts counted another depth than the log's": replay.depth_disagreements,
        "jobs dequeued that the log never enqueued": len(replay.never_enqueued),
        "jobs dequeued from another level than their own": len(replay.moved),
        "acknowledgements by a consumer that did not hold the job": len(replay.stray_acks),
        "log entries no script wrote": replay.unreadable,
        "jobs in a level where the log has them nowhere or elsewhere": len(misplaced),
        "jobs the log has queued that are in no level": missing_from_levels,
        "jobs held in processing unlike the log": len(held_unlike_log),
    }
    found = {what: count for what, count in disagreements.items() if count}
    return Check("queue_matches_its_log", not found, 0, sum(found.values()),
                 "; ".join(f"{what}: {count}" for what, count in found.items())
                 or "the levels, in order, and processing hold what the log's replay leaves in them")
