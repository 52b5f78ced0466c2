"""Each scenario through the real `locust` command: it produces its conflicts at the servers, its
audit passes on the real outcome, and fails when another session corrupts the servers' data
while the run goes on."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
import pytest
import redis
from psycopg import sql

from db.pool import ISOLATION_LEVELS, load_application_name
from db.redis_keys import RedisKeys
from harness.config.option import BadOption
from harness.run.matrix import format_matrix, levels_failing
from tasks.queue import PRIORITIES
from tests.support import ROOT, lose_last_dequeue_and_ack, read_report, rows_in, settings_from, wait_until
from tests.test_list_append import assert_each_level_kept_its_models_promise


def _run_args(servers, schema: str) -> list[str]:
    """A scenario's run: these servers, 20 agents."""
    return [*servers.args(schema), "--users", "20", "--spawn-rate", "20"]


@dataclass(frozen=True)
class Case:
    scenario: str
    options: tuple[str, ...]
    produced: Callable[[dict[str, Any]], int]  # the conflicts the run must show (> 0)
    audited_by: str  # a check of the scenario's audit


def _failures(tool: str, kind: str) -> Callable[[dict[str, Any]], int]:
    """The failed attempts of `kind` of one tool's calls: its scenario's own, in a run of several."""
    return lambda r: r["tools"][tool]["failures"].get(kind, 0)


# The isolation scenario's clean run is the isolation matrix's serializable level, below. Each
# scenario's conflicts are counted on its own tools, so that scenarios whose options agree share
# one run (one `locust` start for five): pool_exhaustion's two connections would starve the others.
CASES = [
    Case("optimistic_locking", ("--accounts", "4"), _failures("deduct_credits", "version_conflicts"),
         "versions_count_updates"),
    Case("deadlock", ("--accounts", "4", "--deadlock-timeout", "20"),
         lambda r: (_failures("transfer_credits", "deadlocks")(r)
                    if r["conflicts"]["deadlocks"] == r["server_counters"]["deadlocks"] else 0),
         "balances_match_ledger"),
    Case("queue", ("--queue-capacity", "5"),
         lambda r: r["conflicts"]["queue_rejections"] * r["latency_ms"]["queue_wait"]["count"],
         "jobs_accounted_for"),
    Case("cross_service", ("--accounts", "4"),
         lambda r: (r["latency_ms"]["cross_service_window"]["count"]
                    if r["anomalies"]["cross_service_mismatches"] == 0 else 0),
         "usage_agrees_per_agent"),
    Case("agent_state", ("--teams", "1"), _failures("update_plan", "redis_watch_conflicts"),
         "plan_version_counts_changes"),
    Case("pool_exhaustion", ("--pool-size", "2", "--hold-time", "100", "--pool-timeout", "0.3"),
         lambda r: r["conflicts"]["pool_timeouts"] * r["pool"]["peak_waiting"], "pool_connections_returned"),
]
RUNS = {"five_scenarios": CASES[:5], "pool_exhaustion": CASES[5:]}


@pytest.mark.parametrize("cases", RUNS.values(), ids=RUNS.keys())
def test_each_scenario_produces_its_conflicts_and_its_audit_passes(cases, servers, schema, tmp_path, locust):
    report_path = tmp_path / "report.json"
    options: dict[str, str] = {}  # each option once: the cases of one run agree on their values
    for case in cases:
        options.update(zip(case.options[::2], case.options[1::2]))
    done = locust.run(*_run_args(servers, schema), "--run-time", "5s",
                      "--scenario", ",".join(case.scenario for case in cases),
                      *(part for option in options.items() for part in option),
                      "--report-json", str(report_path))
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]
    assert report["audit"]["ok"], [c for c in report["audit"]["checks"] if not c["ok"]]
    assert report["evidence"]["ok"], report["evidence"]["problems"]
    # (The verdict itself may fail: most scenarios break the default SLAs on purpose.)
    figures = {k: report[k] for k in ("conflicts", "anomalies", "pool", "tools")}
    for case in cases:
        assert case.produced(report) > 0, (case.scenario, json.dumps(figures)[:3000])
        assert case.audited_by in {c["name"] for c in report["audit"]["checks"]}


@dataclass(frozen=True)
class At:
    """Where a corruption is made: the test's own sessions, outside the run."""

    db: psycopg.Connection  # autocommit, with the run's schema on its search_path
    redis: redis.Redis
    keys: RedisKeys
    schema: str


@dataclass(frozen=True)
class Corruption:
    scenario: str
    options: tuple[str, ...]
    progress: Callable[[At], int]  # grows while the agents work
    # Changes the servers' data; what the failed check's detail must then name, if anything: a
    # text in the first check's, or {check: text} for several.
    corrupt: Callable[[At], Any]
    failed: tuple[str, ...]  # exactly the checks that must fail; the first is the corruption's own
    observed: Callable[[dict[str, Any]], Any]  # that check's observed figure, given the check
    anomaly: tuple[str, int] | None = None  # the only anomaly the report may then count
    # "redis": the data in Redis, before the drain moves it; "drained": what the drain moved
    # into the run's schema, after it did; "failover": Redis's last writes undone.
    where: str = "redis"


def _job_held_by_a_ghost(at: At) -> str:
    """Move a waiting job into `processing` under a consumer no agent is: the job it took."""
    levels = [at.keys("queue", level) for level in PRIORITIES]

    def taken():
        for level in levels:
            job = at.redis.lpop(level)
            if job is not None:
                return job
        return None
    job = wait_until(taken, "a waiting job")
    at.redis.hset(at.keys("queue", "processing"), "ghost-consumer", job)
    return job.decode().split("|")[0]


def _ledger_rows(at: At) -> int:
    return rows_in(at.db, at.schema, "ledger")


def _queue_log_entries(at: At) -> int:
    """The log's entries, in Redis and drained (Redis first: an entry between the drain's commit
    and its trim is counted twice, never missed)."""
    return at.redis.xlen(at.keys("queue", "log")) + rows_in(at.db, at.schema, "queue_log")


def _plan_changes(at: At) -> int:
    return int(at.redis.hget(at.keys("plan", 1), "version") or 0)


def _drained_row_deleted(at: At, table: str, where: str, returning: str) -> str:
    """One drained row of `table` deleted (the drain has moved at least one): what it held."""
    wait_until(lambda: at.db.execute(sql.SQL("SELECT 1 FROM {} WHERE " + where).format(sql.Identifier(table))
                                     ).fetchone(), f"a drained row in {table}")
    return str(at.db.execute(sql.SQL(
        "DELETE FROM {0} WHERE (stream_ms, stream_seq) = (SELECT stream_ms, stream_seq FROM {0} WHERE " + where
        + " ORDER BY stream_ms, stream_seq LIMIT 1) RETURNING " + returning).format(sql.Identifier(table))
    ).fetchone()[0])


# The drain runs every --sample-interval: twice a second, so that it has run before the corruption
# and again after it within a 3 s run.
OFTEN = ("--sample-interval", "0.5")

CORRUPTIONS = [
    # The case 1: credits invented on account 7 (and its initial_balance raised to match),
    # an account no run seeded; with account 3's version put back by one, so that the next
    # deduction there writes from a version another already wrote from; while summaries read.
    Corruption("optimistic_locking,pool_exhaustion", ("--accounts", "8"), lambda at: _version_of(at, 3),
               lambda at: _money_invented_and_a_version_put_back(at),
               ("credits_conserved", "accounts_as_seeded", "balances_match_ledger", "versions_count_updates",
                "one_deduction_per_version", "summaries_match_baseline"),
               lambda check: check["expected"] + 1_005_000, ("lost_updates", 1)),
    # A transfer in the ledger that no agent made (the balances are left alone), an acknowledged
    # transfer's row deleted (a lost operation), and account 6 overdrawn by a million that
    # account 5 gained (the total holds: the credits moved where no transfer took them).
    Corruption("deadlock", ("--accounts", "6", "--deadlock-timeout", "20"), _ledger_rows,
               lambda at: _transfers_invented_lost_and_an_overdraft(at),
               ("ledger_within_acknowledged", "acknowledged_in_ledger", "balances_match_ledger",
                "versions_count_updates",
                "no_negative_balance"),
               lambda check: 1),
    # An acknowledgement the drain moved into queue_log, deleted there: its job was never
    # acknowledged, and its consumer was told it was.
    Corruption("queue", ("--queue-capacity", "5", *OFTEN), _queue_log_entries,
               lambda at: _drained_row_deleted(at, "queue_log", "event = 'ack'", "job"),
               ("no_unacknowledged_jobs", "queue_matches_its_log", "dequeues_in_log"), lambda check: 1,
               ("unacknowledged_jobs", 1),
               where="drained"),
    # Four agents' charges made to disagree: one torn (its outbox row deleted after it was applied
    # to Redis), one's ledger amount and another's outbox amount raised by one, and an outbox row
    # no call wrote, for the agent whose Redis counter is also raised; and in what Redis applied,
    # a drained charge deleted and a charge no agent made.
    Corruption("cross_service", ("--accounts", "20", *OFTEN), _ledger_rows,
               lambda at: _charges_torn_edited_and_invented(at),
               ("charges_atomic", "charges_in_outbox", "outbox_within_acknowledged", "outbox_rows_match_calls",
                "usage_applied_by_identity", "usage_agrees_per_agent", "ledger_rows_match_calls", "credits_conserved",
                "balances_match_ledger"),
               lambda check: 4, ("cross_service_mismatches", 4)),
    # A step in the plans that no agent's call made, with the version raised to match.
    Corruption("agent_state", ("--teams", "1", *OFTEN), _plan_changes,
               lambda at: _step_added(at, str(uuid.uuid4())),
               ("plan_steps_within_acknowledged",), lambda check: 1),
    # A change the drain moved into plan_log, deleted there: a lost update, and every change of
    # the plan after it one place earlier in the log than the version its call was told.
    Corruption("agent_state", ("--teams", "1", *OFTEN), _plan_changes,
               lambda at: _drained_row_deleted(at, "plan_log", "true", "op_id"),
               ("plan_steps_not_lost", "plan_version_counts_changes", "plan_versions_in_log_order"),
               lambda check: check["expected"] - 1, ("lost_updates", 1), where="drained"),
    # A failover to a replica that missed the last change: its log entry and its version gone, the
    # next writer is told that version again. No drain during the run: the entry is still in Redis.
    Corruption("agent_state", ("--teams", "1", "--sample-interval", "60"), _plan_changes,
               lambda at: _last_change_lost(at),
               ("plan_versions_in_log_order", "plan_steps_not_lost"), lambda check: 1, ("lost_updates", 1),
               where="failover"),
]


def _version_of(at: At, account: int) -> int:
    """The account's version now; 0 while the run has not seeded it yet."""
    if not rows_in(at.db, at.schema, "accounts"):
        return 0
    return at.db.execute("SELECT version FROM accounts WHERE id = %s", (account,)).fetchone()[0]


def _money_invented_and_a_version_put_back(at: At) -> dict[str, str]:
    with at.db.transaction():  # one change for the summaries: each sees all of it or none
        at.db.execute("UPDATE accounts SET balance = balance + 5000, initial_balance = initial_balance + 5000"
                      " WHERE id = 7")
        at.db.execute("INSERT INTO accounts (id, balance, initial_balance) VALUES (9, 1000000, 1000000)")
        version = at.db.execute(
            "UPDATE accounts SET version = version - 1 WHERE id = 3 RETURNING version").fetchone()[0]
    return {"accounts_as_seeded": "accounts no run seeded: 9", "balances_match_ledger": "account 7 holds",
            "versions_count_updates": "account 3 at version",
            "one_deduction_per_version": f"account 3: 2 deductions wrote from version {version}",
            "summaries_match_baseline": '"accounts": 9'}


def _transfers_invented_lost_and_an_overdraft(at: At) -> dict[str, str]:
    invented = at.db.execute("INSERT INTO ledger (op_id, tool, agent_id, debit_account, credit_account, amount)"
                             " VALUES (gen_random_uuid(), 'transfer_credits', 'p0-a1', 1, 2, 5) RETURNING op_id"
                             ).fetchone()[0]
    # Not one between accounts 1 and 2: its movements would cancel the invented one's in the
    # versions (and, of the same amount back, in the balances).
    lost = wait_until(lambda: at.db.execute(
        "DELETE FROM ledger WHERE op_id = (SELECT op_id FROM ledger WHERE tool = 'transfer_credits'"
        " AND NOT (debit_account IN (1, 2) AND credit_account IN (1, 2)) ORDER BY recorded_at LIMIT 1)"
        " RETURNING op_id").fetchone(), "a transfer not between accounts 1 and 2")[0]
    # Far below zero: the transfers to account 6 in the rest of the run cannot lift it back.
    with at.db.transaction():  # account 6 locked first: no transfer moves its balance in between
        # A transfer locking 5 then 6 deadlocks with this: its session (20 ms) gives way, never this one.
        at.db.execute("SET LOCAL deadlock_timeout = '10s'")
        moved = at.db.execute("SELECT balance + 1000000 FROM accounts WHERE id = 6 FOR UPDATE").fetchone()[0]
        at.db.execute("UPDATE accounts SET balance = balance - %s WHERE id = 6", (moved,))
        at.db.execute("UPDATE accounts SET balance = balance + %s WHERE id = 5", (moved,))
    return {"ledger_within_acknowledged": str(invented), "acknowledged_in_ledger": str(lost),
            "no_negative_balance": "account 6 at -"}


# The first charges of three agents other than the one given, oldest first.
_FIRST_CHARGES = """SELECT op_id FROM (SELECT DISTINCT ON (agent_id) op_id, committed_at FROM usage_outbox
                                       WHERE agent_id <> %s ORDER BY agent_id, committed_at) first_charges
                    ORDER BY committed_at LIMIT 3"""


def _charges_torn_edited_and_invented(at: At) -> dict[str, str]:
    # A ledger row commits before its usage reaches Redis (after the commit): wait for a counter,
    # for charges of three other agents, and for the drain to have moved a charge out of Redis.
    invented_for = min(wait_until(lambda: at.redis.hkeys(at.keys("usage")), "a usage counter in Redis")).decode()

    def three_charges() -> list[uuid.UUID] | None:
        charges = [op_id for op_id, in at.db.execute(_FIRST_CHARGES, (invented_for,))]
        return charges if len(charges) == 3 else None

    torn, ledger_edited, outbox_edited = picked = wait_until(three_charges, "charges of three other agents")
    drained = wait_until(lambda: at.db.execute("SELECT op_id FROM usage_applied WHERE op_id <> ALL(%s) LIMIT 1",
                                               (picked,)).fetchone(), "a drained charge")[0]
    invented, ghost = uuid.uuid4(), str(uuid.uuid4())
    with at.db.transaction():
        at.db.execute("DELETE FROM usage_outbox WHERE op_id = %s", (torn,))
        at.db.execute("UPDATE ledger SET amount = amount + 1 WHERE op_id = %s", (ledger_edited,))
        at.db.execute("UPDATE usage_outbox SET amount = amount + 1 WHERE op_id = %s", (outbox_edited,))
        at.db.execute("INSERT INTO usage_outbox (op_id, agent_id, amount) VALUES (%s, %s, 1)", (invented, invented_for))
        at.db.execute("DELETE FROM usage_applied WHERE op_id = %s", (drained,))
    at.redis.hincrby(at.keys("usage"), invented_for, 5)
    at.redis.sadd(at.keys("usage", "applied"), ghost)
    return {"charges_atomic": f"in the outbox, not in the ledger: {invented}", "charges_in_outbox": str(torn),
            "outbox_within_acknowledged": str(invented), "outbox_rows_match_calls": str(outbox_edited),
            "ledger_rows_match_calls": str(ledger_edited), "usage_agrees_per_agent": f"agent {invented_for}: ",
            "usage_applied_by_identity": f"charged but never applied to Redis: {drained}; applied to Redis but charged"
                                         f" nowhere: {', '.join(sorted((str(torn), ghost)))}"}


def _step_added(at: At, step: str) -> str:
    # At once, as a change would: an agent's change between the two would take the step's place
    # in the log with the version before it, and fail plan_versions_in_log_order too.
    with at.redis.pipeline(transaction=True) as change:
        change.xadd(at.keys("plan", "log"), {"step": step, "team": 1})
        change.hincrby(at.keys("plan", 1), "version", 1)
        change.execute()
    return step


# As a lagging replica promoted would: the plans' last log entry and its plan's version undone, at once.
_UNDO_LAST_CHANGE = """local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
redis.call('XDEL', KEYS[1], last[1])
redis.call('HINCRBY', KEYS[2], 'version', -1)
return last[2][2]"""


def _last_change_lost(at: At) -> str:
    """The step of the change undone (one team: its plan is plan 1)."""
    return at.redis.eval(_UNDO_LAST_CHANGE, 2, at.keys("plan", "log"), at.keys("plan", 1)).decode()


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[f"{c.scenario}-{c.where}" for c in CORRUPTIONS])
def test_scenario_audit_fails_on_data_corrupted_during_the_run(case, servers, admin, schema, tmp_path, locust):
    audit_fails_on_data_corrupted_during_the_run(case, servers, admin, schema, tmp_path, locust)


def audit_fails_on_data_corrupted_during_the_run(case: Corruption, servers, admin: psycopg.Connection, schema: str,
                                                 tmp_path, locust, *options: str) -> dict[str, Any]:
    """A run of `case`'s scenario (with `options` too, e.g. its transport) whose data another
    session corrupts as it goes: it FAILs on exactly the case's checks, each naming what was
    corrupted. Its report."""
    report_path = tmp_path / "report.json"
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    with redis.Redis.from_url(servers.redis_url) as client, locust.background(
        *_run_args(servers, schema), "--run-time", "3s", "--scenario", case.scenario, *case.options,
        "--report-json", str(report_path), *options,
    ) as run:
        at = At(admin, client, RedisKeys(schema), schema)
        wait_until(lambda: case.progress(at), f"{case.scenario}'s agents to write", still=run.running)
        named = case.corrupt(at)
        # The agents wrote again after the corruption: it landed before the load stopped and the audit ran.
        since = case.progress(at)
        wait_until(lambda: case.progress(at) > since, "the agents to go on after the corruption", still=run.running)
        done = run.finish()
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 1 and report["verdict"] == "fail", done.stderr[-2000:]
    failed = {c["name"]: c for c in report["audit"]["checks"] if not c["ok"]}
    assert set(failed) == set(case.failed), failed
    check = failed[case.failed[0]]
    assert check["observed"] == case.observed(check), check
    named = {check["name"]: named} if isinstance(named, str) else named if isinstance(named, dict) else {}
    for name, text in named.items():
        assert text in failed[name]["detail"], failed[name]
    assert {k: v for k, v in report["anomalies"].items() if v} == dict([case.anomaly] if case.anomaly else []), check
    assert f"[FAIL] {check['name']}: expected {check['expected']}, observed {check['observed']}" in done.stdout
    assert "toolclash verdict: FAIL (exit code 1)" in done.stdout
    return report


def _failed_run(done, report_path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A run that FAILed on its audit: its report, and its failed checks by name, each printed."""
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 1 and report["verdict"] == "fail", done.stderr[-2000:]
    failed = {c["name"]: c for c in report["audit"]["checks"] if not c["ok"]}
    for check in failed.values():
        assert f"[FAIL] {check['name']}: expected {check['expected']}, observed {check['observed']}" in done.stdout
    assert "toolclash verdict: FAIL (exit code 1)" in done.stdout
    return report, failed


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _increments_of(at: At, counter: int) -> int:
    return at.db.execute("SELECT count(*) FROM counter_ops WHERE counter_id = %s", (counter,)).fetchone()[0]


def test_isolation_audit_fails_on_rows_lost_invented_and_rewritten_during_the_run(servers, admin, schema, tmp_path,
                                                                                  locust):
    """At serializable, where neither anomaly may happen, another session: moves counter 1 up
    and counter 2 down (their sum still matches); deletes 30 acknowledged reservations and
    invents one; adds a counter the harness never seeded."""
    report_path = tmp_path / "report.json"
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    with locust.background(*_run_args(servers, schema), "--run-time", "3s", "--scenario", "isolation",
                              "--isolation", "serializable", "--report-json", str(report_path)) as run:
        at = At(admin, None, RedisKeys(schema), schema)
        wait_until(lambda: rows_in(admin, schema, "duty_leave") >= 60, "reservations", still=run.running)
        admin.execute("UPDATE counters SET value = value + CASE id WHEN 1 THEN 1 ELSE -1 END WHERE id IN (1, 2)")
        deleted = [str(op_id) for (op_id,) in admin.execute(
            "DELETE FROM duty_leave WHERE op_id IN (SELECT op_id FROM duty_leave LIMIT 30) RETURNING op_id")]
        invented = str(admin.execute("INSERT INTO duty_leave VALUES (-1, 0, gen_random_uuid()) RETURNING op_id"
                                     ).fetchone()[0])
        admin.execute("INSERT INTO counters (id, value) VALUES (99, 0)")
        # Counter 2 set back: the next increment of it reads a value an earlier one read.
        since = _increments_of(at, 2)
        wait_until(lambda: _increments_of(at, 2) > since, "an increment of counter 2 after", still=run.running)
        done = run.finish()
    report, failed = _failed_run(done, report_path)
    assert set(failed) == {"no_lost_updates", "increment_reads_serial", "reservations_in_duty_leave",
                           "duty_leave_within_acknowledged", "counters_as_seeded"}, failed
    assert failed["no_lost_updates"]["observed"] == {"lost": 1, "invented": 1}
    reads = failed["increment_reads_serial"]
    assert reads["observed"] >= 1 and "counter 2 read" in reads["detail"]
    lost = failed["reservations_in_duty_leave"]
    assert lost["observed"] == lost["expected"] - 30 and lost["detail"].endswith("(30 in all)")
    assert set(_UUID.findall(lost["detail"])) <= set(deleted)
    assert failed["duty_leave_within_acknowledged"]["observed"] == 1
    assert invented in failed["duty_leave_within_acknowledged"]["detail"]
    counters = failed["counters_as_seeded"]
    assert counters["observed"] == 9 and "never seeded: 99" in counters["detail"]
    assert {k: v for k, v in report["anomalies"].items() if v} == {"lost_updates": 2}


# A producer whose capacity check failed (KEYS: the queue's three levels, high first, and its log;
# ARGV: the depth to reach, then job ids): it pushes jobs to the low level, and logs each, as the
# enqueue script does, until the queue holds that many. How many it pushed.
_ENQUEUED_PAST_CAPACITY = """
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
local pushed = 0
while depth < tonumber(ARGV[1]) do
  pushed = pushed + 1
  local time = redis.call('TIME')
  redis.call('RPUSH', KEYS[3], ARGV[1 + pushed] .. '|' .. time[1] .. string.format('%06d', tonumber(time[2])))
  depth = depth + 1
  redis.call('XADD', KEYS[4], '*', 'event', 'enqueue', 'job', ARGV[1 + pushed], 'level', 3, 'depth', depth)
end
return pushed
"""


def _queued_jobs(at: At) -> set[str]:
    return {entry.decode().split("|")[0]
            for level in PRIORITIES for entry in at.redis.lrange(at.keys("queue", level), 0, -1)}


def test_queue_audit_fails_on_a_failover_a_ghost_consumer_and_an_overfull_queue_during_the_run(
        servers, admin, schema, tmp_path, locust):
    """Another session, during one run: takes a queued job for a consumer that never was; makes
    Redis lose its last two writes three times, each one consumer's dequeue and acknowledgement
    of a job, as a failover to a lagging replica does (their job goes back to the head of its
    level, and another consumer takes it); then, as a producer whose capacity check failed,
    fills the queue to two jobs past its capacity.

    The failover acts on the log in Redis, before any drain copies it (--sample-interval longer
    than the run): writes a failover loses are the newest, which no drain has read yet; acting
    on queue_log after the drain would be PostgreSQL losing rows instead. No tool work lets a
    consumer's dequeue and acknowledgement be the last two writes often."""
    report_path = tmp_path / "report.json"
    capacity = 5
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    with redis.Redis.from_url(servers.redis_url) as client, locust.background(
        *_run_args(servers, schema), "--run-time", "3s", "--scenario", "queue", "--queue-capacity", str(capacity),
        "--tool-work", "0", "--sample-interval", "60", "--report-json", str(report_path),
    ) as run:
        at = At(admin, client, RedisKeys(schema), schema)
        wait_until(lambda: _queue_log_entries(at), "the agents to use the queue", still=run.running)
        ghost_job = _job_held_by_a_ghost(at)
        handed_again = [wait_until(lambda: lose_last_dequeue_and_ack(client, at.keys),
                                   "a consumer's dequeue and acknowledgement as the last two writes", still=run.running,
                                   every=0.002)
                        for _ in range(3)]
        wait_until(lambda: not set(handed_again) & _queued_jobs(at), "the jobs to be taken again", still=run.running)
        levels = [at.keys("queue", level) for level in PRIORITIES]
        pushed = client.eval(_ENQUEUED_PAST_CAPACITY, 4, *levels, at.keys("queue", "log"), capacity + 2,
                             *(str(uuid.uuid4()) for _ in range(capacity + 2)))
        since = _queue_log_entries(at)
        wait_until(lambda: _queue_log_entries(at) > since, "the agents to go on after", still=run.running)
        done = run.finish()
    report, failed = _failed_run(done, report_path)
    assert set(failed) == {"dequeues_in_log", "no_duplicate_jobs", "no_unacknowledged_jobs", "queue_matches_its_log",
                           "capacity_never_exceeded", "jobs_within_acknowledged"}, failed
    assert failed["dequeues_in_log"]["observed"] == failed["dequeues_in_log"]["expected"] - 3
    # A job handed again may be lost again, by the consumer that took it again.
    assert failed["no_duplicate_jobs"]["observed"] == len(set(handed_again))
    assert all(job in failed["no_duplicate_jobs"]["detail"] for job in handed_again)
    assert failed["no_unacknowledged_jobs"]["observed"] == 1 and ghost_job in failed["no_unacknowledged_jobs"]["detail"]
    assert failed["capacity_never_exceeded"]["observed"] == capacity + 2
    assert failed["jobs_within_acknowledged"]["observed"] == pushed
    assert {k: v for k, v in report["anomalies"].items() if v} == {
        "duplicate_jobs": len(set(handed_again)), "unacknowledged_jobs": 1, "capacity_overshoots": 2}
    assert report["not_audited_by_identity"] == []


def test_a_session_of_the_load_left_idle_in_transaction_fails_the_pool_audit_and_the_evidence(
        servers, admin, schema, tmp_path, locust):
    """The pool audit reads no data: its view from the server is pg_stat_activity, where a session
    in the load's application_name left idle in a transaction is a connection the load leaked.
    Here another session takes that name and stays so until the run has ended, so the load's
    count at its stop sees it, and the coordinator finds it still there when the audits begin:
    what it may yet commit is not in the audited data, so the run is no evidence. (The pool
    audit's other check, pool_connections_returned, is the pool's own bookkeeping: nothing done
    at the server can make it fail.)

    The same run has its hold on the Redis keys wiped, as by a Redis restart without its data: it
    is taken again, and the report says so (before: the run failed as keys_lost)."""
    report_path = tmp_path / "report.json"
    name = load_application_name(schema, 0)
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> %s"
    with redis.Redis.from_url(servers.redis_url) as client, locust.background(
        *_run_args(servers, schema), "--run-time", "3s", "--scenario", "pool_exhaustion",
        "--pool-size", "2", "--hold-time", "100", "--pool-timeout", "0.3", "--report-json", str(report_path),
    ) as run:
        wait_until(lambda: admin.execute(sessions, (name, 0)).fetchone()[0] >= 2, "the load's pool to open",
                   still=run.running)
        assert client.delete(f"toolclash:{schema}") == 1
        with psycopg.connect(servers.pg_dsn, application_name=name) as impostor:
            impostor.execute("SELECT 1")  # opens a transaction, left idle in it
            done = run.finish()
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 1 and report["verdict"] == "fail", done.stderr[-2000:]
    failed = {c["name"]: c for c in report["audit"]["checks"] if not c["ok"]}
    assert list(failed) == ["no_session_idle_in_transaction"]
    assert failed["no_session_idle_in_transaction"]["observed"] == 1
    assert [f["idle_in_transaction"] for f in report["pool"]["at_rest"]] == [1]
    assert "[FAIL] no_session_idle_in_transaction: expected 0, observed 1" in done.stdout
    assert report["server_counters"]["load_sessions_left"] == 1
    [problem] = report["evidence"]["problems"]
    assert problem["kind"] == "load_sessions_left" and problem["detail"].startswith("1 session(s) of the load")
    [claim] = [n for n in report["evidence"]["notes"] if n["kind"] == "keys_claimed_again"]
    assert f"toolclash:{schema}:*" in claim["detail"]
    assert "toolclash verdict: FAIL (exit code 1)" in done.stdout


def test_isolation_matrix_agrees_with_postgresqls_documented_behaviour(servers, schema, tmp_path, locust):
    """Repeatable read required: it fails (write skew), so the matrix does, although serializable
    passes (before: exit 0 when any level passed); read committed's failure, by design, counts
    for nothing. The same run has the list_append scenario, whose history keeps at each level the
    promise of the model the level makes (tests/test_list_append.py)."""
    report_path, history = tmp_path / "matrix.json", tmp_path / "history.jsonl"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "20", "--spawn-rate", "20", "--run-time", "5s", "--isolation-matrix",
        "--scenario", "isolation,list_append", "--history", str(history),
        "--require-levels", "repeatable_read", "--counters", "4", "--report-json", str(report_path), timeout=240,
    )
    matrix = read_report(report_path)
    assert_each_level_kept_its_models_promise(matrix, history, tmp_path)
    rows = {row["level"]: row["report"] for row in matrix["matrix"]}
    assert list(rows) == ["read_committed", "repeatable_read", "serializable"]
    for line in ("isolation level", "read_committed", "repeatable_read", "serializable"):
        assert line in done.stdout
    rc, rr, ser = rows["read_committed"], rows["repeatable_read"], rows["serializable"]
    # The isolation scenario's own (list_append's are its own too).
    isolation_failures = [sum(r["tools"][tool]["failures"].get("serialization_failures", 0)
                              for tool in ("increment_counter", "reserve_slot")) for r in (rc, rr, ser)]
    # Read committed allows both anomalies, and refuses nothing.
    assert rc["anomalies"]["lost_updates"] > 0 and rc["anomalies"]["write_skew"] > 0
    assert rc["conflicts"]["serialization_failures"] == 0 and rc["verdict"] == "fail"
    # Repeatable read refuses the lost update (40001) but allows write skew.
    assert rr["anomalies"]["lost_updates"] == 0 and isolation_failures[1] > 0
    assert rr["anomalies"]["write_skew"] > 0 and rr["verdict"] == "fail"
    # Serializable allows neither.
    assert ser["anomalies"]["lost_updates"] == 0 and ser["anomalies"]["write_skew"] == 0
    assert isolation_failures[2] > 0 and ser["audit"]["ok"]
    # (Its verdict also follows its latency SLAs, which this shared machine may break.)
    failed = ["serializable"] * (ser["verdict"] != "pass") + ["repeatable_read"]
    assert matrix["must_pass"] == ["serializable", "repeatable_read"] and matrix["failed"] == failed
    assert done.returncode == matrix["exit_code"] == 1, done.stderr[-2000:]
    assert (f"toolclash: isolation matrix: FAIL: must pass serializable, repeatable_read; failed: {', '.join(failed)}"
            in done.stdout)


def _matrix_rows(*verdicts: str) -> list[dict[str, Any]]:
    return [{"level": level, "report": {"verdict": verdict}} for level, verdict in zip(ISOLATION_LEVELS, verdicts)]


def test_the_matrix_fails_on_its_strongest_level_or_a_required_one_only():
    assert levels_failing(_matrix_rows("fail", "fail", "pass"), ()) == (["serializable"], [])
    # Before: exit 0, since read committed passed.
    assert levels_failing(_matrix_rows("pass", "pass", "fail"), ()) == (["serializable"], ["serializable"])
    assert levels_failing(_matrix_rows("fail", "pass", "pass"), ("serializable", "repeatable_read")) == (
        ["serializable", "repeatable_read"], [])
    assert levels_failing(_matrix_rows("fail", "pass", "pass"), ("read_committed",)) == (
        ["serializable", "read_committed"], ["read_committed"])


def test_require_levels_names_isolation_levels_of_a_matrix():
    assert settings_from("--isolation-matrix", "--require-levels", "repeatable_read, serializable").required_levels \
        == ("repeatable_read", "serializable")
    assert settings_from("--isolation-matrix").required_levels == ()
    for words, says in (
        (("--isolation-matrix", "--require-levels", "snapshot"),
         "--require-levels 'snapshot': comma-separated, among read_committed, repeatable_read, serializable"),
        (("--isolation-matrix", "--require-levels", "serializable,"),
         "--require-levels 'serializable,': comma-separated"),
        (("--require-levels", "serializable"), "--require-levels needs --isolation-matrix"),
    ):
        with pytest.raises(BadOption) as refused:
            settings_from(*words)
        assert str(refused.value).startswith(says)


def test_user_tools_module_runs_through_locust_and_its_writes_are_audited_by_identity(servers, admin, schema,
                                                                                      tmp_path, locust):
    """examples/seat_tools.py audits its bookings with ctx.check_writes: a booking deleted and
    another's seat rewritten from another session during the run are found, by id; the tool
    whose reads no check compares is listed as not audited by identity."""
    report_path = tmp_path / "report.json"
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    with locust.background(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "10", "--spawn-rate", "10", "--run-time", "3s",
        "--tools-module", str(ROOT / "examples" / "seat_tools.py"), "--report-json", str(report_path),
    ) as run:
        wait_until(lambda: rows_in(admin, schema, "bookings") > 1,
                   "two bookings", still=run.running)
        deleted = admin.execute("DELETE FROM bookings WHERE op_id = (SELECT op_id FROM bookings ORDER BY op_id"
                                " LIMIT 1) RETURNING op_id").fetchone()[0]
        moved = admin.execute("UPDATE bookings SET seat = seat + 1000 WHERE op_id = (SELECT op_id FROM bookings"
                              " ORDER BY op_id DESC LIMIT 1) RETURNING op_id").fetchone()[0]
        done = run.finish()
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 1, done.stderr[-2000:]
    assert report["run"]["scenarios"] == ["seat_tools"]
    assert set(report["tools"]) == {"book_seat", "count_free_seats"}
    assert report["tools"]["book_seat"]["calls"] > 2 * report["tools"]["count_free_seats"]["calls"] > 0  # weight 3:1
    checks = {c["name"]: c for c in report["audit"]["checks"]}
    assert set(checks) == {"seat_tools.bookings_written", "seat_tools.bookings_within_acknowledged",
                           "seat_tools.bookings_not_of_failed_calls", "seat_tools.bookings_as_written",
                           "seat_tools.seats_held_by_their_bookings"}
    failed = {name for name, check in checks.items() if not check["ok"]}
    assert str(deleted) in checks["seat_tools.bookings_written"]["detail"]
    assert str(moved) in checks["seat_tools.bookings_as_written"]["detail"]
    # The deleted booking's seat may have been booked again before the audit: then it holds no trace.
    assert {"seat_tools.bookings_written", "seat_tools.bookings_as_written"} <= failed <= {
        "seat_tools.bookings_written", "seat_tools.bookings_as_written", "seat_tools.seats_held_by_their_bookings"}
    assert report["not_audited_by_identity"] == ["count_free_seats"]
    assert "not audited by identity (no check compared their calls with the servers' data): count_free_seats" \
        in done.stdout



def test_the_matrix_has_a_column_per_anomaly_type_of_the_list_append_history():
    """Elle's names as columns, a level's count in each, starred where its model forbids it; a
    matrix without list_append has none."""
    def row(level: str, counts: dict[str, int] | None, forbidden: tuple[str, ...] = ()) -> dict[str, Any]:
        report = {"tools": {"list_append": {"calls": 10}}, "conflicts": {"serialization_failures": 0},
                  "anomalies": {"lost_updates": 0, "write_skew": 0}, "verdict": "pass"}
        if counts is not None:
            report["history_check"] = {"anomaly_types": sorted(counts), "anomaly_counts": counts,
                                       "forbidden_anomaly_types": list(forbidden)}
        return {"level": level, "report": report}

    table = format_matrix([row("read_committed", {"G-single-item": 3, "lost-update": 2}),
                           row("repeatable_read", {"G2-item": 5, "lost-update": 1}, ("lost-update",)),
                           row("serializable", {})])
    header, rc, rr, ser, note = table.strip("\n").splitlines()
    assert header.split()[-4:] == ["G-single-item", "G2-item", "lost-update", "verdict"]
    assert rc.split()[-4:] == ["3", "0", "2", "PASS"] and rr.split()[-4:] == ["0", "5", "1*", "PASS"]
    assert ser.split()[-4:] == ["0", "0", "0", "PASS"] and "forbidden by the model" in note
    assert "lost-update" not in format_matrix([row("serializable", None)])
