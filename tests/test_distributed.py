"""Master and workers: each worker's figures, and the report's totals of them, agree with what the
server counted."""

from __future__ import annotations

import itertools
import signal
import time

import psutil
from locust.runners import WORKER_REPORT_INTERVAL
from psycopg import sql

from tests.support import embedded_pgdata, read_report, rows_in, wait_until

HOT_CREDITS = ("--scenario", "optimistic_locking,deadlock", "--accounts", "8", "--deadlock-timeout", "20")


def _ledger_rows_by_process(admin, schema) -> list[int]:
    """The ledger's rows per load process, told apart by their agents' ids (p<process>-a<n>)."""
    if not rows_in(admin, schema, "ledger"):
        return []
    return [n for (n,) in admin.execute(
        sql.SQL("SELECT count(*) FROM {} GROUP BY split_part(agent_id, '-', 1) ORDER BY 1")
        .format(sql.Identifier(schema, "ledger"))
    )]


def _as_the_server_counted(figures: list[dict[str, int]], rows: list[int]) -> bool:
    """Whether each process's succeeded calls are its rows in the ledger, give or take its
    indeterminate and cut-off calls (whose commits may or may not have been applied), for some pairing of
    processes and rows (the report names workers, the ledger process numbers)."""
    return len(figures) == len(rows) and any(
        all(f["succeeded"] <= n <= f["succeeded"] + f["indeterminate"] + f["cut_off"] for f, n in zip(figures, pairing))
        for pairing in itertools.permutations(rows)
    )


def _hub_figures_are_sane(report, processes: set[str]) -> None:
    """Every process probed its event loop all along, and the sampler kept about its schedule
    (generous bounds: other test runs share this machine's cores)."""
    hub = report["hub"]
    assert set(hub["processes"]) == processes
    for lag in hub["processes"].values():
        assert lag["wakeups"] > 10, lag  # 10 a second
        assert 0 <= lag["p50_s"] <= lag["p99_s"] <= lag["max_s"] * 1.01, lag  # percentiles are buckets, max exact
    sampler = hub["sampler"]
    assert sampler["asked_interval_s"] == 1.0 and sampler["samples"] >= 3, sampler
    assert 0.5 <= sampler["actual_interval_p50_s"] <= 3, sampler
    assert hub["fell_behind"] == (hub["worst_lag_s"] > hub["threshold_s"])
    assert bool(report["evidence"]["notes"]) == hub["fell_behind"]


def test_one_process_and_two_workers_both_agree_with_the_server(servers, admin, schema, tmp_path, locust):
    common = ("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
              "--users", "20", "--spawn-rate", "20", "--run-time", "6s", *HOT_CREDITS)
    reports, rows = {}, {}
    for mode, extra in (("local", ()), ("distributed", ("--processes", "2"))):
        path = tmp_path / f"{mode}.json"
        done = locust.run(*common, *extra, "--report-json", str(path), timeout=180)
        reports[mode] = report = read_report(path)
        rows[mode] = _ledger_rows_by_process(admin, schema)
        assert done.returncode == report["exit_code"], done.stderr[-2000:]
        assert report["audit"]["ok"], [c for c in report["audit"]["checks"] if not c["ok"]]
        assert report["conflicts"]["deadlocks"] > 0
        assert report["conflicts"]["deadlocks"] == report["server_counters"]["deadlocks"], mode
        totals = {"succeeded": sum(t["succeeded"] for t in report["tools"].values()),
                  **{unknown: sum(t[unknown] for t in report["tools"].values())
                     for unknown in ("indeterminate", "cut_off")}}
        assert _as_the_server_counted([totals], [sum(rows[mode])]), (mode, totals, rows[mode])

    assert len(rows["local"]) == 1 and "workers" not in reports["local"]
    _hub_figures_are_sane(reports["local"], {"local runner"})
    assert "heartbeats" not in reports["local"]["hub"]
    distributed = reports["distributed"]
    shipped = distributed["workers"]["shipped"]
    assert len(shipped) == 2 and distributed["workers"]["lost"] == []
    assert distributed["workers"]["shipments_lost"] == {worker: 0 for worker in shipped}
    # Each worker's own figures, against the server: the ledger rows of its agents (both workers'
    # agents committed some), and together the deadlocks PostgreSQL detected.
    assert _as_the_server_counted(list(shipped.values()), rows["distributed"]), (shipped, rows["distributed"])
    assert sum(w["deadlocks"] for w in shipped.values()) == distributed["server_counters"]["deadlocks"]
    # Two pools, one per worker, each checked when its load stopped.
    assert sorted(f["process"] for f in distributed["pool"]["at_rest"]) == [0, 1]
    # The master's event loop and each worker's (shipped with their metrics); the workers'
    # heartbeats as the master received them.
    _hub_figures_are_sane(distributed, {"master", *(f"worker {worker}" for worker in shipped)})
    heartbeats = distributed["hub"]["heartbeats"]
    assert set(heartbeats["workers"]) == set(shipped) and heartbeats["interval_s"] == 1
    assert all(seen["heartbeats"] >= 3 for seen in heartbeats["workers"].values()), heartbeats


def test_embedded_servers_serve_the_workers_and_stop_once(tmp_path, locust):
    before = embedded_pgdata()
    path = tmp_path / "report.json"
    done = locust.run("--users", "10", "--spawn-rate", "10", "--run-time", "4s", "--processes", "2",
                      "--report-json", str(path), timeout=180)
    report = read_report(path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(report["workers"]["shipped"]) == 2 and report["audit"]["ok"]
    assert report["servers"][0]["origin"].startswith("embedded")
    # (within the second the test gives it)
    wait_until(lambda: embedded_pgdata() == before, "the embedded PostgreSQL to be stopped at the end", timeout=1)


def test_a_worker_that_vanishes_is_reported_and_the_run_ends(servers, admin, schema, tmp_path, locust):
    path = tmp_path / "report.json"
    run = locust.start("--users", "10", "--spawn-rate", "10", "--run-time", "12s", "--processes", "2",
                       "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                       "--scenario", "optimistic_locking", "--report-json", str(path))
    # Both workers' agents are making calls (the ledger has rows of both); then each worker has
    # shipped its figures to the master, which it does every WORKER_REPORT_INTERVAL (3 s), a
    # moment no one outside the master sees: wait 1.25 intervals, as Locust's docs advise.
    wait_until(lambda: len(_ledger_rows_by_process(admin, schema)) == 2, "both workers' agents to make calls",
               still=run.running)
    time.sleep(1.25 * WORKER_REPORT_INTERVAL)
    workers = psutil.Process(run.pid).children()
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)
    returncode, stderr = run.wait(timeout=120), run.stderr()
    report = read_report(path)
    assert returncode == report["exit_code"], stderr[-2000:]
    [lost] = report["workers"]["lost"]
    assert lost["last_shipment_at"] is not None and lost["state"] in ("missing", "gone")
    assert lost["worker"] in report["workers"]["shipped"], "what it shipped before it vanished is kept"
    # As docs/distributed.md and docs/chaos.md promise: the outcomes of its last calls are unknown, so the run
    # never passes.
    assert report["verdict"] == "fail" and returncode == 1
    assert "worker_lost" in {problem["kind"] for problem in report["evidence"]["problems"]}
