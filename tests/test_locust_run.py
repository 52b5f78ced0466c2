"""Whole runs through the real `locust` command, checked against what the server counted."""

from __future__ import annotations

import json
from contextlib import suppress

import psutil
import psycopg
from psycopg import sql

from db.server_stats import database_counters
from tests.support import embedded_pgdata, embedded_postgres_dsn, read_report, rows_in, wait_until


def test_headless_run_report_agrees_with_the_server_and_with_locust(servers, admin, schema, tmp_path, locust):
    report_path = tmp_path / "report.json"
    before = database_counters(admin)
    done = locust.run(
        *servers.args(schema), "--users", "20", "--spawn-rate", "20", "--run-time", "8s",
        "--scenario", "optimistic_locking,deadlock", "--accounts", "8", "--deadlock-timeout", "20",
        "--report-json", str(report_path),
        "--json-file", str(tmp_path / "locust"),  # Locust adds .json
    )
    after = database_counters(admin)
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-3000:]
    # The console tells the verdict of the JSON report, and the exit code the process ended with.
    assert f"toolclash verdict: {report['verdict'].upper()} (exit code {done.returncode})" in done.stdout

    # The harness counted every deadlock the server detected, and no other; each one timed from
    # its victim's statement, which waited at least deadlock_timeout before the server looked.
    assert report["conflicts"]["deadlocks"] > 0, "8 hot accounts and 20 agents must deadlock"
    assert report["conflicts"]["deadlocks"] == report["server_counters"]["deadlocks"]
    assert report["server_counters"]["deadlock_timeout"]["applied"] is True
    assert report["latency_ms"]["deadlock_detection"]["count"] == report["server_counters"]["deadlocks"]
    assert report["latency_ms"]["deadlock_detection"]["p50"] >= 20

    # Every acknowledged operation is in the ledger: the audit says so, and so does a count.
    ledger_rows = admin.execute(sql.SQL("SELECT count(*) FROM {}.ledger").format(sql.Identifier(schema))).fetchone()[0]
    succeeded = sum(t["succeeded"] for t in report["tools"].values())
    unknown = sum(t["indeterminate"] + t["cut_off"] for t in report["tools"].values())
    assert succeeded <= ledger_rows <= succeeded + unknown
    assert report["audit"]["ok"] is True
    state = admin.execute(sql.SQL("SELECT status FROM {}.run_state").format(sql.Identifier(schema))).fetchone()[0]
    assert state == "finished"

    # The server's transaction counters over the run: every succeeded call committed, every
    # deadlock and version conflict rolled its attempt back; and the report's figures are within
    # what the test read from pg_stat_database around the whole command (other sessions of the
    # database may add to both).
    around = {name: after[name] - before[name] for name in ("xact_commit", "xact_rollback")}
    assert succeeded <= report["server_counters"]["xact_commit"] <= around["xact_commit"]
    rolled_back = report["conflicts"]["deadlocks"] + report["conflicts"]["version_conflicts"]
    assert rolled_back <= report["server_counters"]["xact_rollback"] <= around["xact_rollback"]

    # Locust saw each call once, under the tool's name, with the backend as request type.
    locust_stats = json.loads((tmp_path / "locust.json").read_text())
    locust_counts = {entry["name"]: entry["num_requests"] for entry in locust_stats if entry["method"] == "pg"}
    assert locust_counts == {name: tool["calls"] for name, tool in report["tools"].items()}


def test_a_failed_sla_makes_the_exit_code_1(servers, schema, tmp_path, locust):
    report_path = tmp_path / "report.json"
    # One account, transfers impossible... so: deductions only, on 2 accounts, one try each:
    # most calls fail on version conflicts, and the success-rate SLA cannot hold.
    done = locust.run(
        *servers.args(schema), "--users", "20", "--spawn-rate", "20", "--run-time", "4s",
        "--scenario", "optimistic_locking", "--accounts", "2", "--max-tries", "1", "--tool-work", "20",
        "--report-json", str(report_path),
    )
    report = read_report(report_path)
    assert report["verdict"] == "fail" and done.returncode == 1, done.stderr[-2000:]
    assert report["audit"]["ok"] is True, "the data is right even when the SLA fails"
    failed = {rule["name"] for rule in report["sla"] if not rule["ok"]}
    assert {"success rate after retries > 95%",
            "success rate after retries > 90% for each tool [deduct_credits]"} <= failed


def _runs_a_redis_server(pid: int) -> bool:
    """Whether one of the process's descendants is a redis-server (some end while it looks)."""
    for child in psutil.Process(pid).children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            if child.name() == "redis-server":
                return True
    return False


def test_the_embedded_default_runs_and_stops_on_ctrl_c(tmp_path, locust):
    """No DSN, no URL: real servers from the wheels; Ctrl-C (to the whole process group, as a
    terminal sends it: the embedded servers must not get it) still audits, reports and stops them."""
    report_path = tmp_path / "report.json"
    already_running = embedded_pgdata()
    run = locust.start("--users", "5", "--spawn-rate", "5", "--run-time", "60s", "--report-json", str(report_path))
    wait_until(lambda: _runs_a_redis_server(run.pid), "the embedded Redis", still=run.running)
    pgdata = sorted(embedded_pgdata() - already_running)
    assert pgdata, "the embedded PostgreSQL was running during the run"
    # The agents are in their calls: the run's ledger, on the embedded server, has their rows.
    with psycopg.connect(embedded_postgres_dsn(pgdata[0]), autocommit=True) as embedded:
        wait_until(lambda: rows_in(embedded, "toolclash", "ledger") >= 200, "the agents' calls", still=run.running)
    code = run.ctrl_c(timeout=60)
    stdout, stderr = run.stdout(), run.stderr()
    assert code == 0, (code, stdout[-3000:], stderr[-1500:])
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    report = read_report(report_path)
    assert report["verdict"] == "pass"
    assert [s["origin"] for s in report["servers"]] == ["embedded, no --pg-dsn given", "embedded, no --redis-url given"]
    assert sum(t["succeeded"] for t in report["tools"].values()) > 0
    assert "PostgreSQL 18" in stdout or "PostgreSQL 18" in stderr
    # The servers were stopped and their data directory removed (within the second the test gave them).
    def still() -> list:
        return [p for p in psutil.process_iter(["cmdline"]) if pgdata[0] in " ".join(p.info["cmdline"] or [])]

    wait_until(lambda: not still(), "the embedded PostgreSQL to be gone", timeout=1)
