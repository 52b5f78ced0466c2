"""The server's side during the run (locks, counters, Redis), the time series, the HTML report,
and load shapes with per-stage figures."""

from __future__ import annotations

import csv

from harness.output.html.section import SECTION_ID
from harness.report_shape import Report
from harness.watch.sampler import _longest_chain
from tests.report_conformance import nonconforming
from tests.support import read_report


def test_blocking_chains_are_measured_in_sessions():
    assert _longest_chain({}) == 0
    assert _longest_chain({10: [11]}) == 2
    assert _longest_chain({10: [11], 11: [12], 13: [12]}) == 3
    assert _longest_chain({10: [11], 11: [10]}) == 2, "a deadlock cycle is a chain of two, not a hang"


def test_lock_waits_time_series_and_html_report(servers, schema, tmp_path, locust):
    report_path, csv_path, html_path = tmp_path / "r.json", tmp_path / "series.csv", tmp_path / "locust.html"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "20", "--spawn-rate", "20", "--run-time", "5s", "--scenario", "deadlock,queue",
        "--accounts", "6", "--sample-interval", "0.25", "--report-json", str(report_path),
        "--timeseries-csv", str(csv_path), "--html", str(html_path),
    )
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]
    server = report["server_counters"]
    # 20 agents on 6 accounts with a 1 s-or-so deadlock_timeout: sessions wait on each other.
    assert server["peak_lock_waiters"] > 0 and server["longest_blocking_chain"] >= 2
    assert server["longest_lock_wait_ms"] > 0 and server["peak_redis_clients"] > 0

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == server["samples"] >= 10
    assert {"t_s", "agents", "pg_deadlocks", "pg_lock_waiters", "pg_longest_blocking_chain",
            "redis_ops_per_sec", "queue_depth"} <= set(rows[0])
    assert max(int(r["agents"]) for r in rows) == 20
    assert [float(r["t_s"]) for r in rows] == sorted(float(r["t_s"]) for r in rows)
    assert int(rows[-1]["pg_deadlocks"]) <= server["deadlocks"]

    page = html_path.read_text()
    section = page[page.index(f"id='{SECTION_ID}'"):]
    assert "Request Statistics" in page[: page.index(f"id='{SECTION_ID}'")], "Locust's own report is still whole"
    for rule in report["sla"]:
        assert rule["name"].replace("<", "&lt;").replace(">", "&gt;") in section
    for check in report["audit"]["checks"]:
        assert check["name"] in section
    # The verdict's word is styled apart; tests/test_html_report.py reads the page in a browser.
    assert "deadlocks" in section and f"data-verdict-word>{report['verdict'].upper()}</span>" in section


def test_a_step_ramp_reports_each_stage(servers, schema, tmp_path, locust):
    report_path = tmp_path / "r.json"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--shape", "steps", "--shape-agents", "2,8", "--shape-hold", "3", "--scenario", "optimistic_locking",
        "--report-json", str(report_path),
    )
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]
    assert nonconforming(report, Report) == []
    stages = report["stages"]
    assert [s["agents"] for s in stages] == [2, 8]
    assert all(s["calls"] > 0 and s["throughput_per_s"] > 0 and s["p95_ms"] for s in stages)
    assert sum(s["calls"] for s in stages) == sum(t["calls"] for t in report["tools"].values())
    # Each stage's turns, as its per-turn SLA rules read them, add up to the run's.
    assert sum(s["turns"] for s in stages) == report["turns"]["turns"]
    assert sum(s["turns_with_conflicts"] for s in stages) == report["turns"]["with_conflicts"]
    assert all(s["turn_p95_ms"] for s in stages)
    assert all(isinstance(s["sla_ok"], bool) and s["sla"] for s in stages)
    assert "stage" in done.stdout and report["run"]["agents"] == 8


def test_a_spike_across_two_workers_is_counted_by_stage(servers, schema, tmp_path, locust):
    report_path = tmp_path / "r.json"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, "--processes", "2",
        "--shape", "spike", "--shape-agents", "2,10,2", "--shape-hold", "3", "--scenario", "optimistic_locking",
        "--report-json", str(report_path), timeout=180,
    )
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-2000:]
    assert nonconforming(report, Report) == [] and "workers" in report
    assert [s["agents"] for s in report["stages"]] == [2, 10, 2]
    assert sum(s["calls"] for s in report["stages"]) == sum(t["calls"] for t in report["tools"].values())
    assert report["stages"][1]["calls"] > report["stages"][0]["calls"]
