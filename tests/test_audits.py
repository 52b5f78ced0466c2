"""Each audit passes on what the real tools left, and fails on data corrupted on purpose."""

from __future__ import annotations

import uuid
from functools import partial

import gevent
import pytest
from psycopg import sql

from db.audits import Acknowledged
from db.call_record import Outcome
from db.pool import SessionSettings
from db.tool import Tool
from tasks.credits import deduct_credits, transfer_credits
from tasks.credits_audit import audit_credits as audit_credits_in
from tests.support import Recorder, adapter_on, context_for, prepared_schema

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
    succeeded = [r.op_id for r in recorder.records if r.outcome is Outcome.SUCCEEDED]
    assert len(succeeded) > 100 and any(r.failures for r in recorder.records), "the run must have contended"
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return schema, Acknowledged(succeeded, indeterminate=0)


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
        "acknowledged_in_ledger", "ledger_within_acknowledged", "versions_count_updates",
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
    lost = acknowledged.succeeded_op_ids[10]
    admin.execute("DELETE FROM ledger WHERE op_id = %s", (lost,))
    checks = audit_credits(admin, schema, acknowledged)
    assert {"acknowledged_in_ledger", "ledger_within_acknowledged"} <= _failed(checks)
    assert str(lost) in next(c for c in checks if c.name == "acknowledged_in_ledger").detail


def test_an_invented_ledger_row_is_caught(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("INSERT INTO ledger (op_id, tool, agent_id, debit_account, amount) VALUES (%s, 'ghost', 'x', 1, 1)",
                  (uuid.uuid4(),))
    checks = audit_credits(admin, schema, acknowledged)
    assert "ledger_within_acknowledged" in _failed(checks)


def test_indeterminate_operations_widen_the_allowed_ledger_range(admin, audited_run):
    schema, acknowledged = audited_run
    # An operation whose COMMIT outcome was unknown to the harness, but which did commit.
    admin.execute("INSERT INTO ledger (op_id, tool, agent_id, debit_account, amount) VALUES (%s, 'x', 'x', 1, 1)",
                  (uuid.uuid4(),))
    admin.execute("UPDATE accounts SET balance = balance - 1, version = version + 1 WHERE id = 1")
    widened = Acknowledged(acknowledged.succeeded_op_ids, indeterminate=1)
    assert _failed(audit_credits(admin, schema, widened)) == set()


def test_a_version_that_skipped_is_caught(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("UPDATE accounts SET version = version + 2 WHERE id = 4")
    assert _failed(audit_credits(admin, schema, acknowledged)) == {"versions_count_updates"}


def test_a_negative_balance_is_caught(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("UPDATE accounts SET balance = -5, initial_balance = initial_balance - balance - 5 WHERE id = 3")
    assert "no_negative_balance" in _failed(audit_credits(admin, schema, acknowledged))
