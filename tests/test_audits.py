"""Each audit passes on what the real tools left, and fails on data corrupted on purpose."""

from __future__ import annotations

import uuid
from functools import partial

import gevent
import pytest
from psycopg import sql

from db.audits import Acknowledged
from db.op_ids import OpIds
from db.call_record import Outcome
from db.pool import SessionSettings
from db.tool import Tool
from tasks.credits import deduct_credits, transfer_credits
from tasks.credits_audit import audit_credits as audit_credits_in
from tests.support import Recorder, acknowledged_from, adapter_on, context_for, prepared_schema

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
