"""The adapter every tool call goes through.

Before the first attempt, draw the call's arguments from its seed, once (db.tool: a tool's
arguments step), or take the arguments and the op id its caller was given (`call_with`: a tool
server runs what an agent drew and named). For each attempt: borrow a connection (the wait is
timed apart from the tool's own time), run the tool with those same arguments in a transaction at
the session's isolation level, commit, classify what failed, and retry by policy: a retry repeats
the same operation.
When the call is over, fire the `call_finished` hook once with the full record (transport.hooks:
the harness's listener tells Locust; db/ knows nothing of Locust).

Before the first attempt, the optional `call_started` hook gets the record as it starts, its
arguments drawn (a history writes the invocation then: a call that never ends still shows that
it began, and with what).
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from time import monotonic_ns, perf_counter
from typing import Protocol

import gevent
import psycopg
import redis
from psycopg.pq import TransactionStatus

from db.durations import Duration
from db.errors import Failure, classify
from db.tool import Arguments, Tool, Transaction
from transport.call_record import CallRecord, Outcome, draw_arguments, lane_of
from transport.hooks import CallHook
from transport.in_flight import CallsInFlight
from transport.retry import RetryPolicy

__all__ = ["ConnectionLender", "ToolAdapter"]

log = logging.getLogger(__name__)

# Locust stops an agent by killing its greenlet: GreenletExit (a BaseException) arrives
# wherever the agent is waiting, possibly in the middle of a statement or of COMMIT.
_STOPPED = (gevent.GreenletExit, KeyboardInterrupt, SystemExit)


class ConnectionLender(Protocol):
    """Where the adapter borrows a PostgreSQL tool's connection: the load's AgentPool (db.pool),
    or a psycopg_pool.ConnectionPool."""

    def getconn(self) -> psycopg.Connection: ...

    def putconn(self, conn: psycopg.Connection, /) -> None: ...


class ToolAdapter:
    def __init__(
        self,
        pool: ConnectionLender,
        redis_client: redis.Redis | None,
        policy: RetryPolicy,
        tool_work: Duration,
        call_finished: CallHook,
        call_started: CallHook | None = None,
        sleep: Callable[[float], None] = gevent.sleep,
    ) -> None:
        self._pool = pool
        self._redis = redis_client
        self._policy = policy
        self._tool_work = tool_work
        self._call_started = call_started
        self._backoff_rng = random.Random()
        # How a call waits (its backoff, its tool's work): on the hub for the load's greenlets; a
        # tool server's plain threads, in a process not monkey-patched, give time.sleep.
        self._sleep = sleep
        # Those still in flight when the load gives up waiting for them are reported indeterminate.
        self._in_flight = CallsInFlight(call_finished)

    @property
    def calls_in_flight(self) -> int:
        return len(self._in_flight)

    def abandon_calls_in_flight(self) -> list[CallRecord]:
        """Report every call still in flight as indeterminate, now (it may yet commit: its agent
        was not seen to end it), and ignore its own end if it ever comes."""
        return self._in_flight.abandon()

    def call(self, tool: Tool, agent_id: str, seed: int, *, arguments: Arguments | None = None, turn: int = 0,
             slot: int = 0) -> CallRecord:
        """One call of `tool` by `agent_id` under a new op id, its arguments drawn from `seed`, or
        `arguments` when its agent drew them already (a turn's calls: harness.run.turns); `turn`
        and `slot`: where in its agent's turns it was made."""
        record = CallRecord(tool=tool.name, backend=tool.backend, op_id=uuid.uuid4(), agent_id=agent_id, seed=seed,
                            arguments=arguments, started_ns=monotonic_ns(), turn=turn, slot=slot,
                            lane=lane_of(agent_id, slot))
        return self._execute(tool, record, arguments is not None or draw_arguments(tool, seed, record))

    def call_with(self, tool: Tool, agent_id: str, arguments: Arguments, op_id: uuid.UUID,
                  lane: str | None = None) -> CallRecord:
        """One call of `tool` by `agent_id` with the arguments and the op id it was given (drawn and
        named by whoever sent it), in `lane` (default: the agent's one). The tool executes from
        them alone: it gets no seed (db.tool)."""
        record = CallRecord(tool=tool.name, backend=tool.backend, op_id=op_id, agent_id=agent_id,
                            arguments=arguments, started_ns=monotonic_ns(), lane=lane or lane_of(agent_id, 0))
        return self._execute(tool, record, True)

    def _execute(self, tool: Tool, record: CallRecord, drawn: bool) -> CallRecord:
        """Each attempt of the call by policy, `drawn` False when its arguments step failed; the
        record once reported."""
        agent_id, seed = record.agent_id, record.seed
        if self._call_started is not None:
            self._call_started.fire(record=record)
        started = perf_counter()
        first_deadlock_at: float | None = None
        self._in_flight.started(record)
        try:
            for attempt in range(1, self._policy.max_tries + 1) if drawn else ():
                record.attempts = attempt
                failure, after_commit = self._attempt(tool, agent_id, seed, record, first_deadlock_at)
                if failure is None:
                    # The call has succeeded already: an agent stopped in a follow-up is still
                    # reported as succeeded, and one that raises is a harness bug that reaches
                    # the agent, never a failure of the call.
                    for follow_up in after_commit:
                        follow_up()
                    break
                if failure is Failure.DEADLOCK and first_deadlock_at is None:
                    first_deadlock_at = perf_counter()
                if record.outcome is Outcome.INDETERMINATE or not failure.retryable:
                    break
                if attempt < self._policy.max_tries:
                    self._sleep(self._policy.backoff(attempt, self._backoff_rng))
        finally:
            record.duration_s = perf_counter() - started
            if first_deadlock_at is not None and record.deadlock_resolution_s is None:
                # Never resolved (it gave up, or failed otherwise): the time it was held up is
                # still the worst case of the distribution, not one to leave out.
                record.deadlock_resolution_s = perf_counter() - first_deadlock_at
            self._in_flight.finished(record)
        return record

    def _attempt(
        self, tool: Tool, agent_id: str, seed: int, record: CallRecord, first_deadlock_at: float | None
    ) -> tuple[Failure | None, list[Callable[[], None]]]:
        """One try of the call: the failure it met, or None and the follow-ups of the transaction
        it committed (its `after_commit`, the same list).

        Success is recorded as soon as COMMIT returns (or a Redis tool's commands did), before
        the connection goes back to the pool: an agent stopped after that point made a call that
        committed, and reporting it otherwise would make the audit blame the server for its row.
        """
        asked_at = began = perf_counter()
        conn: psycopg.Connection | None = None
        # A Redis tool's commands are its commit: a connection lost during them leaves the
        # outcome unknown.
        committing = not tool.uses_postgres
        tx: Transaction | None = None
        try:
            if tool.uses_postgres:
                try:
                    conn = self._pool.getconn()
                finally:  # a wait that ended in a pool timeout is the worst of all: keep it
                    began = perf_counter()
                    record.pool_waits_s.append(began - asked_at)
            # A tool that declares its arguments gets no seed: it executes from them alone.
            tx = Transaction(record.op_id, agent_id, seed if record.arguments is None else None, conn, self._redis,
                             self._tool_work, self._sleep, lane=record.lane)
            try:
                record.value = tool.run(tx, **(record.arguments or {}))
            except BaseException:
                if tx.attempted is not None:  # what it set out to do, for a history: it ran no further
                    record.value = tx.attempted
                raise
            if conn is not None:
                committing = True
                conn.commit()
                tx.committed_at = perf_counter()
            record.outcome = Outcome.SUCCEEDED
            record.operations.append((_system(tool), perf_counter() - began, "", ""))
            # The same list: what the follow-ups observe still joins the record.
            record.observations = tx.observations
            if first_deadlock_at is not None:
                record.deadlock_resolution_s = perf_counter() - first_deadlock_at
            return None, tx.after_commit
        except _STOPPED:
            record.outcome = Outcome.INDETERMINATE if committing else Outcome.INTERRUPTED
            record.cut_off = committing
            if conn is not None:
                _cancel_running_statement(conn)
            raise
        except Exception as exc:  # every failure is classified below; a bug becomes Failure.ERROR
            failure = classify(exc, conn)
            record.failures.append(failure)
            record.exception = exc
            if conn is not None or not tool.uses_postgres:  # it reached its server
                record.operations.append((_system(tool), perf_counter() - began,
                                          getattr(exc, "sqlstate", None) or "", failure.value))
            if failure is Failure.DEADLOCK and tx is not None:
                record.deadlock_detections_s.append(perf_counter() - tx.statement_started)
            if committing and failure is Failure.CONNECTION_LOST:
                record.outcome = Outcome.INDETERMINATE
            if failure is Failure.ERROR:
                log.warning("tool %s failed: %s: %s", tool.name, type(exc).__name__, exc)
            return failure, []
        finally:
            if conn is not None:
                try:
                    _end_transaction(conn)
                finally:
                    # The rollback is a round trip: an agent stopped during it still gives its
                    # connection back (the pool replaces one left in the middle of a statement).
                    self._pool.putconn(conn)


def _system(tool: Tool) -> str:
    """The server an attempt of `tool` works on, as OpenTelemetry names it (db.system.name)."""
    return "postgresql" if tool.uses_postgres else "redis"


def _end_transaction(conn: psycopg.Connection) -> None:
    """Roll back a failed attempt here, quietly: the pool would do it too, but with a warning
    per conflict, and conflicts are what this harness provokes by the thousand."""
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        try:
            conn.rollback()
        except psycopg.Error:
            pass  # the connection is broken: the pool sees it and replaces it


def _cancel_running_statement(conn: psycopg.Connection) -> None:
    """Ask the server to stop a statement the agent will never read the end of, so that its
    backend does not sit on locks (and count deadlocks) after the agent is gone."""
    if conn.pgconn.transaction_status == TransactionStatus.ACTIVE:
        try:
            conn.cancel_safe(timeout=2.0)
        except psycopg.Error as exc:
            log.debug("could not cancel the statement of a stopped agent: %s", exc)
