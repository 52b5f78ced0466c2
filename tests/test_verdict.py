"""A verdict the data backs: never PASS without evidence, a verdict at 300 and 1,000 agents, and
a pool that keeps its connections when agents are stopped in the middle of waiting for one."""

from __future__ import annotations

import textwrap
import uuid

import gevent
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from db import schema as run_schema
from db.pool import SessionSettings, load_application_name, open_pool
from harness.config.settings import HARNESS_SESSIONS
from harness.distributed.shipments import ShipmentNumbers, WorkerShipments
from harness.verdict.evidence import evidence_problems
from harness.watch.hub_lag import HubLag
from harness.watch.metrics import Metrics
from tests.support import ROOT, read_report, settings_from
from transport.call_record import CallRecord, Outcome


def _failed(report):
    return ([c for c in report["audit"]["checks"] if not c["ok"]], [r for r in report["sla"] if not r["ok"]],
            report["evidence"]["problems"])


def _evidence_and_audit_hold(report):
    """The run is judged on its evidence and audit; its latency SLAs depend on how busy this
    shared 2-core machine is, so the verdict is only required to follow them."""
    assert report["evidence"]["ok"] and report["audit"]["ok"], _failed(report)
    assert report["verdict"] == ("pass" if all(rule["ok"] for rule in report["sla"]) else "fail")


@pytest.fixture
def limited_role(servers, admin):
    """A login role that the server lets open 3 connections at most (CONNECTION LIMIT)."""
    role = f"tc_limited_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 3").format(sql.Identifier(role)))
    database = admin.execute("SELECT current_database()").fetchone()[0]
    admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))
    yield role
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_run_the_server_cannot_hold_is_refused_before_any_load(servers, admin, schema, locust):
    max_connections = int(admin.execute("SHOW max_connections").fetchone()[0])
    done = locust.run(*servers.args(schema), "--users", "200", "--spawn-rate", "200", "--run-time", "5s",
                      "--scenario", "deadlock", "--pool-size", str(max_connections), timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("toolclash: error:")]
    assert f"needs {max_connections + HARNESS_SESSIONS} PostgreSQL connections" in line
    assert f"max_connections {max_connections}" in line and "--pool-size" in line
    assert "Traceback" not in done.stderr
    begun = admin.execute("SELECT to_regclass(%s)", (f"{schema}.run_state",)).fetchone()[0]
    assert begun is None or admin.execute(sql.SQL("SELECT count(*) FROM {}.run_state").format(
        sql.Identifier(schema))).fetchone()[0] == 0, "no run was begun"


def test_a_pool_the_server_refuses_never_passes(servers, schema, limited_role, tmp_path, locust):
    """The server's room is fine, but the role may open 3 connections: the pool of 20 cannot open.
    Before the fix: zero calls, `verdict: pass`, exit 0."""
    path = tmp_path / "report.json"
    dsn = make_conninfo(servers.pg_dsn, user=limited_role)
    done = locust.run("--pg-dsn", dsn, "--redis-url", servers.redis_url, "--schema", schema, "--users", "20",
                      "--spawn-rate", "20", "--run-time", "10s", "--scenario", "deadlock",
                      "--report-json", str(path), timeout=90)
    report = read_report(path)
    assert done.returncode == report["exit_code"] == 2, done.stderr[-2000:]
    assert report["verdict"] == "fail"
    kinds = [p["kind"] for p in report["evidence"]["problems"]]
    assert kinds == ["server_refused", "no_calls"]
    assert sum(t["calls"] for t in report["tools"].values()) == 0
    assert report["run"]["duration_s"] < 8, "the run ended as soon as the pool failed"
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("toolclash: error:")]
    assert len(error_lines) == 1 and "too many connections for role" in error_lines[0]
    assert "Traceback" not in done.stderr


def test_300_agents_on_two_processes_under_faults_pass_on_a_healthy_server(servers, admin, schema, tmp_path, locust):
    """Sessions of both servers killed every few seconds: every call the faults left indeterminate
    is matched by id, the audits and the evidence hold, and each pool holds all its connections
    again. Before the fix: FAIL from pool_connections_returned ("48 of 75 connections free")."""
    path, rules = tmp_path / "report.json", ROOT / "sla" / "without_latency.toml"
    done = locust.run(*servers.args(schema), "--users", "300", "--spawn-rate", "300", "--run-time", "10s",
                      "--processes", "2", "--chaos", "pg-kill:2s,redis-kill:3s", "--sla", str(rules),
                      "--report-json", str(path), timeout=240)
    report = read_report(path)
    assert done.returncode == report["exit_code"] == 0, (_failed(report), done.stderr[-3000:])
    assert report["evidence"]["ok"] and report["audit"]["ok"] and report["verdict"] == "pass"
    assert report["workers"]["lost"] == [] and len(report["workers"]["shipped"]) == 2
    assert sorted(f["process"] for f in report["pool"]["at_rest"]) == [0, 1]
    for at_rest in report["pool"]["at_rest"]:
        assert at_rest["connections"] == at_rest["available"] == at_rest["size"] == 10  # 20 // 2: pool_exhaustion
    assert report["run"]["agents"] == 300
    assert {f["kind"] for f in report["faults"] if f["hit"]} == {"pg-kill", "redis-kill"}
    assert report["conflicts"]["connection_errors"] > 0, "agents met the killed sessions"
    assert report["not_audited_by_identity"] == []


def test_1000_agents_on_one_process_end_with_a_report_and_an_audit_that_holds(servers, schema, tmp_path, locust):
    """Before the fix: PoolTimeout in test_stop, no report, Locust's exit code 1; and with more than
    100 agents, redis-py's default pool refused the 101st agent as a lost connection."""
    path = tmp_path / "report.json"
    done = locust.run(*servers.args(schema), "--users", "1000", "--spawn-rate", "500",
                      "--run-time", "10s", "--think-time", "1000", "--pool-size", "50",
                      "--report-json", str(path), timeout=300)
    report = read_report(path)
    assert done.returncode == report["exit_code"], done.stderr[-3000:]
    _evidence_and_audit_hold(report)
    assert report["run"]["agents"] == 1000
    assert sum(t["calls"] for t in report["tools"].values()) > 5000
    assert report["conflicts"]["connection_errors"] == 0
    [at_rest] = report["pool"]["at_rest"]
    assert at_rest["connections"] == at_rest["available"] == 50


def test_an_agent_stopped_while_queued_for_a_connection_takes_none_along(servers):
    """psycopg_pool drops a waiting client only on an Exception: a greenlet killed in getconn
    (as Locust stops an agent) used to swallow the next connection given back."""
    pool = open_pool(servers.pg_dsn, SessionSettings("public"), size=1, timeout_s=10)
    try:
        held = pool.getconn()
        queued = gevent.spawn(pool.getconn)
        gevent.sleep(0.2)
        assert pool.waiting == 1
        queued.kill()  # GreenletExit, as Locust's stop
        pool.putconn(held)
        stats = pool.wait_until_at_rest(2.0)
        assert stats["connections"] == stats["available"] == 1
        again = pool.getconn()
        assert again.execute("SELECT 1").fetchone() == (1,)
        pool.putconn(again)
    finally:
        pool.close()


def test_a_tool_that_raises_is_no_evidence_and_its_refusals_are_no_failure_of_the_platform(servers, schema, tmp_path,
                                                                                           locust):
    """Before: a tool whose every write failed on an error was a failed call, which only a
    success-rate rule could catch; with an SLA file without one, such a run passed."""
    tools, rules, path = tmp_path / "writes_nowhere.py", tmp_path / "sla.toml", tmp_path / "report.json"
    tools.write_text(textwrap.dedent("""
        from db.errors import Refused

        def write_to_a_missing_table(tx):
            tx.execute("INSERT INTO no_such_table VALUES (1)")

        def say_no(tx):
            raise Refused("this account cannot pay")
    """))
    rules.write_text('[[rule]]\nmetric = "deadlocks"\nop = "<="\nthreshold = 1000000\n', encoding="utf-8")
    done = locust.run(*servers.args(schema), "--users", "4", "--spawn-rate", "4", "--run-time", "3s",
                      "--tools-module", str(tools), "--sla", str(rules), "--report-json", str(path), timeout=60)
    report = read_report(path)
    assert done.returncode == report["exit_code"] == 1 and report["verdict"] == "fail", done.stderr[-2000:]
    assert [problem["kind"] for problem in report["evidence"]["problems"]] == ["tool_errors"]
    assert "UndefinedTable" in report["evidence"]["problems"][0]["detail"]
    broken, refusing = report["tools"]["write_to_a_missing_table"], report["tools"]["say_no"]
    assert broken["failed"] == broken["calls"] > 0 and broken["refused"] == 0
    assert broken["failures"] == {"errors": broken["calls"]} and report["errors"] == broken["calls"]
    assert refusing["failed"] == refusing["refused"] == refusing["calls"] > 0
    assert refusing["failures"] == {"refusals": refusing["calls"]} and refusing["retries"] == 0
    assert "refusals" not in report["conflicts"]
    assert report["sla"][0]["ok"], "the run failed on its evidence, not on its SLA"


def test_a_probe_on_kept_data_goes_on_after_a_failed_audit_and_empties_nothing(admin, schema):
    """--capacity-data kept: the data a probe's failed audit left is the search's one data set, the
    next probe's run goes on with it; a run that did not finish is refused all the same."""
    run_schema.prepare(admin, schema, reset=False)
    run_schema.begin_run(admin, schema, "first", accounts=2, initial_balance=10, counters=1)
    admin.execute(sql.SQL("UPDATE {} SET balance = 3 WHERE id = 1").format(sql.Identifier(schema, "accounts")))
    run_schema.finish_run(admin, schema, audit_ok=False)
    with pytest.raises(run_schema.SchemaRefused, match="whose audit failed"):
        run_schema.prepare(admin, schema, reset=False)
    run_schema.prepare(admin, schema, reset=False, kept=True)
    run_schema.continue_run(admin, schema, "second")
    assert admin.execute(sql.SQL("SELECT run_id, status FROM {}").format(
        sql.Identifier(schema, "run_state"))).fetchall() == [("second", "running")]
    assert admin.execute(sql.SQL("SELECT id, balance FROM {} ORDER BY id").format(
        sql.Identifier(schema, "accounts"))).fetchall() == [(1, 3), (2, 10)]
    with pytest.raises(run_schema.SchemaRefused, match="which did not finish"):
        run_schema.prepare(admin, schema, reset=False, kept=True)


def test_a_failed_audit_keeps_its_data_until_reset(servers, schema, tmp_path, locust):
    """A user audit that raises is a failed check (not an exception out of test_stop); a failed
    audit leaves its data for inspection: the next run is refused until --reset."""
    tools = tmp_path / "broken_audit.py"
    tools.write_text(textwrap.dedent("""
        def read_accounts(tx):
            tx.execute("SELECT count(*) FROM accounts")

        def audit(ctx):
            raise ZeroDivisionError("the user's audit has a bug")
    """))
    common = (*servers.args(schema), "--users", "4", "--spawn-rate", "4", "--run-time", "3s",
              "--tools-module", str(tools))
    path = tmp_path / "report.json"
    first = locust.run(*common, "--report-json", str(path), timeout=60)
    report = read_report(path)
    assert first.returncode == report["exit_code"] == 1, first.stderr[-2000:]
    [failed] = [c for c in report["audit"]["checks"] if not c["ok"]]
    assert failed["name"] == "broken_audit.audit" and "ZeroDivisionError" in failed["detail"]

    again = locust.run(*common, timeout=60)
    assert again.returncode == 2 and "whose audit failed" in again.stderr and "--reset" in again.stderr
    reset = locust.run(*common, "--reset", "--run-time", "1s", timeout=60)
    assert reset.returncode == 1, reset.stderr[-2000:]  # the same broken audit, on fresh data


def test_idle_sessions_of_another_database_are_not_counted(servers, admin, schema, tmp_path, locust):
    """Before the fix, a session of another database with the same application_name failed
    no_session_idle_in_transaction on a healthy run."""
    other = f"tc_other_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    try:
        with psycopg.connect(make_conninfo(servers.pg_dsn, dbname=other),
                             application_name=load_application_name(schema, 0)) as elsewhere:
            elsewhere.execute("SELECT 1")  # and stays idle in its transaction
            path = tmp_path / "report.json"
            done = locust.run(*servers.args(schema), "--users", "6", "--spawn-rate", "6", "--run-time", "3s",
                              "--scenario", "pool_exhaustion", "--report-json", str(path), timeout=60)
            report = read_report(path)
            assert done.returncode == report["exit_code"], done.stderr[-2000:]
            [check] = [c for c in report["audit"]["checks"] if c["name"] == "no_session_idle_in_transaction"]
            assert check["ok"] and check["observed"] == 0
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(other)))


def test_the_default_pool_is_bounded_and_the_budget_counts_every_process():
    settings = settings_from("--scenario", "deadlock")
    assert settings.pool_size_for(5) == 5
    assert settings.pool_size_for(1000) == 20
    assert settings.connections_needed(300, 2) == (40 + HARNESS_SESSIONS, 20)
    assert settings_from("--scenario", "pool_exhaustion").pool_size_for(1000) == 10
    assert settings_from("--pool-size", "50").connections_needed(1000, 1) == (50 + HARNESS_SESSIONS, 50)


def test_no_call_agent_errors_lost_workers_lost_shipments_and_sessions_left_are_no_evidence():
    metrics = Metrics()
    assert [p["kind"] for p in evidence_problems(metrics)] == ["no_calls"]
    metrics.record_agent_error(RuntimeError("adapter is None"))
    workers = {"lost": [{"worker": "w1", "state": "missing", "last_shipment_at": None}],
               "shipments_lost": {"w1": 0, "w2": 3}}
    problems = evidence_problems(metrics, workers, load_sessions_left=2)
    assert [p["kind"] for p in problems] == ["agent_errors", "no_calls", "worker_lost", "shipment_lost",
                                             "load_sessions_left"]
    assert problems[3]["detail"].startswith("3 shipment(s) of worker w2 never reached the master")
    assert problems[4]["detail"].startswith("2 session(s) of the load were still open")


class _Master:
    clients: dict = {}


def _shipment(test: int, number: int, metrics: Metrics) -> dict:
    return {"test": test, "number": number, "metrics": metrics.to_dict(), "hub_lag": HubLag().to_dict()}


def test_a_late_shipment_of_an_earlier_test_is_left_out():
    """The web UI's next ramp must not count a worker's final shipment of the ramp before."""
    shipments = WorkerShipments()
    shipments.begin(_Master(), 2)
    late = Metrics()
    late.record_agent_error(RuntimeError("of test 1"))
    shipments.add("w1", _shipment(1, 7, late), final=True)
    assert shipments.total.agent_errors == 0
    shipments.add("w1", _shipment(2, 1, late), final=True)
    assert shipments.total.agent_errors == 1
    assert shipments.shipments_lost() == {"w1": 0}


def _succeeded_calls(count: int) -> Metrics:
    metrics = Metrics()
    for _ in range(count):
        metrics.record(CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.SUCCEEDED, attempts=1))
    return metrics


def test_a_shipment_that_never_arrived_is_counted_per_worker():
    """Before: a dropped shipment silently took its succeeded calls out of what the audits
    compare with the servers."""
    numbers = {"w1": ShipmentNumbers(), "w2": ShipmentNumbers()}
    shipments = WorkerShipments()
    shipments.begin(_Master(), 1)
    shipped = []
    for worker, calls in (("w1", 2), ("w2", 3), ("w1", 5), ("w1", 7), ("w2", 1), ("w1", 4), ("w2", 2)):
        shipped.append((worker, _shipment(1, numbers[worker].next(1), _succeeded_calls(calls))))
    dropped = [shipped.pop(2), shipped.pop(2), shipped.pop(-1)]  # w1's 2nd and 3rd, w2's last
    for position, (worker, shipment) in enumerate(shipped):
        shipments.add(worker, shipment, final=position == len(shipped) - 1)
    assert shipments.shipments_lost() == {"w1": 2, "w2": 0}  # w2's last loss is after its last arrival
    assert len(shipments.total.acknowledged({"deduct_credits"}).succeeded) == 2 + 3 + 1 + 4
    assert sum(len(Metrics.from_dict(s["metrics"]).acknowledged({"deduct_credits"}).succeeded)
               for _, s in dropped) == 5 + 7 + 2
    assert numbers["w1"].next(2) == 1, "numbered from 1 in each test"
