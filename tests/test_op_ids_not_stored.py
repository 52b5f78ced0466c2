"""A server that does not store toolclash's op id gets no audit by identity, and the report says so:
no check holds on nothing, none fails as if every call's row were lost. A user's table
(`ctx.check_writes`) holding none of the run's op ids: no check, the tools listed as not audited
by identity, a note saying why; a built-in audit, which judges by identity by design: none of its
checks, and the run is no evidence (`op_ids_not_stored`), whether its calls wrote PostgreSQL's
tables or Redis's queue (jobs and consumers under ids of a server's own). An empty table after
succeeded writes is still every call lost, and so is an empty queue after succeeded enqueues; a
table that holds some is judged. On the real servers, without a `locust` process
(tests/test_mcp_own_server.py runs a real server that stores none)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import uuid
from collections.abc import Callable, Collection
from typing import Any

import pytest
import redis
from psycopg import sql

from db.audits import Acknowledged, AuditContext, OpIds
from db.tool import Tool, Transaction
from harness.config.settings import Settings
from harness.run.load import Load
from tasks.queue import QueueKeys
from tests.support import context_for, judged_load, settings_from
from transport.call_record import Outcome

_CALLS = [uuid.uuid4() for _ in range(4)]


@pytest.fixture
def bookings(admin, schema):
    """A user's table in the run's schema, and what the agents were told of four bookings."""
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    admin.execute("CREATE TABLE bookings (op_id uuid UNIQUE, seat int NOT NULL)")
    return Acknowledged(OpIds.of(_CALLS, [{"seat": n} for n in range(len(_CALLS))]))


def _writes(admin, schema: str, acknowledged: Acknowledged) -> tuple[list, AuditContext]:
    ctx = context_for(admin, schema, lambda tools: acknowledged)
    return ctx.check_writes("bookings", ["book_seat"], columns={"seat": "seat"}), ctx


@pytest.mark.parametrize("stored, says", [
    ("NULL", "none of the 4 rows of bookings carries the op id of one of this run's 4 calls that wrote there"),
    ("gen_random_uuid()", "none of the 4 rows of bookings carries the op id"),  # the server's own ids
])
def test_a_users_table_without_the_runs_op_ids_is_not_audited_by_identity(admin, schema, bookings, stored, says):
    admin.execute(f"INSERT INTO bookings SELECT {stored}, n FROM generate_series(0, 3) n")
    checks, ctx = _writes(admin, schema, bookings)
    assert checks == [] and ctx.not_by_identity == {"book_seat"}
    [note] = ctx.notes
    assert note["kind"] == "op_ids_not_stored" and note["detail"].startswith(says)
    assert "the calls of book_seat cannot be compared with them by identity" in note["detail"]


def test_a_users_table_without_an_op_id_column_is_not_audited_by_identity(admin, schema, bookings):
    admin.execute("ALTER TABLE bookings DROP COLUMN op_id")
    checks, ctx = _writes(admin, schema, bookings)
    assert checks == [] and ctx.not_by_identity == {"book_seat"}
    assert ctx.notes[0]["detail"].startswith("bookings has no op_id column:")


def test_an_empty_table_after_succeeded_writes_is_every_call_lost_and_some_stored_is_judged(admin, schema, bookings):
    checks, ctx = _writes(admin, schema, bookings)
    assert {c.name for c in checks if not c.ok} == {"bookings_written"} and not ctx.not_by_identity
    admin.execute("INSERT INTO bookings VALUES (%s, 0), (NULL, 1)", (_CALLS[0],))
    checks, ctx = _writes(admin, schema, bookings)
    assert {c.name for c in checks if not c.ok} == {"bookings_written", "bookings_within_acknowledged"}
    assert "lost: " in next(c for c in checks if c.name == "bookings_written").detail and not ctx.notes


def _finished(servers, schema: str, scenario: str, calls: Callable[[Load, str, random.Random], None], *,
              after_load: Callable[[Settings], None] = lambda settings: None,
              sample_interval: str = "0.1") -> dict[str, Any]:
    """A run of `scenario` through the coordinator, without `locust`: one agent of the load makes
    the calls (`calls(load, agent_id, rng)`), `after_load` changes the servers' data before the
    audits; the report."""
    settings = settings_from("--schema", schema, "--scenario", scenario, "--sample-interval", sample_interval)
    with judged_load(servers, settings, 1) as (coordinator, load):
        agent_id, rng = load.next_agent()
        calls(load, agent_id, rng)
        load.stop()
        after_load(settings)
        report = coordinator.finish(load.metrics, 1, {})
    json.dumps(report, default=str)
    return report


def _own_ids(tool: Tool, new_id: Callable[[], Any] = uuid.uuid4) -> Tool:
    """`tool` as a server that runs it under ids of its own runs it: the real tool, given a new id
    (`new_id()`) as its op id at each attempt, while its call is reported under the op id the
    harness named."""
    def run(tx: Transaction, **arguments: Any) -> Any:
        tx.op_id = new_id()
        return tool.run(tx, **arguments)

    return dataclasses.replace(tool, run=run)


def _in_turn(names: list[str], own_ids: Collection[str] = (),
             new_id: Callable[[], Any] = uuid.uuid4) -> Callable[[Load, str, random.Random], None]:
    """Calls of the built-in tools `names`, in that order; those of `own_ids` under ids of their own."""
    def calls(load: Load, agent_id: str, rng: random.Random) -> None:
        tools = {tool.name: tool for tool in load.toolbox.tools}
        for name in names:
            tool = _own_ids(tools[name], new_id) if name in own_ids else tools[name]
            assert load.adapter.call(tool, agent_id, rng.getrandbits(64)).outcome is Outcome.SUCCEEDED
    return calls


def _no_evidence_by_identity(report: dict[str, Any], says: dict[str, str]) -> None:
    """The run fails as no evidence: each audit of `says` (by name) made none of its checks and
    says why (its problem's detail goes on with `says[audit]`); no tool of the run is audited
    by identity."""
    tools = sorted(report["tools"])
    assert report["verdict"] == "fail" and report["exit_code"] == 1
    assert report["not_audited_by_identity"] == tools
    problems = report["evidence"]["problems"]
    assert [problem["kind"] for problem in problems] == ["op_ids_not_stored"] * len(says)
    for problem, (audit, said) in zip(problems, says.items()):
        assert problem["detail"].startswith(f"the audit {audit} judges by identity, and {said}"), problem["detail"]
        assert f"({', '.join(tools)}: not audited by identity)" in problem["detail"]
    assert report["audit"]["checks"] == [], "none of its checks: not even those that need no op id"


def test_a_built_in_audit_that_finds_none_of_the_runs_op_ids_makes_the_run_no_evidence(servers, admin, schema):
    """As a server implementing the built-in tools without the op id would leave the ledger: each
    row under an id of its own. The credits audit makes none of its checks, and says why."""
    def calls(load: Load, agent_id: str, rng: random.Random) -> None:
        for _ in range(20):
            load.adapter.call(load.toolbox.pick(rng), agent_id, rng.getrandbits(64))

    def ledger_under_ids_of_its_own(settings: Settings) -> None:
        admin.execute(sql.SQL("UPDATE {} SET op_id = gen_random_uuid()").format(sql.Identifier(schema, "ledger")))

    report = _finished(servers, schema, "optimistic_locking", calls, after_load=ledger_under_ids_of_its_own)
    _no_evidence_by_identity(report, {"credits": "none of the "})
    assert report["not_audited_by_identity"] == ["deduct_credits"]


_ENQUEUES_THEN_DEQUEUES = ["enqueue_job"] * 6 + ["dequeue_job"] * 3
_JOB_NUMBERS = itertools.count(1)


@pytest.mark.parametrize("scenario, calls, says", [
    # The queue keeps the op id as the job's id and as the consumer's, in Redis: a server that
    # gives its jobs ids of its own, or only its consumers, or numbers its jobs (no UUID: the
    # drain cannot read their log entries), every one of them dequeued.
    ("queue", _in_turn(_ENQUEUES_THEN_DEQUEUES, {"enqueue_job", "dequeue_job"}),
     {"queue": "none of the 6 jobs of the queue (its log, levels and processing) carries the op id of one of this"
               " run's 6 succeeded enqueue_job calls"}),
    ("queue", _in_turn(_ENQUEUES_THEN_DEQUEUES, {"dequeue_job"}),
     {"queue": "none of the 3 consumers of the queue's log carries the op id of one of this run's 3 succeeded"
               " dequeue_job calls that took a job"}),
    ("queue", _in_turn(["enqueue_job"] * 6 + ["dequeue_job"] * 6, {"enqueue_job", "dequeue_job"},
                       lambda: f"job-{next(_JOB_NUMBERS)}"),
     {"queue": "none of the 0 jobs of the queue (its log, levels and processing) and the 18 unreadable entries of"
               " its log carries the op id of one of this run's 6 succeeded enqueue_job calls"}),
    # The other scenarios that keep op ids in Redis: the plans' log and the applied charges, whose
    # audits compare the calls with PostgreSQL's tables (plan_log, usage_outbox).
    ("agent_state", _in_turn(["update_plan"] * 4, {"update_plan"}),
     {"agent_state": "none of the 4 rows of plan_log carries the op id"}),
    ("cross_service", _in_turn(["charge_usage"] * 4, {"charge_usage"}),
     {"credits": "none of the 4 rows of ledger carries the op id",
      "cross_service": "none of the 4 rows of usage_outbox carries the op id"}),
], ids=["queue", "queue-consumers", "queue-numbered-jobs", "agent_state", "cross_service"])
def test_a_server_running_the_built_in_tools_under_ids_of_its_own_gets_no_audit_by_identity(
        servers, schema, scenario, calls, says):
    _no_evidence_by_identity(_finished(servers, schema, scenario, calls), says)


def test_a_queue_whose_log_was_deleted_after_succeeded_enqueues_lost_every_job(servers, admin, schema):
    """A queue holding nothing (its log, in Redis and drained, and its levels deleted) after
    enqueues that stored their op ids is no server storing none: every job lost, judged."""
    def delete_the_queue(settings: Settings) -> None:
        k = QueueKeys(settings.params.keys)
        with redis.Redis.from_url(servers.redis_url) as client:
            assert client.delete(k.log, *k.levels, k.processing) >= 2
        admin.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "queue_log")))

    # No drain during the run (its first after a minute): the log deleted in Redis is all there is.
    report = _finished(servers, schema, "queue", _in_turn(_ENQUEUES_THEN_DEQUEUES), after_load=delete_the_queue,
                       sample_interval="60")
    assert report["not_audited_by_identity"] == [] and report["evidence"]["problems"] == []
    checks = {check["name"]: check for check in report["audit"]["checks"]}
    enqueued = checks["acknowledged_jobs_enqueued"]
    assert not enqueued["ok"] and (enqueued["expected"], enqueued["observed"]) == (6, 0)
    assert enqueued["anomaly"] == "lost_jobs" and enqueued["anomaly_count"] == 6
    assert not checks["dequeues_in_log"]["ok"]
    assert report["verdict"] == "fail" and report["exit_code"] == 1
