"""The dequeue calls against the consumers in the queue's log: what each consumer was told it
took (its call's value: the job, or none when the queue was empty) against what the log says
it dequeued and acknowledged. Compared in PostgreSQL, the calls' outcomes copied beside
queue_log: the audit holds a few of the consumers found wrong, and the jobs handed twice (the
violations found), never every consumer of the run.

Every dequeue script logs its consumer, the call's op id: a succeeded call that took a job is
the consumer of exactly one dequeue and one acknowledgement, of that job; an idle one, and a
failed one, of none. An indeterminate call may be either.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from db.audits import SHOW_AT_MOST, Acknowledged, Check, copy_outcomes, listing_ids
from db.redis_drain import StreamId

__all__ = ["Found", "Consumers", "consumers_in_log", "dequeues_in_log", "consumers_within_dequeues"]

_CONSUMERS = """
    WITH told AS (
        SELECT op_id AS consumer, min(outcome) AS outcome, min(value::jsonb ->> 'job') AS job
        FROM harness_outcomes GROUP BY op_id
    ), logged AS (
        SELECT consumer, count(*) FILTER (WHERE event = 'dequeue') AS dequeues,
               count(*) FILTER (WHERE event = 'ack') AS acks, count(DISTINCT job) AS jobs, min(job::text) AS job
        FROM queue_log WHERE consumer IS NOT NULL AND (stream_ms, stream_seq) <= (%(ms)s, %(seq)s)
        GROUP BY consumer
    ), both_sides AS (
        SELECT consumer, t.outcome, t.job IS NOT NULL AS took, l.consumer IS NOT NULL AS logged,
               coalesce(l.dequeues = 1 AND l.acks = 1 AND l.jobs = 1 AND l.job = t.job, false) AS as_told
        FROM told t FULL JOIN logged l USING (consumer)
    )
    SELECT count(*) FILTER (WHERE outcome = 'succeeded' AND took),
           count(*) FILTER (WHERE logged), count(*) FILTER (WHERE logged AND outcome IS NOT NULL),
           (array_agg(consumer) FILTER (WHERE outcome = 'succeeded' AND took AND NOT as_told))[1:%(n)s],
           count(*) FILTER (WHERE outcome = 'succeeded' AND took AND NOT as_told),
           (array_agg(consumer) FILTER (WHERE logged AND (outcome IS NULL OR outcome = 'failed'
                                                          OR (outcome = 'succeeded' AND NOT took))))[1:%(n)s],
           count(*) FILTER (WHERE logged AND (outcome IS NULL OR outcome = 'failed'
                                              OR (outcome = 'succeeded' AND NOT took))),
           count(*) FILTER (WHERE logged AND outcome = 'failed'),
           count(*) FILTER (WHERE logged AND outcome = 'indeterminate'),
           (SELECT array_agg(job) FROM (SELECT value::jsonb ->> 'job' AS job FROM harness_outcomes
                                        WHERE outcome = 'succeeded' AND value::jsonb ->> 'job' IS NOT NULL
                                        GROUP BY 1 HAVING count(*) > 1) twice)
    FROM both_sides
"""


@dataclass(frozen=True)
class Found:
    """Some of a set of ids (first few, as text), and how many it holds."""

    shown: list[str]
    count: int

    def listing(self) -> str:
        return listing_ids(self.shown, self.count)


@dataclass(frozen=True)
class Consumers:
    took: int  # succeeded dequeues that took a job
    logged: int  # consumers in the log
    of_dequeues: int  # of those, the consumers that are a dequeue the harness made (whatever its outcome)
    unlike_log: Found  # of those, not the log's consumer of one dequeue and one ack of that job
    strangers: Found  # consumers in the log of no call, an idle one or a failed one
    failed_applied: int  # of the strangers, those of a failed call
    maybe: int  # indeterminate calls that are consumers in the log
    indeterminate: int
    told_twice: set[str]  # jobs more than one succeeded dequeue was told it took


def consumers_in_log(conn: psycopg.Connection, dequeues: Acknowledged, log_end: StreamId) -> Consumers:
    """The dequeue calls against the log's consumers up to `log_end` (inside a transaction, on
    the run's search_path; replaces the outcomes copied before)."""
    copy_outcomes(conn, dequeues)
    (took, logged, of_dequeues, unlike_ids, unlike, stranger_ids, strangers, failed_applied, maybe,
     told_twice) = conn.execute(_CONSUMERS, {"ms": log_end.ms, "seq": log_end.seq, "n": SHOW_AT_MOST}).fetchone()
    return Consumers(took, logged, of_dequeues, Found([str(c) for c in unlike_ids or []], unlike),
                     Found([str(c) for c in stranger_ids or []], strangers), failed_applied, maybe,
                     len(dequeues.indeterminate), set(told_twice or []))


def dequeues_in_log(consumers: Consumers) -> Check:
    count = consumers.unlike_log.count
    return Check("dequeues_in_log", not count, consumers.took, consumers.took - count,
                 f"consumers told they took a job whose log has no dequeue and acknowledgement of that job by them"
                 f" alone: {consumers.unlike_log.listing()}" if count
                 else "every consumer told it took a job is the log's consumer of one dequeue and one acknowledgement,"
                      " of that job")


def consumers_within_dequeues(consumers: Consumers) -> Check:
    count = consumers.strangers.count
    return Check("consumers_within_dequeues", not count, 0, count,
                 f"consumers in the log of no dequeue that took a job ({consumers.failed_applied} of a failed one):"
                 f" {consumers.strangers.listing()}" if count
                 else f"every consumer in the log is a dequeue told it took a job, or one of the"
                      f" {consumers.indeterminate} indeterminate ones ({consumers.maybe} of which dequeued)",
                 anomaly="failed_but_applied", anomaly_count=consumers.failed_applied)
