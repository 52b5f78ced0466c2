"""Each scenario through the real `locust` command: it produces its conflicts at the servers,
its audit passes on the real outcome, and fails on data corrupted on purpose."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import redis
from psycopg import sql

from db.audits import Acknowledged
from db.redis_keys import RedisKeys
from tasks.scenarios import SCENARIOS, ScenarioParams
from tests.support import ROOT, context_for, read_report, run_locust

NOTHING_ACKNOWLEDGED = Acknowledged()


@dataclass(frozen=True)
class Case:
    scenario: str
    options: tuple[str, ...]
    produced: Callable[[dict[str, Any]], int]  # the conflicts the run must show (> 0)
    corrupt: Callable[[Any, redis.Redis, RedisKeys], None]
    audit: str  # the scenario's audit, by name
    caught_by: str  # its check that must then fail
    anomaly: str | None = None


CASES = [
    Case("optimistic_locking", ("--accounts", "4"),
         lambda r: r["conflicts"]["version_conflicts"],
         lambda db, rd, k: db.execute("UPDATE accounts SET version = version + 1 WHERE id = 1"),
         "credits", "versions_count_updates"),
    Case("deadlock", ("--accounts", "6", "--deadlock-timeout", "20"),
         lambda r: r["conflicts"]["deadlocks"] if r["conflicts"]["deadlocks"] == r["server"]["deadlocks"] else 0,
         lambda db, rd, k: db.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 2"),
         "credits", "balances_match_ledger"),
    Case("pool_exhaustion", ("--pool-size", "2", "--hold-time", "100", "--pool-timeout", "0.3"),
         lambda r: r["conflicts"]["pool_timeouts"] * r["pool"]["peak_waiting"],
         None, "pool", "pool_connections_returned"),
    Case("queue", ("--queue-capacity", "5"),
         lambda r: r["conflicts"]["queue_rejections"] * r["latency_ms"]["queue_wait"]["count"],
         # Another session pushes six jobs around the scripts: more than the queue (capacity 5)
         # may hold, whatever the run left in it.
         lambda db, rd, k: rd.rpush(k("queue", "low"), *(f"{uuid.uuid4()}|0" for _ in range(6))),
         "queue", "capacity_never_exceeded", "capacity_overshoots"),
    Case("cross_service", ("--accounts", "20",),
         lambda r: r["latency_ms"]["cross_service_window"]["count"] if r["anomalies"]["cross_service_mismatches"] == 0 else 0,
         lambda db, rd, k: rd.hincrby(k("usage"), "p0-a1", 5),
         "cross_service", "usage_agrees_per_agent", "cross_service_mismatches"),
    Case("agent_state", ("--teams", "1"),
         lambda r: r["conflicts"]["redis_watch_conflicts"],
         lambda db, rd, k: rd.hincrby(k("plan", 1), "version", 1),
         "agent_state", "plan_version_counts_changes"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.scenario for c in CASES])
def test_scenario_conflicts_audit_and_corruption(case, servers, admin, schema, tmp_path):
    report_path = tmp_path / "report.json"
    done = run_locust(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "20", "--spawn-rate", "20", "--run-time", "5s", "--scenario", case.scenario,
        *case.options, "--report-json", str(report_path),
    )
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]
    assert case.produced(report) > 0, json.dumps({k: report[k] for k in ("conflicts", "anomalies", "pool")})[:2000]
    assert report["audit"]["ok"], [c for c in report["audit"]["checks"] if not c["ok"]]
    assert any(c["name"] == case.caught_by for c in report["audit"]["checks"])

    keys = RedisKeys(schema)
    params = ScenarioParams(accounts=20, keys=keys, teams=1, queue_capacity=5)
    audit = SCENARIOS[case.scenario].audits(params)[case.audit]
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    with redis.Redis.from_url(servers.redis_url) as client:
        findings = list(report["pool"]["at_rest"])
        if case.corrupt is None:  # the pool's state is what the load side saw: say it kept a connection
            findings[0] = {**findings[0], "available": findings[0]["connections"] - 1}
        else:
            case.corrupt(admin, client, keys)
        checks = audit(context_for(admin, schema, lambda tools: NOTHING_ACKNOWLEDGED, client, findings))
    failed = {c.name: c for c in checks if not c.ok}
    assert case.caught_by in failed, checks
    if case.anomaly:
        assert failed[case.caught_by].anomaly == case.anomaly and failed[case.caught_by].anomaly_count > 0


def test_isolation_matrix_agrees_with_postgresqls_documented_behaviour(servers, schema, tmp_path):
    report_path = tmp_path / "matrix.json"
    done = run_locust(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "20", "--spawn-rate", "20", "--run-time", "5s", "--isolation-matrix",
        "--counters", "4", "--report-json", str(report_path), timeout=240,
    )
    rows = {row["level"]: row["report"] for row in read_report(report_path)["matrix"]}
    assert list(rows) == ["read_committed", "repeatable_read", "serializable"]
    for line in ("isolation level", "read_committed", "repeatable_read", "serializable"):
        assert line in done.stdout
    rc, rr, ser = rows["read_committed"], rows["repeatable_read"], rows["serializable"]
    # Read committed allows both anomalies, and refuses nothing.
    assert rc["anomalies"]["lost_updates"] > 0 and rc["anomalies"]["write_skew"] > 0
    assert rc["conflicts"]["serialization_failures"] == 0 and rc["verdict"] == "fail"
    # Repeatable read refuses the lost update (40001) but allows write skew.
    assert rr["anomalies"]["lost_updates"] == 0 and rr["conflicts"]["serialization_failures"] > 0
    assert rr["anomalies"]["write_skew"] > 0 and rr["verdict"] == "fail"
    # Serializable allows neither.
    assert ser["anomalies"]["lost_updates"] == 0 and ser["anomalies"]["write_skew"] == 0
    assert ser["conflicts"]["serialization_failures"] > 0 and ser["audit"]["ok"]
    assert done.returncode == (0 if ser["verdict"] == "pass" else 1)


def test_isolation_audit_counts_corrupted_counters_and_pairs(admin, schema):
    from tests.support import prepared_schema
    from tasks.isolation import audit_isolation

    prepared_schema(admin, schema)
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    assert all(c.ok for c in audit_isolation(context_for(admin, schema, lambda tools: NOTHING_ACKNOWLEDGED)))
    admin.execute("INSERT INTO counter_ops VALUES (gen_random_uuid(), 1, 1), (gen_random_uuid(), 1, 1)")
    admin.execute("UPDATE counters SET value = 1 WHERE id = 1")  # two increments, one survived
    admin.execute("INSERT INTO duty_leave VALUES (7, 0, gen_random_uuid()), (7, 1, gen_random_uuid())")
    checks = {c.name: c for c in audit_isolation(context_for(admin, schema, lambda tools: NOTHING_ACKNOWLEDGED))}
    assert checks["no_lost_updates"].anomaly_count == 1 and not checks["no_lost_updates"].ok
    assert checks["no_write_skew"].anomaly_count == 1 and not checks["no_write_skew"].ok


def test_isolation_audit_sees_a_lost_and_an_invented_increment_on_two_counters(admin, schema):
    """Before: counter 1 one short and counter 2 one over cancelled out in a signed sum: pass."""
    from tests.support import prepared_schema
    from tasks.isolation import audit_isolation

    prepared_schema(admin, schema)
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    admin.execute("INSERT INTO counter_ops VALUES (gen_random_uuid(), 1, 1), (gen_random_uuid(), 2, 1)")
    admin.execute("UPDATE counters SET value = CASE id WHEN 1 THEN 0 WHEN 2 THEN 2 END WHERE id IN (1, 2)")
    checks = {c.name: c for c in audit_isolation(context_for(admin, schema, lambda tools: NOTHING_ACKNOWLEDGED))}
    assert not checks["no_lost_updates"].ok
    assert checks["no_lost_updates"].observed == {"lost": 1, "invented": 1}
    assert checks["no_lost_updates"].anomaly_count == 2


def test_user_tools_module_runs_through_locust(servers, schema, tmp_path):
    report_path = tmp_path / "report.json"
    done = run_locust(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "10", "--spawn-rate", "10", "--run-time", "3s",
        "--tools-module", str(ROOT / "examples" / "seat_tools.py"), "--report-json", str(report_path),
    )
    report = read_report(report_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert report["run"]["scenarios"] == ["seat_tools"]
    assert set(report["tools"]) == {"book_seat", "count_free_seats"}
    assert report["tools"]["book_seat"]["calls"] > 2 * report["tools"]["count_free_seats"]["calls"] > 0  # weight 3:1
    assert {c["name"] for c in report["audit"]["checks"]} == {"seat_tools.one_booking_per_seat",
                                                              "seat_tools.bookings_acknowledged"}
