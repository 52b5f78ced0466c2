"""Master and workers: the report's figures are the sums of what the workers recorded, and
agree with what the server counted."""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
from psycopg import sql

from tests.support import LOCUST, ROOT, embedded_pgdata, own_master_port, read_report, run_locust

HOT_CREDITS = ("--scenario", "optimistic_locking,deadlock", "--accounts", "8", "--deadlock-timeout", "20")


def _ledger_rows(admin, schema) -> int:
    return admin.execute(sql.SQL("SELECT count(*) FROM {}.ledger").format(sql.Identifier(schema))).fetchone()[0]


def _succeeded(report) -> int:
    return sum(t["succeeded"] for t in report["tools"].values())


def test_one_process_and_two_workers_both_agree_with_the_server(servers, admin, schema, tmp_path):
    common = ("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
              "--users", "20", "--spawn-rate", "20", "--run-time", "6s", *HOT_CREDITS)
    reports = {}
    for mode, extra in (("local", ()), ("distributed", ("--processes", "2"))):
        path = tmp_path / f"{mode}.json"
        done = run_locust(*common, *extra, "--report-json", str(path), timeout=180)
        reports[mode] = report = read_report(path)
        assert done.returncode == report["exit_code"], done.stderr[-2000:]
        assert report["audit"]["ok"], [c for c in report["audit"]["checks"] if not c["ok"]]
        assert report["conflicts"]["deadlocks"] > 0
        assert report["conflicts"]["deadlocks"] == report["server"]["deadlocks"], mode
        assert _succeeded(report) == _ledger_rows(admin, schema), mode

    distributed = reports["distributed"]
    shipped = distributed["workers"]["shipped"]
    assert len(shipped) == 2 and distributed["workers"]["lost"] == []
    assert all(w["calls"] > 0 for w in shipped.values()), "both workers ran agents"
    for key in ("calls", "succeeded", "failed", "retries"):
        assert sum(w[key] for w in shipped.values()) == sum(t[key] for t in distributed["tools"].values()), key
    for key in ("deadlocks", "version_conflicts"):
        assert sum(w[key] for w in shipped.values()) == distributed["conflicts"][key], key
    # Two pools, one per worker, each checked when its load stopped.
    assert sorted(f["process"] for f in distributed["pool"]["at_rest"]) == [0, 1]
    assert "workers" not in reports["local"]


def test_embedded_servers_serve_the_workers_and_stop_once(tmp_path):
    before = embedded_pgdata()
    path = tmp_path / "report.json"
    done = run_locust("--users", "10", "--spawn-rate", "10", "--run-time", "4s", "--processes", "2",
                      "--report-json", str(path), timeout=180)
    report = read_report(path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(report["workers"]["shipped"]) == 2 and report["audit"]["ok"]
    assert report["servers"][0]["origin"].startswith("embedded")
    time.sleep(1)
    assert embedded_pgdata() == before, "the embedded PostgreSQL was stopped at the end"


def test_a_worker_that_vanishes_is_reported_and_the_run_ends(servers, schema, tmp_path):
    path = tmp_path / "report.json"
    process = subprocess.Popen(
        [LOCUST, "--headless", "--only-summary", "--users", "10", "--spawn-rate", "10", "--run-time", "12s",
         "--processes", "2", "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
         "--scenario", "optimistic_locking", "--report-json", str(path), *own_master_port()],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    time.sleep(6)
    workers = psutil.Process(process.pid).children()
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    report = read_report(path)
    assert process.returncode == report["exit_code"], stderr[-2000:]
    [lost] = report["workers"]["lost"]
    assert lost["last_shipment_at"] is not None and lost["state"] in ("missing", "gone")
    assert lost["worker"] in report["workers"]["shipped"], "what it shipped before it vanished is kept"
