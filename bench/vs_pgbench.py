"""toolclash side by side with pgbench and a bare Locust user, on the same transaction.

    .venv/bin/python bench/vs_pgbench.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--clients 16] [--seconds 20]

The transaction: two UPDATEs moving one credit between two random accounts of 1,000 (in lock
order), BEGIN/COMMIT. Run in one sitting, each with `--clients` clients for `--seconds`:
pgbench `-M prepared` and `-M simple`, a bare 20-line Locust user with psycopg 3
(bench/bare_locust.py), and toolclash (bench/transfer_tool.py as `--tools-module`,
`--tool-work 0`, one pool connection per agent, every hook and the audit included). Prints
tx/s, the ratio to the bare Locust user, and the client's CPU time per transaction (user + system
of the client's processes, from getrusage). Run it on a quiet machine: the clients and the
server share its cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCHEMA = "bench_vs_pgbench"
ACCOUNTS = 1000

PGBENCH_SCRIPT = f"""\\set a random(1, {ACCOUNTS})
\\set b random(1, {ACCOUNTS})
\\set low least(:a, :b)
\\set high greatest(:a, :b)
BEGIN;
UPDATE {SCHEMA}.bench_accounts SET balance = balance - 1 WHERE id = :low;
UPDATE {SCHEMA}.bench_accounts SET balance = balance + 1 WHERE id = :high;
COMMIT;
"""


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measured(run: Callable[[], tuple[int, float]]) -> tuple[float, float]:
    """(tx/s, client CPU µs per transaction) of one client's run: `run` returns (transactions,
    seconds of load)."""
    cpu_before = _children_cpu_s()
    transactions, seconds = run()
    cpu = _children_cpu_s() - cpu_before
    return transactions / seconds, cpu / transactions * 1e6


def _prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE TABLE {}.bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
                     .format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("INSERT INTO {}.bench_accounts SELECT i, 0 FROM generate_series(1, %s) i")
                     .format(sql.Identifier(SCHEMA)), (ACCOUNTS,))


def _pgbench(dsn: str, clients: int, seconds: int, mode: str) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
            script.write(PGBENCH_SCRIPT)
            script.flush()
            done = subprocess.run(
                ["pgbench", "-n", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)), "-T", str(seconds),
                 "-M", mode, "-f", script.name, dsn],
                capture_output=True, text=True, check=True,
            )
        processed = int(re.search(r"number of transactions actually processed: (\d+)", done.stdout).group(1))
        return processed, float(seconds)

    return run


def _bare_locust(dsn: str, clients: int, seconds: int) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as scratch:
            prefix = Path(scratch) / "bare"
            started = time.monotonic()
            subprocess.run(
                [BIN / "locust", "-f", ROOT / "bench" / "bare_locust.py", "--headless", "--only-summary",
                 "-u", str(clients), "-r", str(clients), "-t", f"{seconds}s", "--csv", prefix],
                env={**os.environ, "BENCH_PG_DSN": dsn, "BENCH_SCHEMA": SCHEMA}, cwd=scratch,
                capture_output=True, text=True, check=True,
            )
            elapsed = time.monotonic() - started
            with open(f"{prefix}_stats.csv", encoding="utf-8") as stats:
                aggregated = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
        return int(aggregated["Request Count"]), min(float(seconds), elapsed)

    return run


def _toolclash(dsn: str, redis_url: str, clients: int, seconds: int) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as scratch:
            report_path = Path(scratch) / "report.json"
            done = subprocess.run(
                [BIN / "locust", "-f", ROOT / "locustfile.py", "--headless", "--only-summary",
                 "-u", str(clients), "-r", str(clients), "-t", f"{seconds}s",
                 "--tools-module", ROOT / "bench" / "transfer_tool.py", "--tool-work", "0",
                 "--pool-size", str(clients), "--pg-dsn", dsn, "--redis-url", redis_url,
                 "--schema", "bench_toolclash", "--reset", "--report-json", report_path],
                cwd=ROOT, capture_output=True, text=True,
            )
            if not report_path.exists():
                raise SystemExit(f"toolclash gave no report (exit {done.returncode}): {done.stderr[-500:]}")
            report = json.loads(report_path.read_text(encoding="utf-8"))
        return report["tools"]["transfer"]["succeeded"], report["run"]["duration_s"]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-dsn", default=os.environ.get("TOOLCLASH_PG_DSN"), required="TOOLCLASH_PG_DSN" not in os.environ)
    parser.add_argument("--redis-url", default=os.environ.get("TOOLCLASH_REDIS_URL"),
                        required="TOOLCLASH_REDIS_URL" not in os.environ)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    _prepare(args.pg_dsn)
    clients = {
        "pgbench -M prepared": _pgbench(args.pg_dsn, args.clients, args.seconds, "prepared"),
        "pgbench -M simple": _pgbench(args.pg_dsn, args.clients, args.seconds, "simple"),
        "bare Locust + psycopg 3": _bare_locust(args.pg_dsn, args.clients, args.seconds),
        "toolclash": _toolclash(args.pg_dsn, args.redis_url, args.clients, args.seconds),
    }
    results = {name: _measured(run) for name, run in clients.items()}
    bare_rate = results["bare Locust + psycopg 3"][0]
    print(f"{args.clients} clients, {args.seconds} s each, load average before: {load_before:.1f}")
    print(f"{'client':<26}{'tx/s':>10}{'x bare':>9}{'client CPU µs/tx':>19}")
    for name, (rate, cpu_us) in results.items():
        print(f"{name:<26}{rate:>10.0f}{rate / bare_rate:>9.2f}{cpu_us:>19.0f}")
    with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    main()
