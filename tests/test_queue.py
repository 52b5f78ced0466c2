"""The queue's tools against the real Redis: agents enqueue and dequeue concurrently and the audit
passes on what they left; then another Redis client corrupts the queue's data, after or during
the run, and the check that must see it fails with its anomaly count."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from collections.abc import Iterator

import gevent
import pytest
import redis
from psycopg import sql

from db.audits import Check
from db.durations import constant
from db.errors import Failure
from db.redis_keys import RedisKeys
from db.session import SEND_ONCE
from db.tool import Tool, Transaction
from tasks.queue import PRIORITIES, dequeue_job, drain_queue_log, enqueue_job
from tasks.queue_audit import audit_queue
from tests.support import (
    PREPARED,
    QUICK_RETRIES,
    ROOT,
    Recorder,
    ReplyLosingProxy,
    acknowledged_from,
    built_in_tool,
    context_for,
    lose_last_dequeue_and_ack,
    prepared_schema,
)
from transport.call_record import Outcome
from transport.in_process import ToolAdapter

CAPACITY = 8
AGENTS = 6
CALLS_EACH = 30
CHECKS = {"acknowledged_jobs_enqueued", "jobs_within_acknowledged", "failed_jobs_never_queued", "jobs_accounted_for",
          "dequeues_in_log", "consumers_within_dequeues", "no_duplicate_jobs", "no_unacknowledged_jobs",
          "capacity_never_exceeded", "priority_order_held", "fifo_within_level", "queue_matches_its_log"}
BASELINE = dataclasses.replace(PREPARED, queue_capacity=CAPACITY)


class QueueRun:
    """Agents calling the queue's tools through the adapter, on one schema's keys."""

    def __init__(self, client: redis.Redis, other: redis.Redis, keys: RedisKeys, admin, schema: str) -> None:
        # The agents' client sends each command once, as the load's does; `other` is another
        # session's, which corrupts the queue's data.
        self.client, self.other, self.keys, self.admin, self.schema = client, other, keys, admin, schema
        self.recorder = Recorder()
        self.enqueue = built_in_tool("enqueue_job", schema, queue_capacity=CAPACITY)
        self.dequeue = built_in_tool("dequeue_job", schema)
        self.adapter = self.adapter_on(client)

    def adapter_on(self, client: redis.Redis, tool_work_s: float = 0.0) -> ToolAdapter:
        return ToolAdapter(None, client, QUICK_RETRIES, constant(tool_work_s), self.recorder.call_finished)

    def agents(self, tools_of_agent, calls_each: int = CALLS_EACH, adapter: ToolAdapter | None = None) -> None:
        """Agents concurrently, each calling `tools_of_agent(agent)[call % len]` in turn."""
        adapter = adapter or self.adapter

        def agent(number: int) -> None:
            tools = tools_of_agent(number)
            for call in range(calls_each):
                adapter.call(tools[call % len(tools)], f"agent-{number}", seed=number * 1000 + call)

        gevent.joinall([gevent.spawn(agent, n) for n in range(AGENTS)], timeout=60, raise_error=True)

    def fill(self) -> None:
        """Enqueue until the queue refuses: it then holds CAPACITY jobs."""
        seed = 0
        while self.adapter.call(self.enqueue, "filler", seed=seed).outcome is Outcome.SUCCEEDED:
            seed += 1

    def drain(self) -> None:
        """Consumers, concurrently, until the queue is empty."""
        def consumer(number: int) -> None:
            while self.client.exists(*self.levels()):
                self.adapter.call(self.dequeue, f"consumer-{number}", seed=number)

        gevent.joinall([gevent.spawn(consumer, n) for n in range(AGENTS)], timeout=60, raise_error=True)

    def levels(self) -> list[str]:
        return [self.keys("queue", level) for level in PRIORITIES]

    def processing(self) -> str:
        return self.keys("queue", "processing")

    def context(self, client: redis.Redis | None = None):
        records = self.recorder.records
        return context_for(self.admin, self.schema,
                           lambda tools: acknowledged_from([r for r in records if r.tool in tools]),
                           client or self.other, baseline=BASELINE)

    def drain_log(self) -> int:
        """What the coordinator's drain does during a run: the log so far into queue_log."""
        return drain_queue_log(self.context())

    def audit(self) -> dict[str, Check]:
        checks = audit_queue(self.context())
        assert {c.name for c in checks} == CHECKS
        return {c.name: c for c in checks}


def _failed(checks: dict[str, Check]) -> dict[str, Check]:
    return {name: c for name, c in checks.items() if not c.ok}


def _forged_job() -> str:
    """A job as the enqueue script writes it, of no call the harness made."""
    return f"{uuid.uuid4()}|1700000000000000"


def _producers_and_consumers(run: QueueRun):
    # Two enqueues for one dequeue: the queue fills, and producers meet its capacity.
    return lambda agent: (run.enqueue, run.enqueue, run.dequeue) if agent % 2 else (run.dequeue, run.enqueue)


@pytest.fixture
def full_queue(servers, admin, schema) -> Iterator[QueueRun]:
    """A contended run, then enqueues until the queue is full: CAPACITY jobs wait in it."""
    prepared_schema(admin, schema)
    with (redis.Redis.from_url(servers.redis_url, retry=SEND_ONCE) as client,
          redis.Redis.from_url(servers.redis_url) as other):
        yield _contended_run(QueueRun(client, other, RedisKeys(schema), admin, schema))


def _contended_run(run: QueueRun) -> QueueRun:
    run.agents(_producers_and_consumers(run))
    records = run.recorder.records
    assert any(r.failures[-1:] == [Failure.QUEUE_REJECTED] for r in records), "producers must meet a full queue"
    assert any(name == "queue_wait" for r in records for name, _ in r.observations), "consumers must get jobs"
    # As the coordinator does during a run: the log so far moves to PostgreSQL and leaves Redis;
    # the audit replays it from there, followed by what is logged from now on.
    assert run.drain_log() > 0 and run.other.xlen(run.keys("queue", "log")) == 0
    run.fill()
    assert sum(run.other.llen(level) for level in run.levels()) == CAPACITY
    return run


def test_a_contended_run_passes_every_check(full_queue):
    checks = full_queue.audit()
    assert _failed(checks) == {}, _failed(checks)
    assert all(c.anomaly_count == 0 for c in checks.values())
    assert checks["capacity_never_exceeded"].observed == CAPACITY
    waits = [s for r in full_queue.recorder.records for name, s in r.observations if name == "queue_wait"]
    assert all(wait >= 0 for wait in waits)  # one clock: the Redis server's


def test_a_drained_queue_passes_every_check(full_queue):
    full_queue.drain()
    assert _failed(full_queue.audit()) == {}


def test_a_job_pushed_past_capacity_is_an_overshoot(full_queue):
    full_queue.other.rpush(full_queue.levels()[2], _forged_job())
    failed = _failed(full_queue.audit())
    assert failed["capacity_never_exceeded"].anomaly_count == 1
    assert failed["capacity_never_exceeded"].observed == CAPACITY + 1
    assert {"jobs_within_acknowledged", "queue_matches_its_log"} <= set(failed)


def test_a_job_pushed_behind_the_logs_back_during_the_run_is_seen_by_the_next_dequeue(full_queue):
    """The log never had it: the queue is over capacity only in the depth the next dequeue script
    counted, which disagrees with the log's (the capacity check counts the log's jobs, not the
    scripts')."""
    full_queue.other.rpush(full_queue.levels()[0], _forged_job())
    full_queue.drain()  # the consumers serve the forged job too, and acknowledge it
    failed = _failed(full_queue.audit())
    assert set(failed) == {"jobs_within_acknowledged", "queue_matches_its_log"}
    assert "jobs dequeued that the log never enqueued: 1" in failed["queue_matches_its_log"].detail
    assert "events at which the scripts counted another depth than the log's" in failed["queue_matches_its_log"].detail
    assert failed["jobs_within_acknowledged"].observed == 1


def test_jobs_enqueued_past_capacity_during_the_run_are_an_overshoot(full_queue):
    """Enqueued by the script itself, told a larger capacity: the log and the lists agree, and
    hold more jobs than the harness's capacity."""
    for level in (1, 2):
        intruder = Transaction(uuid.uuid4(), "intruder", None, None, full_queue.other)
        enqueue_job(intruder, level=level, keys=full_queue.keys, capacity=CAPACITY + 2)
    full_queue.drain()
    failed = _failed(full_queue.audit())
    assert set(failed) == {"capacity_never_exceeded", "jobs_within_acknowledged"}
    assert failed["capacity_never_exceeded"].observed == CAPACITY + 2
    assert failed["capacity_never_exceeded"].anomaly_count == 2
    assert f"in the log's replay: {CAPACITY + 2}; in the lists now: 0" in failed["capacity_never_exceeded"].detail


def _level_with_two_jobs(run: QueueRun) -> str:
    # CAPACITY jobs in three levels: one of them holds at least three.
    return next(level for level in run.levels() if run.other.llen(level) >= 2)


def _swap_first_two(client: redis.Redis, level: str) -> None:
    first, second = client.lrange(level, 0, 1)
    client.lset(level, 0, second)
    client.lset(level, 1, first)


def test_a_reordered_level_breaks_fifo(full_queue):
    _swap_first_two(full_queue.other, _level_with_two_jobs(full_queue))
    failed = _failed(full_queue.audit())
    assert set(failed) == {"fifo_within_level"}
    assert failed["fifo_within_level"].anomaly_count == 1


def test_a_level_reordered_during_the_run_makes_a_dequeue_pass_an_older_job(full_queue):
    _swap_first_two(full_queue.other, _level_with_two_jobs(full_queue))
    full_queue.drain()
    failed = _failed(full_queue.audit())
    assert set(failed) == {"fifo_within_level"}
    assert failed["fifo_within_level"].anomaly_count == 1
    assert "dequeues that passed an older job of their level: 1" in failed["fifo_within_level"].detail


def test_a_job_moved_to_a_higher_level_during_the_run_is_a_priority_inversion(full_queue):
    other, levels = full_queue.other, full_queue.levels()
    full_queue.drain()
    seed = 0
    while sum(1 for level in levels if other.llen(level)) < 2:  # a job waits above another one
        full_queue.adapter.call(full_queue.enqueue, "producer", seed=seed)
        seed += 1
    lowest = next(level for level in reversed(levels) if other.llen(level))
    other.lmove(lowest, levels[0], "RIGHT", "LEFT")  # served first, ahead of a higher priority
    full_queue.drain()
    failed = _failed(full_queue.audit())
    assert failed["priority_order_held"].anomaly_count == 1
    assert "jobs dequeued from another level than their own: 1" in failed["queue_matches_its_log"].detail
    assert set(failed) == {"priority_order_held", "queue_matches_its_log"}


def test_a_deleted_job_is_lost(full_queue):
    other, level = full_queue.other, _level_with_two_jobs(full_queue)
    other.lrem(level, 1, other.lindex(level, 1))
    failed = _failed(full_queue.audit())
    assert failed["jobs_accounted_for"].anomaly_count == 1
    assert set(failed) == {"jobs_accounted_for", "queue_matches_its_log"}


def test_a_job_deleted_during_the_run_is_lost_without_blaming_the_order_of_later_dequeues(full_queue):
    other = full_queue.other
    highest = next(level for level in full_queue.levels() if other.llen(level))  # the next dequeue's
    other.lrem(highest, 1, other.lindex(highest, 0))
    full_queue.agents(_producers_and_consumers(full_queue))
    full_queue.drain()
    failed = _failed(full_queue.audit())
    assert failed["jobs_accounted_for"].anomaly_count == 1
    assert set(failed) == {"jobs_accounted_for", "queue_matches_its_log"}


def test_a_job_taken_around_the_scripts_stays_unacknowledged(full_queue):
    other = full_queue.other
    job = other.lpop(_level_with_two_jobs(full_queue))
    other.hset(full_queue.processing(), str(uuid.uuid4()), job + b"|1700000000000001")
    failed = _failed(full_queue.audit())
    assert failed["no_unacknowledged_jobs"].anomaly_count == 1
    assert "jobs_accounted_for" not in failed  # held, not lost
    assert "jobs held in processing unlike the log: 1" in failed["queue_matches_its_log"].detail


def _until_a_job_is_held(run: QueueRun) -> None:
    with gevent.Timeout(60):
        while not run.other.hlen(run.processing()):
            gevent.sleep(0.01)


def test_a_consumer_stopped_during_its_work_finishes_its_job_first(full_queue):
    slow_consumer = full_queue.adapter_on(full_queue.client, tool_work_s=1.0)
    call = gevent.spawn(slow_consumer.call, full_queue.dequeue, "stopped", 1)
    _until_a_job_is_held(full_queue)
    call.kill()  # GreenletExit in the middle of its work, as Locust kills an agent it stops
    assert full_queue.recorder.records[-1].outcome is Outcome.INDETERMINATE and full_queue.recorder.records[-1].cut_off
    assert full_queue.other.hlen(full_queue.processing()) == 0
    assert _failed(full_queue.audit()) == {}


_DOOMED_CONSUMER = """
import sys, uuid
import redis
from db.durations import constant
from db.redis_keys import RedisKeys
from db.tool import Transaction
from tasks.queue import dequeue_job
url, schema = sys.argv[1:]
tx = Transaction(uuid.uuid4(), "doomed", 1, None, redis.Redis.from_url(url), work=constant(600))
dequeue_job(tx, keys=RedisKeys(schema))
"""


def test_a_consumer_whose_process_dies_leaves_its_job_unacknowledged(full_queue, servers, schema):
    consumer = subprocess.Popen([sys.executable, "-c", _DOOMED_CONSUMER, servers.redis_url, schema], cwd=ROOT)
    try:
        _until_a_job_is_held(full_queue)
    finally:
        consumer.kill()  # SIGKILL during its work: nothing of it runs again
        consumer.wait()
    failed = _failed(full_queue.audit())
    assert set(failed) == {"no_unacknowledged_jobs", "consumers_within_dequeues"}  # of no call the harness made
    assert failed["no_unacknowledged_jobs"].anomaly_count == 1
    assert failed["consumers_within_dequeues"].observed == 1


def _dequeue_robbed_during_its_work(run: QueueRun) -> Tool:
    """dequeue_job, during whose work another session takes its job from processing."""
    def robbed(tx: Transaction) -> dict[str, str | None]:
        def rob() -> None:
            while not run.other.hdel(run.processing(), str(tx.op_id)):
                gevent.sleep(0.005)

        robber = gevent.spawn(rob)
        try:
            return dequeue_job(tx, keys=run.keys)
        finally:
            robber.kill()

    return Tool("dequeue_job", robbed, backend="redis")


def test_an_acknowledgement_of_a_job_no_longer_held_fails_the_call_after_its_dequeue(full_queue):
    record = full_queue.adapter_on(full_queue.client, tool_work_s=0.2).call(
        _dequeue_robbed_during_its_work(full_queue), "consumer", seed=1)
    assert record.outcome is Outcome.FAILED and record.failures == [Failure.ERROR]
    assert isinstance(record.exception, redis.ResponseError) and "does not hold job" in str(record.exception)
    failed = _failed(full_queue.audit())
    assert set(failed) == {"consumers_within_dequeues", "no_unacknowledged_jobs", "queue_matches_its_log"}
    # The call failed, its dequeue is in the log.
    assert failed["consumers_within_dequeues"].anomaly == "failed_but_applied"
    assert failed["consumers_within_dequeues"].anomaly_count == 1
    assert str(record.op_id) in failed["consumers_within_dequeues"].detail
    assert failed["no_unacknowledged_jobs"].anomaly_count == 1  # the log has no acknowledgement
    assert "jobs held in processing unlike the log: 1" in failed["queue_matches_its_log"].detail


def test_a_dequeue_and_its_acknowledgement_lost_in_a_failover_hand_the_job_to_a_second_consumer(full_queue):
    """Before: the log, its lists and its replay all agreed, and no_duplicate_jobs said "handed
    to one consumer only" although two consumers were told they took the job."""
    first = full_queue.adapter.call(full_queue.dequeue, "consumer", seed=1)
    job = lose_last_dequeue_and_ack(full_queue.other, full_queue.keys)
    assert job == first.value["job"]
    takers = []
    while job not in takers:  # jobs of a higher level first, then the head of its own
        takers.append(full_queue.adapter.call(full_queue.dequeue, "consumer", seed=2).value["job"])
    failed = _failed(full_queue.audit())
    assert set(failed) == {"dequeues_in_log", "no_duplicate_jobs"}
    assert failed["dequeues_in_log"].observed == failed["dequeues_in_log"].expected - 1
    assert str(first.op_id) in failed["dequeues_in_log"].detail
    assert failed["no_duplicate_jobs"].anomaly_count == 1 and job in failed["no_duplicate_jobs"].detail


def test_an_idle_consumer_in_the_log_is_caught(full_queue):
    full_queue.drain()
    idle = full_queue.adapter.call(full_queue.dequeue, "consumer", seed=1)
    assert idle.outcome is Outcome.SUCCEEDED and idle.value == {"job": None}
    full_queue.adapter.call(full_queue.enqueue, "producer", seed=1)
    # The dequeue script itself, under the idle call's id: the log and the lists agree.
    assert dequeue_job(Transaction(idle.op_id, "impostor", 1, None, full_queue.other), keys=full_queue.keys)["job"]
    failed = _failed(full_queue.audit())
    assert set(failed) == {"consumers_within_dequeues"}
    stranger = failed["consumers_within_dequeues"]
    assert stranger.observed == 1 and str(idle.op_id) in stranger.detail


def test_consumers_swapped_in_the_drained_log_are_not_what_they_were_told(full_queue):
    """Two consumers' entries exchanged in queue_log: each job still dequeued and acknowledged
    once, by one consumer, so only what the consumers were told can differ."""
    took = [r for r in full_queue.recorder.records
            if r.tool == "dequeue_job" and r.outcome is Outcome.SUCCEEDED and r.value["job"]]
    first, second = took[0].op_id, took[1].op_id
    full_queue.admin.execute(sql.SQL(
        "UPDATE {} SET consumer = CASE consumer WHEN %(a)s THEN %(b)s::uuid ELSE %(a)s::uuid END"
        " WHERE consumer IN (%(a)s, %(b)s)").format(sql.Identifier(full_queue.schema, "queue_log")),
        {"a": first, "b": second})
    failed = _failed(full_queue.audit())
    assert set(failed) == {"dequeues_in_log"}
    assert failed["dequeues_in_log"].observed == failed["dequeues_in_log"].expected - 2
    assert str(first) in failed["dequeues_in_log"].detail and str(second) in failed["dequeues_in_log"].detail


def test_a_job_enqueued_at_another_level_than_its_producer_was_told(full_queue):
    """The log's copy moves a job to another level, where it was alone in the queue from its
    enqueue to its dequeue: the order of no dequeue changes, only the level differs from what
    its producer was told."""
    full_queue.drain()
    job = full_queue.adapter.call(full_queue.enqueue, "producer", seed=1).op_id
    assert full_queue.adapter.call(full_queue.dequeue, "consumer", seed=1).value == {"job": str(job)}
    full_queue.drain_log()
    full_queue.admin.execute(sql.SQL("UPDATE {} SET level = level %% 3 + 1 WHERE job = %s").format(
        sql.Identifier(full_queue.schema, "queue_log")), (job,))
    failed = _failed(full_queue.audit())
    assert set(failed) == {"acknowledged_jobs_enqueued"}
    assert failed["acknowledged_jobs_enqueued"].observed == failed["acknowledged_jobs_enqueued"].expected - 1
    assert failed["acknowledged_jobs_enqueued"].anomaly_count == 0  # not lost: queued elsewhere
    assert f"at another level than their producers were told: {job}" in failed["acknowledged_jobs_enqueued"].detail


def test_an_enqueue_of_an_id_never_acknowledged_is_caught(full_queue):
    full_queue.adapter.call(full_queue.dequeue, "consumer", seed=1)  # room for one more
    stranger = Transaction(uuid.uuid4(), "not-an-agent", None, None, full_queue.other)
    enqueue_job(stranger, level=2, keys=full_queue.keys, capacity=CAPACITY)  # the script itself: log and list agree
    failed = _failed(full_queue.audit())
    assert set(failed) == {"jobs_within_acknowledged"}
    assert failed["jobs_within_acknowledged"].observed == 1


def test_a_refused_job_that_appears_was_applied_although_it_failed(full_queue):
    refused = next(r for r in full_queue.recorder.records if r.failures[-1:] == [Failure.QUEUE_REJECTED])
    full_queue.other.rpush(full_queue.levels()[1], f"{refused.op_id}|1700000000000000")
    failed = _failed(full_queue.audit())
    assert failed["failed_jobs_never_queued"].anomaly == "failed_but_applied"
    assert failed["failed_jobs_never_queued"].anomaly_count == 1


def test_a_job_queued_again_after_its_dequeue_is_a_duplicate(full_queue):
    assert full_queue.adapter.call(full_queue.dequeue, "consumer", seed=1).outcome is Outcome.SUCCEEDED
    ack, dequeue = full_queue.other.xrevrange(full_queue.keys("queue", "log"), count=2)
    assert ack[1][b"event"] == b"ack" and dequeue[1][b"event"] == b"dequeue"
    full_queue.other.rpush(full_queue.levels()[2], dequeue[1][b"job"] + b"|1700000000000000")
    failed = _failed(full_queue.audit())
    assert failed["no_duplicate_jobs"].anomaly_count == 1


@pytest.mark.parametrize("script", [b"'event', 'dequeue'", b"'event', 'ack'"], ids=["dequeue", "ack"])
def test_lost_replies_are_sent_again_without_harm(full_queue, servers, script):
    with ReplyLosingProxy(servers.redis_url, (script,), losses=4) as proxy, proxy.client() as lossy:
        full_queue.agents(lambda agent: (full_queue.dequeue,), calls_each=2, adapter=full_queue.adapter_on(lossy))
    assert proxy.lost == 4
    consumers = full_queue.recorder.records[-2 * AGENTS:]
    assert all(r.outcome is Outcome.SUCCEEDED for r in consumers), [(r.outcome, r.exception) for r in consumers]
    assert sum(full_queue.other.llen(level) for level in full_queue.levels()) == 0
    assert _failed(full_queue.audit()) == {}


def _drained_jobs(run: QueueRun, event: str) -> list[uuid.UUID]:
    """The jobs of the drained log's entries of one kind, oldest first."""
    return [job for (job,) in run.admin.execute(
        sql.SQL("SELECT job FROM {} WHERE event = %s ORDER BY stream_ms, stream_seq").format(
            sql.Identifier(run.schema, "queue_log")), (event,))]


def test_an_enqueue_deleted_from_the_drained_log_is_a_lost_job(full_queue):
    """A corruption after the drain, in PostgreSQL: the log's copy loses a job's enqueue."""
    job = _drained_jobs(full_queue, "ack")[0]  # enqueued, dequeued and acknowledged before the drain
    full_queue.admin.execute(sql.SQL("DELETE FROM {} WHERE job = %s AND event = 'enqueue'").format(
        sql.Identifier(full_queue.schema, "queue_log")), (job,))
    failed = _failed(full_queue.audit())
    assert set(failed) == {"acknowledged_jobs_enqueued", "queue_matches_its_log"}
    misplaced = failed["acknowledged_jobs_enqueued"]
    assert misplaced.anomaly_count == 1 and str(job) in misplaced.detail
    assert "jobs dequeued that the log never enqueued: 1" in failed["queue_matches_its_log"].detail


def test_an_acknowledgement_deleted_from_the_drained_log_leaves_its_job_unacknowledged(full_queue):
    job = _drained_jobs(full_queue, "ack")[-1]
    full_queue.admin.execute(sql.SQL("DELETE FROM {} WHERE job = %s AND event = 'ack'").format(
        sql.Identifier(full_queue.schema, "queue_log")), (job,))
    failed = _failed(full_queue.audit())
    assert set(failed) == {"no_unacknowledged_jobs", "queue_matches_its_log", "dequeues_in_log"}
    assert str(job) in failed["no_unacknowledged_jobs"].detail
    assert failed["dequeues_in_log"].observed == failed["dequeues_in_log"].expected - 1
    assert "jobs held in processing unlike the log: 1" in failed["queue_matches_its_log"].detail


def _drained(run: QueueRun) -> int:
    return run.admin.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(run.schema, "queue_log"))).fetchone()[0]


@pytest.mark.parametrize("command", [b"XRANGE", b"XTRIM"], ids=["before-its-commit", "after-its-commit"])
def test_a_drain_cut_short_by_a_lost_connection_copies_each_entry_once(full_queue, servers, command):
    """The drain's Redis connection lost while it reads the log (its transaction rolls back), or
    while it trims what it has committed: the next drain copies each entry exactly once."""
    full_queue.drain()
    waiting, drained = full_queue.other.xlen(full_queue.keys("queue", "log")), _drained(full_queue)
    assert waiting > 0
    with ReplyLosingProxy(servers.redis_url, (command,), losses=1) as proxy, proxy.client() as lossy:
        with pytest.raises(redis.ConnectionError):
            drain_queue_log(full_queue.context(lossy))
    assert proxy.lost == 1
    assert full_queue.drain_log() == (waiting if command == b"XRANGE" else 0)
    assert _drained(full_queue) == drained + waiting
    assert full_queue.other.xlen(full_queue.keys("queue", "log")) == 0
    assert _failed(full_queue.audit()) == {}
