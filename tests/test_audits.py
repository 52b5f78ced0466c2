"""Each audit passes on what the real tools left, and fails on data corrupted on purpose."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import replace

import gevent
import pytest
import redis
from psycopg import sql

from db.audits import Acknowledged, Check
from db.durations import NO_TIME
from db.op_ids import OpIds
from db.pool import SessionSettings, open_pool
from db.session import SEND_ONCE
from db.tool import Tool
from harness.verdict.report import _check_result
from tasks.credits_audit import audit_credits as audit_credits_in
from tasks.cross_service import audit_cross_service
from tasks.isolation import audit_isolation
from tasks.pool_exhaustion import audit_summaries
from tests.support import (
    PREPARED,
    QUICK_RETRIES,
    Recorder,
    acknowledged_from,
    adapter_on,
    built_in_tool,
    context_for,
    free_port,
    prepared_schema,
)
from transport.call_record import Outcome
from transport.in_process import ToolAdapter

ACCOUNTS = 5
BALANCE = 100_000
SEEDED = replace(PREPARED, accounts=ACCOUNTS, initial_balance=BALANCE)


@pytest.fixture
def audited_run(servers, admin, schema):
    """Agents deduct and transfer concurrently on 5 hot accounts; what they acknowledged."""
    prepared_schema(admin, schema, accounts=ACCOUNTS, balance=BALANCE)
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema, deadlock_timeout_ms=20), recorder,
                               size=8, tool_work_s=0.002)
    tools = [built_in_tool(name, schema, accounts=ACCOUNTS) for name in ("deduct_credits", "transfer_credits")]

    def agent(n: int) -> None:
        for i in range(25):
            adapter.call(tools[(n + i) % 2], f"a{n}", seed=n * 1000 + i)

    with pool:
        gevent.joinall([gevent.spawn(agent, n) for n in range(8)], raise_error=True)
    succeeded = [r for r in recorder.records if r.outcome is Outcome.SUCCEEDED]
    assert len(succeeded) > 100 and any(r.failures for r in recorder.records), "the run must have contended"
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return schema, acknowledged_from(recorder.records)


def audit_credits(admin, schema, acknowledged, baseline=SEEDED):
    return audit_credits_in(context_for(admin, schema, lambda tools: acknowledged, baseline=baseline))


def _failed(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def _named(checks, name: str):
    return next(c for c in checks if c.name == name)


def test_a_clean_run_passes_every_check(admin, audited_run):
    schema, acknowledged = audited_run
    checks = audit_credits(admin, schema, acknowledged)
    assert _failed(checks) == set(), [c for c in checks if not c.ok]
    assert {c.name for c in checks} == {
        "accounts_as_seeded", "credits_conserved", "balances_match_ledger", "no_negative_balance",
        "acknowledged_in_ledger", "ledger_within_acknowledged", "failed_not_in_ledger", "ledger_rows_match_calls",
        "versions_count_updates", "one_deduction_per_version",
    }
    assert _named(checks, "ledger_rows_match_calls").detail.startswith(f"each of the {len(acknowledged.succeeded)}")


def test_credits_appearing_from_nowhere_break_conservation_whatever_the_table_says_was_seeded(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("UPDATE accounts SET balance = balance + 7, initial_balance = initial_balance + 7 WHERE id = 2")
    checks = audit_credits(admin, schema, acknowledged)
    assert _failed(checks) == {"credits_conserved", "balances_match_ledger"}
    conserved = _named(checks, "credits_conserved")
    assert conserved.observed - conserved.expected == 7
    assert "account 2 holds" in _named(checks, "balances_match_ledger").detail


def test_an_account_added_or_gone_is_found(admin, audited_run):
    schema, acknowledged = audited_run
    admin.execute("INSERT INTO accounts (id, balance, initial_balance) VALUES (77, %s, %s)", (BALANCE, BALANCE))
    checks = audit_credits(admin, schema, acknowledged, replace(SEEDED, accounts=ACCOUNTS + 1))
    # Account 6 was seeded (says the harness) and is gone with its credits; 77 never was.
    assert _failed(checks) == {"accounts_as_seeded"}
    seeded = _named(checks, "accounts_as_seeded")
    assert seeded.observed == {"added": 1, "removed": 1}
    assert "accounts no run seeded: 77" in seeded.detail and "seeded accounts gone: 6" in seeded.detail


def test_a_ledger_row_rewritten_is_found_by_its_content(admin, audited_run):
    schema, acknowledged = audited_run
    edited = admin.execute("UPDATE ledger SET amount = amount + 1 WHERE op_id = (SELECT op_id FROM ledger"
                           " WHERE tool = 'transfer_credits' LIMIT 1) RETURNING op_id").fetchone()[0]
    checks = audit_credits(admin, schema, acknowledged)
    # A transfer moves credits: the total holds, the two accounts' balances do not.
    assert _failed(checks) == {"ledger_rows_match_calls", "balances_match_ledger"}
    assert _named(checks, "ledger_rows_match_calls").observed == 1
    assert str(edited) in _named(checks, "ledger_rows_match_calls").detail


def test_a_lost_acknowledged_operation_is_named(admin, audited_run):
    schema, acknowledged = audited_run
    lost = list(acknowledged.succeeded)[10]
    admin.execute("DELETE FROM ledger WHERE op_id = %s", (lost,))
    checks = audit_credits(admin, schema, acknowledged)
    assert {"acknowledged_in_ledger"} <= _failed(checks)
    assert str(lost) in _named(checks, "acknowledged_in_ledger").detail


def _ghost_deduction(admin, op_id: uuid.UUID, account: int = 1, amount: int = 1) -> dict[str, int]:
    """A deduction with its balance change, consistent in every way but its identity; what its
    call would have written."""
    admin.execute("INSERT INTO ledger (op_id, tool, agent_id, debit_account, amount) VALUES (%s, 'ghost', 'x', %s, %s)",
                  (op_id, account, amount))
    admin.execute("UPDATE accounts SET balance = balance - %s, version = version + 1 WHERE id = %s", (amount, account))
    return {"debit": account, "amount": amount}


def _with_indeterminate(acknowledged: Acknowledged, op_id: uuid.UUID, value=None) -> Acknowledged:
    return Acknowledged(acknowledged.succeeded, acknowledged.failed, OpIds.of([op_id], [value]))


def test_a_ghost_deduction_is_caught_even_beside_an_indeterminate_call(admin, audited_run):
    schema, acknowledged = audited_run
    # One call's outcome is unknown: a count-based audit would let one extra row through.
    unknown = _with_indeterminate(acknowledged, uuid.uuid4())
    ghost = uuid.uuid4()
    _ghost_deduction(admin, ghost)
    checks = audit_credits(admin, schema, unknown)
    assert _failed(checks) == {"ledger_within_acknowledged"}
    assert str(ghost) in _named(checks, "ledger_within_acknowledged").detail


def test_on_kept_data_the_scoped_checks_ask_only_of_the_runs_own_calls(admin, audited_run):
    """A capacity probe on kept data judges only the checks scoped to its calls' identities: an
    earlier probe's rows (here a consistent deduction of no call of this run) fail only the
    checks that are not, which it reports not judged; its own row lost still fails a scoped one."""
    schema, acknowledged = audited_run
    _ghost_deduction(admin, uuid.uuid4())
    checks = audit_credits(admin, schema, acknowledged)
    scoped = {c.name for c in checks if c.scoped}
    assert scoped == {"acknowledged_in_ledger", "failed_not_in_ledger", "ledger_rows_match_calls"}
    assert _failed(checks) - scoped == {"ledger_within_acknowledged"} and not _failed(checks) & scoped
    assert "scoped" not in _check_result(_named(checks, "acknowledged_in_ledger")), "the report's check is unchanged"
    admin.execute("DELETE FROM ledger WHERE op_id = %s", (list(acknowledged.succeeded)[3],))
    assert _failed(audit_credits(admin, schema, acknowledged)) & scoped == {"acknowledged_in_ledger"}


def test_an_indeterminate_call_may_have_been_applied(admin, audited_run):
    schema, acknowledged = audited_run
    # An operation whose COMMIT outcome was unknown to the harness, but which did commit what it said.
    applied = uuid.uuid4()
    wrote = _ghost_deduction(admin, applied)
    assert _failed(audit_credits(admin, schema, _with_indeterminate(acknowledged, applied, wrote))) == set()
    # The same row holding another amount than its call wrote.
    checks = audit_credits(admin, schema, _with_indeterminate(acknowledged, applied, {**wrote, "amount": 2}))
    assert _failed(checks) == {"ledger_rows_match_calls"}
    # Over MCP a lost reply leaves the call without its value: its row is judged by identity only.
    checks = audit_credits(admin, schema, _with_indeterminate(acknowledged, applied))
    assert _failed(checks) == set(), [(c.name, c.detail) for c in checks if not c.ok]
    assert "1 rows of indeterminate calls whose value never came not compared" in _named(
        checks, "ledger_rows_match_calls").detail


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


def test_a_negative_balance_is_caught_even_when_the_ledger_explains_it(admin, audited_run):
    """An overdraft by a call whose outcome is unknown: every row accounted for, every balance
    as its ledger says, and still an account below zero."""
    schema, acknowledged = audited_run
    overdraft = uuid.uuid4()
    balance = admin.execute("SELECT balance FROM accounts WHERE id = 3").fetchone()[0]
    wrote = _ghost_deduction(admin, overdraft, account=3, amount=balance + 5)
    checks = audit_credits(admin, schema, _with_indeterminate(acknowledged, overdraft, wrote))
    assert _failed(checks) == {"no_negative_balance"}
    assert "account 3 at -5" in _named(checks, "no_negative_balance").detail


def test_two_deductions_from_one_version_are_a_lost_update(servers, admin, schema):
    """The account's version put back by another session: the next deductions read versions
    earlier ones already wrote from."""
    prepared_schema(admin, schema, accounts=1)
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder)
    deduct = built_in_tool("deduct_credits", schema, accounts=1)
    with pool:
        for seed in range(3):
            adapter.call(deduct, "a", seed)
        admin.execute(sql.SQL("UPDATE {} SET version = 1 WHERE id = 1").format(sql.Identifier(schema, "accounts")))
        for seed in range(3, 5):
            adapter.call(deduct, "a", seed)
    assert [r.value["version"] for r in recorder.records] == [0, 1, 2, 1, 2]
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    checks = audit_credits(admin, schema, acknowledged_from(recorder.records), replace(PREPARED, accounts=1))
    assert _failed(checks) == {"one_deduction_per_version", "versions_count_updates"}
    lost = _named(checks, "one_deduction_per_version")
    assert (lost.observed, lost.anomaly, lost.anomaly_count) == (2, "lost_updates", 2)
    assert "account 1: 2 deductions wrote from version 1" in lost.detail


def test_summaries_are_checked_against_the_seeded_baseline(servers, admin, schema):
    prepared_schema(admin, schema)
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder)
    summarize = built_in_tool("summarize_accounts", schema, hold_s=0)
    deduct = built_in_tool("deduct_credits", schema)
    accounts = sql.Identifier(schema, "accounts")
    with pool:
        for seed in range(3):
            adapter.call(deduct, "a", seed)
        adapter.call(summarize, "a", 10)
        admin.execute(sql.SQL("UPDATE {} SET balance = balance + 3 WHERE id = 2").format(accounts))
        adapter.call(summarize, "a", 11)
        admin.execute(sql.SQL("UPDATE {} SET balance = balance - 3 WHERE id = 2").format(accounts))
        admin.execute(sql.SQL("INSERT INTO {} (id, balance, initial_balance) VALUES (11, 0, 0)").format(accounts))
        adapter.call(summarize, "a", 12)
    clean, richer, wider = (r for r in recorder.records if r.tool == "summarize_accounts")
    assert clean.value["accounts"] == 10 and clean.value["deducted"] > 0
    assert clean.value["balance"] + clean.value["deducted"] == PREPARED.accounts * PREPARED.initial_balance
    audited: list[set[str]] = []

    def acknowledged_of(tools):
        audited.append(set(tools))
        return acknowledged_from(recorder.records)

    [check] = audit_summaries(context_for(admin, schema, acknowledged_of))
    assert audited == [{"summarize_accounts"}]
    assert (check.name, check.ok, check.observed) == ("summaries_match_baseline", False, 2)
    assert str(richer.op_id) in check.detail and str(wider.op_id) in check.detail
    assert str(clean.op_id) not in check.detail and "2 of 3 summaries" in check.detail


def _charged(servers, schema, recorder, client, calls):
    """Each (agent, seed) of `calls` charged through the adapter, with `client` as its Redis."""
    pool = open_pool(servers.pg_dsn, SessionSettings(schema), size=2, timeout_s=5)
    charge = built_in_tool("charge_usage", schema)
    adapter = ToolAdapter(pool, client, QUICK_RETRIES, NO_TIME, recorder.call_finished)
    with pool:
        return [adapter.call(charge, agent, seed) for agent, seed in calls]


@contextmanager
def _redis_reached_and_not(servers):
    """The test's Redis, and a client of a port where none listens (an apply that fails)."""
    with redis.Redis.from_url(servers.redis_url) as client, \
            redis.Redis(port=free_port(), retry=SEND_ONCE) as unreachable:
        yield client, unreachable


def test_charges_redis_missed_are_healed_by_the_relay_and_said_so(servers, admin, schema):
    prepared_schema(admin, schema)
    recorder = Recorder()
    with _redis_reached_and_not(servers) as (client, unreachable):
        missed = _charged(servers, schema, recorder, unreachable, [("a0", 0), ("a1", 1)])
        _charged(servers, schema, recorder, client, [("a0", 3)])
        assert [r.outcome for r in recorder.records] == [Outcome.SUCCEEDED] * 3
        assert missed[0].value == {"debit": missed[0].value["debit"], "amount": missed[0].value["amount"],
                                   "agent": "a0"}
        ctx = context_for(admin, schema, lambda tools: acknowledged_from(recorder.records), client)
        checks = audit_cross_service(ctx) + audit_credits_in(ctx)
    assert _failed(checks) == set(), [c for c in checks if not c.ok]
    assert [note["kind"] for note in ctx.notes] == ["relay_healed"]
    assert ("the relay applied 2 charges their agents had not (2 at the audit, 0 during the run)"
            in ctx.notes[0]["detail"])
    assert "the relay applied 2 charges" in _named(checks, "usage_agrees_per_agent").detail


def test_a_torn_charge_fails_even_when_its_outcome_is_unknown(servers, admin, schema):
    """The charge's COMMIT was lost to the harness; the ledger holds it and the outbox does not,
    which no commit of its one transaction can leave."""
    prepared_schema(admin, schema)
    recorder = Recorder()
    with _redis_reached_and_not(servers) as (client, unreachable):
        [torn] = _charged(servers, schema, recorder, unreachable, [("a0", 1)])
        admin.execute(sql.SQL("DELETE FROM {} WHERE op_id = %s").format(sql.Identifier(schema, "usage_outbox")),
                      (torn.op_id,))
        unknown = Acknowledged(indeterminate=OpIds.of([torn.op_id], [torn.value]))
        checks = audit_cross_service(context_for(admin, schema, lambda tools: unknown, client))
    assert _failed(checks) == {"charges_atomic", "usage_agrees_per_agent"}
    assert f"in the ledger, not in the outbox: {torn.op_id}" in _named(checks, "charges_atomic").detail
    amount = torn.value["amount"]
    assert (f"agent a0: the ledger charged {amount}, the outbox 0, Redis counted 0"
            in _named(checks, "usage_agrees_per_agent").detail)


ISOLATION_CHECKS = {
    "counters_as_seeded", "no_lost_updates", "no_write_skew", "increments_in_counter_ops",
    "counter_ops_within_acknowledged", "failed_not_in_counter_ops", "counter_ops_match_calls",
    "reservations_in_duty_leave", "duty_leave_within_acknowledged", "failed_not_in_duty_leave",
    "duty_leave_match_calls",
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
        self.increment = built_in_tool("increment_counter", schema)
        self.reserve = built_in_tool("reserve_slot", schema)

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
    admin.execute("UPDATE counter_ops SET counter_id = %s WHERE op_id = %s",
                  (counter % PREPARED.counters + 1, moved.op_id))
    failed = _failed_checks(run.audit())
    assert set(failed) == {"counter_ops_match_calls", "no_lost_updates"}
    assert str(moved.op_id) in failed["counter_ops_match_calls"].detail
    assert failed["no_lost_updates"].observed == {"lost": 1, "invented": 1}


def test_a_reservation_is_in_duty_leave_exactly_when_its_call_wrote(isolation_run):
    run, admin = isolation_run, isolation_run.admin
    run.calls(run.reserve)
    # Three calls in a row, alone: two of them share a pair, and the second finds the first's row
    # (the concurrent ones may all have raced their partners on a busy machine).
    run.calls(run.reserve, agents=1, each=3)
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
