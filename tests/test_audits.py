"""Each audit passes on what the real tools left, and fails on data corrupted on purpose."""

from __future__ import annotations

import uuid
from functools import partial

import gevent
import pytest
from psycopg import sql

from db.audits import Acknowledged, Check
from db.op_ids import OpIds
from db.call_record import Outcome
from db.pool import SessionSettings
from db.tool import Tool
from tasks.credits import deduct_credits, transfer_credits
from tasks.credits_audit import audit_credits as audit_credits_in
from tasks.isolation import audit_isolation, increment_counter, reserve_slot
from tests.support import PREPARED, Recorder, acknowledged_from, adapter_on, context_for, prepared_schema

ACCOUNTS = 5


@pytest.fixture
def audited_run(servers, admin, schema):
    """Agents deduct and transfer concurrently on 5 hot accounts; what they acknowledged."""
    prepared_schema(admin, schema, accounts=ACCOUNTS, balance=100_000)
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema, deadlock_timeout_ms=20), recorder,
                               size=8, tool_work_s=0.002)
    tools = [Tool("deduct_credits", partial(deduct_credits, accounts=ACCOUNTS)),
             Tool("transfer_credits", partial(transfer_credits, accounts=ACCOUNTS))]

    def agent(n: int) -> None:
        for i in range(25):
            adapter.call(tools[(n + i) % 2], f"a{n}", seed=n * 1000 + i)

    with pool:
        gevent.joinall([gevent.spawn(agent, n) for n in range(8)], raise_error=True)
    succeeded = [r for r in recorder.records if r.outcome is Outcome.SUCCEEDED]
    assert len(succeeded) > 100 and any(r.failures for r in recorder.records), "the run must have contended"
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return schema, acknowledged_from(recorder.records)


def audit_credits(admin, schema, acknowledged):
    return audit_credits_in(context_for(admin, schema, lambda tools: acknowledged))


def _failed(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_a_clean_run_passes_every_check(admin, audited_run):
    schema, acknowledged = audited_run
    checks = audit_credits(admin, schema, acknowledged)
    assert _failed(checks) == set(), [c for c in checks if not c.ok]
    assert {c.name for c in checks} == {
        "credits_conserved", "balances_match_ledger", "no_negative_balance",
        "acknowledged_in_ledger", "ledger_within_acknowledged", "failed_not_in_ledger", "versions_count_updates",
    }


def test_credits_appearing_from_nowhere_break_conservation(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("UPDATE accounts SET balance = balance + 7 WHERE id = 2")
    checks = audit_credits(admin, schema, acknowledged)
    assert _failed(checks) == {"credits_conserved", "balances_match_ledger"}
    conserved = next(c for c in checks if c.name == "credits_conserved")
    assert conserved.observed - conserved.expected == 7


def test_a_lost_acknowledged_operation_is_named(admin, audited_run):
    schema, acknowledged = audited_run
    lost = list(acknowledged.succeeded)[10]
    admin.execute("DELETE FROM ledger WHERE op_id = %s", (lost,))
    checks = audit_credits(admin, schema, acknowledged)
    assert {"acknowledged_in_ledger"} <= _failed(checks)
    assert str(lost) in next(c for c in checks if c.name == "acknowledged_in_ledger").detail


def _ghost_deduction(admin, op_id: uuid.UUID) -> None:
    """A deduction with its balance change, consistent in every way but its identity."""
    admin.execute("INSERT INTO ledger (op_id, tool, agent_id, debit_account, amount) VALUES (%s, 'ghost', 'x', 1, 1)",
                  (op_id,))
    admin.execute("UPDATE accounts SET balance = balance - 1, version = version + 1 WHERE id = 1")


def test_a_ghost_deduction_is_caught_even_beside_an_indeterminate_call(admin, audited_run):
    schema, acknowledged = audited_run
    # One call's outcome is unknown: a count-based audit would let one extra row through.
    unknown = Acknowledged(acknowledged.succeeded, acknowledged.failed, OpIds.of([uuid.uuid4()]))
    ghost = uuid.uuid4()
    _ghost_deduction(admin, ghost)
    checks = audit_credits(admin, schema, unknown)
    assert _failed(checks) == {"ledger_within_acknowledged"}
    assert str(ghost) in next(c for c in checks if c.name == "ledger_within_acknowledged").detail


def test_an_indeterminate_call_may_have_been_applied(admin, audited_run):
    schema, acknowledged = audited_run
    # An operation whose COMMIT outcome was unknown to the harness, but which did commit.
    applied = uuid.uuid4()
    _ghost_deduction(admin, applied)
    widened = Acknowledged(acknowledged.succeeded, acknowledged.failed, OpIds.of([applied]))
    assert _failed(audit_credits(admin, schema, widened)) == set()


def test_a_failed_call_that_was_applied_is_an_anomaly(admin, audited_run):
    schema, acknowledged = audited_run
    refused = uuid.uuid4()
    _ghost_deduction(admin, refused)  # written by another session, as if a rolled-back call had committed
    told_failed = Acknowledged(acknowledged.succeeded, OpIds.of([*acknowledged.failed, refused]))
    checks = {c.name: c for c in audit_credits(admin, schema, told_failed)}
    assert not checks["failed_not_in_ledger"].ok and checks["failed_not_in_ledger"].anomaly_count == 1
    assert str(refused) in checks["failed_not_in_ledger"].detail


def test_a_version_that_skipped_is_caught(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("UPDATE accounts SET version = version + 2 WHERE id = 4")
    assert _failed(audit_credits(admin, schema, acknowledged)) == {"versions_count_updates"}


def test_a_negative_balance_is_caught(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("UPDATE accounts SET balance = -5, initial_balance = initial_balance - balance - 5 WHERE id = 3")
    assert "no_negative_balance" in _failed(audit_credits(admin, schema, acknowledged))


ISOLATION_CHECKS = {
    "counters_as_seeded", "no_lost_updates", "no_write_skew", "increments_in_counter_ops",
    "counter_ops_within_acknowledged", "failed_not_in_counter_ops", "counter_ops_match_calls",
    "reservations_in_duty_leave", "duty_leave_within_acknowledged", "failed_not_in_duty_leave", "duty_leave_match_calls",
}


class IsolationRun:
    """Agents calling the isolation scenario's tools through the adapter at one level, on
    PREPARED's counters; then the audit of what they left."""

    def __init__(self, servers, admin, schema: str, isolation: str) -> None:
        prepared_schema(admin, schema)
        admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        self.admin, self.schema, self.isolation = admin, schema, isolation
        self.recorder = Recorder()
        self._pool, self._adapter = adapter_on(servers.pg_dsn, SessionSettings(schema, isolation=isolation),
                                               self.recorder, size=4)
        self.increment = Tool("increment_counter", partial(increment_counter, counters=PREPARED.counters))
        self.reserve = Tool("reserve_slot", reserve_slot)

    def calls(self, tool: Tool, agents: int = 4, each: int = 10) -> None:
        def agent(n: int) -> None:
            for i in range(each):
                self._adapter.call(tool, f"a{n}", seed=len(self.recorder.records) * 100 + n * 1000 + i)

        gevent.joinall([gevent.spawn(agent, n) for n in range(agents)], raise_error=True)

    def succeeded(self, tool: str) -> list:
        return [r for r in self.recorder.records if r.tool == tool and r.outcome is Outcome.SUCCEEDED]

    def audit(self) -> dict[str, Check]:
        checks = audit_isolation(context_for(self.admin, self.schema, lambda tools: acknowledged_from(
            [r for r in self.recorder.records if r.tool in tools])), isolation=self.isolation)
        return {c.name: c for c in checks}

    def close(self) -> None:
        self._pool.close()


@pytest.fixture
def isolation_run(servers, admin, schema, request):
    run = IsolationRun(servers, admin, schema, getattr(request, "param", "serializable"))
    yield run
    run.close()


def _failed_checks(checks: dict[str, Check]) -> dict[str, Check]:
    return {name: c for name, c in checks.items() if not c.ok}


@pytest.mark.parametrize("isolation_run", ["read_committed", "repeatable_read", "serializable"], indirect=True)
def test_the_reads_are_checked_only_where_the_level_refuses_lost_updates(isolation_run):
    isolation_run.calls(isolation_run.increment)
    checks = isolation_run.audit()
    serial = {"increment_reads_serial"} if isolation_run.isolation != "read_committed" else set()
    assert set(checks) == ISOLATION_CHECKS | serial
    if serial:
        assert _failed_checks(checks) == {}, _failed_checks(checks)


def test_a_counter_raised_and_lowered_between_increments_is_seen_only_in_their_reads(isolation_run):
    """The counter ends as its increments left it, so its value and its rows agree: only the
    values read in between tell that it held what no increment wrote."""
    run, admin = isolation_run, isolation_run.admin
    run.calls(run.increment)
    admin.execute("UPDATE counters SET value = value + 1000")
    before = len(run.succeeded("increment_counter"))
    run.calls(run.increment)
    admin.execute("UPDATE counters SET value = value - 1000")
    failed = _failed_checks(run.audit())
    assert set(failed) == {"increment_reads_serial"}
    # Every read of the second round: above the 80 increments made.
    assert failed["increment_reads_serial"].observed == len(run.succeeded("increment_counter")) - before
    assert "counter 1 read 10" in failed["increment_reads_serial"].detail


def test_a_counter_set_back_makes_two_increments_read_the_same_value(isolation_run):
    run, admin = isolation_run, isolation_run.admin
    run.calls(run.increment)
    counter = run.succeeded("increment_counter")[-1].value["counter"]
    admin.execute("UPDATE counters SET value = value - 1 WHERE id = %s", (counter,))
    run.calls(run.increment, agents=1, each=1)
    while run.succeeded("increment_counter")[-1].value["counter"] != counter:
        run.calls(run.increment, agents=1, each=1)
    failed = _failed_checks(run.audit())
    assert set(failed) == {"increment_reads_serial", "no_lost_updates"}
    assert failed["increment_reads_serial"].observed == 1
    assert f"counter {counter} read" in failed["increment_reads_serial"].detail


def test_counters_are_the_seeded_ones(isolation_run):
    run, admin = isolation_run, isolation_run.admin
    run.calls(run.increment)
    untouched = PREPARED.counters + 1
    admin.execute("INSERT INTO counters (id, value) VALUES (%s, 0)", (untouched,))
    failed = _failed_checks(run.audit())
    assert set(failed) == {"counters_as_seeded"}
    assert failed["counters_as_seeded"].observed == PREPARED.counters + 1
    admin.execute("DELETE FROM counters WHERE id = %s", (untouched,))
    emptied = run.succeeded("increment_counter")[0].value["counter"]
    admin.execute("DELETE FROM counter_ops WHERE counter_id = %s", (emptied,))
    admin.execute("DELETE FROM counters WHERE id = %s", (emptied,))
    failed = _failed_checks(run.audit())
    assert set(failed) == {"counters_as_seeded", "increments_in_counter_ops"}
    assert failed["counters_as_seeded"].observed == PREPARED.counters - 1
    assert f"seeded counters missing: {emptied}" in failed["counters_as_seeded"].detail


def test_an_increment_moved_to_another_counter_differs_from_its_call(isolation_run):
    run, admin = isolation_run, isolation_run.admin
    run.calls(run.increment)
    moved = run.succeeded("increment_counter")[0]
    counter = moved.value["counter"]
    admin.execute("UPDATE counter_ops SET counter_id = %s WHERE op_id = %s", (counter % PREPARED.counters + 1, moved.op_id))
    failed = _failed_checks(run.audit())
    assert set(failed) == {"counter_ops_match_calls", "no_lost_updates"}
    assert str(moved.op_id) in failed["counter_ops_match_calls"].detail
    assert failed["no_lost_updates"].observed == {"lost": 1, "invented": 1}


def test_a_reservation_is_in_duty_leave_exactly_when_its_call_wrote(isolation_run):
    run, admin = isolation_run, isolation_run.admin
    run.calls(run.reserve)
    wrote = [r for r in run.succeeded("reserve_slot") if r.value["wrote"]]
    stayed = [r for r in run.succeeded("reserve_slot") if not r.value["wrote"]]
    assert wrote and stayed, "both agents of some pair must have been asked"
    assert _failed_checks(run.audit()) == {}
    lost, rewritten = wrote[0], wrote[1]
    admin.execute("DELETE FROM duty_leave WHERE op_id = %s", (lost.op_id,))
    admin.execute("UPDATE duty_leave SET slot = 1 - slot WHERE op_id = %s", (rewritten.op_id,))
    # A row for a call that found the pair's other agent off already: it wrote none.
    admin.execute("INSERT INTO duty_leave VALUES (-1, 0, %s)", (stayed[0].op_id,))
    failed = _failed_checks(run.audit())
    assert set(failed) == {"reservations_in_duty_leave", "duty_leave_within_acknowledged", "duty_leave_match_calls"}
    assert failed["reservations_in_duty_leave"].observed == len(wrote) - 1
    assert str(lost.op_id) in failed["reservations_in_duty_leave"].detail
    assert str(stayed[0].op_id) in failed["duty_leave_within_acknowledged"].detail
    assert str(rewritten.op_id) in failed["duty_leave_match_calls"].detail


def test_isolation_audit_counts_corrupted_counters_and_pairs(admin, schema):
    prepared_schema(admin, schema)
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    nothing = context_for(admin, schema, lambda tools: Acknowledged())
    assert all(c.ok for c in audit_isolation(nothing, isolation="read_committed"))
    admin.execute("INSERT INTO counter_ops VALUES (gen_random_uuid(), 1, 1), (gen_random_uuid(), 1, 1)")
    admin.execute("UPDATE counters SET value = 1 WHERE id = 1")  # two increments, one survived
    admin.execute("INSERT INTO duty_leave VALUES (7, 0, gen_random_uuid()), (7, 1, gen_random_uuid())")
    checks = {c.name: c for c in audit_isolation(nothing, isolation="read_committed")}
    assert checks["no_lost_updates"].anomaly_count == 1 and not checks["no_lost_updates"].ok
    assert checks["no_write_skew"].anomaly_count == 1 and not checks["no_write_skew"].ok


def test_isolation_audit_sees_a_lost_and_an_invented_increment_on_two_counters(admin, schema):
    """Before: counter 1 one short and counter 2 one over cancelled out in a signed sum: pass."""
    prepared_schema(admin, schema)
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    admin.execute("INSERT INTO counter_ops VALUES (gen_random_uuid(), 1, 1), (gen_random_uuid(), 2, 1)")
    admin.execute("UPDATE counters SET value = CASE id WHEN 1 THEN 0 WHEN 2 THEN 2 END WHERE id IN (1, 2)")
    checks = {c.name: c for c in audit_isolation(context_for(admin, schema, lambda tools: Acknowledged()),
                                                 isolation="read_committed")}
    assert not checks["no_lost_updates"].ok
    assert checks["no_lost_updates"].observed == {"lost": 1, "invented": 1}
    assert checks["no_lost_updates"].anomaly_count == 2
