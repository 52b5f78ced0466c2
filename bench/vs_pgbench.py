"""toolclash side by side with pgbench and a bare Locust user, on the same transaction.

    .venv/bin/python bench/vs_pgbench.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--clients 16] [--seconds 20] [--repeat 3] [--no-pgbench]

The transaction: two UPDATEs moving one credit between two random accounts of 1,000 (in lock
order), BEGIN/COMMIT, in a database of the bench's own. Run in one sitting, each client with
`--clients` connections, measured over `--seconds` after a 5 s warm-up (start-up, audit and
report left out):
pgbench `-M prepared` and `-M simple`, a bare 20-line Locust user with psycopg 3
(bench/bare_locust.py), and toolclash (bench/transfer_tool.py as `--tools-module`,
`--tool-work 0`, one pool connection per agent, every hook and the audit included). Prints
tx/s (PostgreSQL's commits in the window), the ratio to the bare Locust user, the client's CPU
time per transaction (user + system of its process) and the server's (its processes serving the
bench's database: on a machine where both share the cores, either can be the limit). Run it on a quiet machine: the
clients and the server share its cores. With `--repeat N` the clients take turns N times (bare
Locust and toolclash alternating, so a change in the machine's load hits both alike) and the
table shows each figure's median, the runs' figures after it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from toolclash_processes import ROOT, add_server_arguments

BIN = Path(sys.executable).parent
DATABASE = "toolclash_bench_vs_pgbench"
ACCOUNTS = 1000

PGBENCH_SCRIPT = f"""\\set a random(1, {ACCOUNTS})
\\set b random(1, {ACCOUNTS})
\\set low least(:a, :b)
\\set high greatest(:a, :b)
BEGIN;
UPDATE bench_accounts SET balance = balance - 1 WHERE id = :low;
UPDATE bench_accounts SET balance = balance + 1 WHERE id = :high;
COMMIT;
"""


def _sample(dsn: str) -> tuple[int, dict[int, float]]:
    """PostgreSQL's commits in the bench's database, and the CPU time (s) of each server process
    serving it now (the client's sessions, and a harness's own)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
        pids = [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    return commits, {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids if psutil.pid_exists(pid)}


def _steady_state(command: list, dsn: str, warmup_s: float, window_s: float,
                  **popen: Any) -> tuple[float, float, float]:
    """(tx/s, client CPU µs a transaction, server CPU µs a transaction) of `command` between
    `warmup_s` after its start and `window_s` later: the commits PostgreSQL counted in the bench's
    own database, the CPU time of the client's process (its threads included) and of the server
    processes serving the database through the window, without start-up, audit or report."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)
    client = psutil.Process(process.pid)
    time.sleep(warmup_s)
    cpu_before, (commits_before, server_before) = sum(client.cpu_times()[:2]), _sample(dsn)
    time.sleep(window_s)
    cpu_after, (commits_after, server_after) = sum(client.cpu_times()[:2]), _sample(dsn)
    _, errors = process.communicate()
    if process.returncode not in (0, 1):  # toolclash's exit 1 is a failed SLA, still a run
        raise SystemExit(f"{command[0]} failed (exit {process.returncode}): {errors[-500:]}")
    transactions = commits_after - commits_before - 2  # the two _sample() sessions' own
    server_cpu = sum(server_after[pid] - before for pid, before in server_before.items() if pid in server_after)
    return (transactions / window_s, (cpu_after - cpu_before) / transactions * 1e6,
            server_cpu / transactions * 1e6)


def _database(admin_dsn: str) -> str:
    """A database of the bench's own, with the accounts: its commits are the clients' alone."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    dsn = make_conninfo(admin_dsn, dbname=DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute("INSERT INTO bench_accounts SELECT i, 0 FROM generate_series(1, %s) i", (ACCOUNTS,))
    return dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20, help="the measured window of each client")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each client, taking turns; medians shown")
    parser.add_argument("--no-pgbench", action="store_true", help="only the bare Locust user and toolclash")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    dsn = _database(args.pg_dsn)
    warmup, window, clients = 5.0, float(args.seconds), str(args.clients)
    run_s = str(int(warmup + window + 3))
    script = Path(tempfile.mkdtemp(prefix="toolclash-bench-")) / "transfer.sql"
    script.write_text(PGBENCH_SCRIPT, encoding="utf-8")
    pgbench = ["pgbench", "-n", "-j", str(min(args.clients, os.cpu_count() or 1)), "-f", str(script),
               "-c", clients, "-T", run_s]
    locust = [str(BIN / "locust"), "--headless", "--only-summary", "-u", clients, "-r", clients, "-t", f"{run_s}s"]
    commands = {} if args.no_pgbench else {
        "pgbench -M prepared": ([*pgbench, "-M", "prepared", dsn], {}),
        "pgbench -M simple": ([*pgbench, "-M", "simple", dsn], {}),
    }
    commands |= {
        "bare Locust + psycopg 3": ([*locust, "-f", str(ROOT / "bench" / "bare_locust.py")],
                                    {"env": {**os.environ, "BENCH_PG_DSN": dsn}, "cwd": ROOT / "bench"}),
        "toolclash": ([*locust, "-f", str(ROOT / "locustfile.py"),
                       "--tools-module", str(ROOT / "bench" / "transfer_tool.py"),
                       "--tool-work", "0", "--pool-size", clients, "--pg-dsn", dsn, "--redis-url", args.redis_url,
                       "--schema", "bench_toolclash", "--reset"], {"cwd": ROOT}),
    }
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, (command, popen) in commands.items():
            runs[name].append(_steady_state(command, dsn, warmup, window, **popen))
    shutil.rmtree(script.parent)
    medians = {name: tuple(statistics.median(run[i] for run in measured) for i in range(3))
               for name, measured in runs.items()}
    bare_rate = medians["bare Locust + psycopg 3"][0]
    print(f"{args.clients} clients, {window:g} s measured after {warmup:g} s, {args.repeat} run(s) each"
          f"{' (medians)' if args.repeat > 1 else ''}, load average before: {load_before:.1f}")
    print(f"{'client':<26}{'tx/s':>10}{'x bare':>9}{'client CPU µs/tx':>19}{'server CPU µs/tx':>19}")
    for name, (rate, cpu_us, server_us) in medians.items():
        each = ("   runs: " + ", ".join(f"{r:.0f} tx/s {c:.0f}+{s:.0f} µs" for r, c, s in runs[name])
                if args.repeat > 1 else "")
        print(f"{name:<26}{rate:>10.0f}{rate / bare_rate:>9.2f}{cpu_us:>19.0f}{server_us:>19.0f}{each}")
    with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


if __name__ == "__main__":
    main()
