"""What a run leaves in Redis per call, scenario by scenario, and how much of it lands in
PostgreSQL's drained tables instead.

    .venv/bin/python bench/redis_growth.py --pg-dsn postgresql://... --redis-url redis://... \
        [--run-time 60] [--users 20] [--checkout PATH]

For each of queue, agent_state and cross_service, runs the real `locust` command for
--run-time seconds on a schema of its own, and samples Redis from this process every 0.2 s
while it runs: INFO memory's used_memory and the MEMORY USAGE of every key of the run. Prints,
per call: used_memory's growth from before the run to its peak and to the end (after the audits'
drains), the run's keys at their peak and at the end, and the size of the drained tables in
PostgreSQL. used_memory is the whole server's (shared servers make it noisy); the keys' MEMORY
USAGE is the run's alone. --checkout runs another checkout's locustfile (e.g. a version before
the drain) with this one's Python.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.redis_keys import RedisKeys  # noqa: E402

SCENARIOS = ("queue", "agent_state", "cross_service")
_DRAINED_TABLES = ("queue_log", "plan_log", "usage_applied", "drained_streams")
_SAMPLE_EVERY_S = 0.2


def _keys_bytes(client: redis.Redis, keys: RedisKeys) -> int:
    return sum(client.memory_usage(key, samples=0) or 0
               for key in client.scan_iter(match=keys.prefix + "*", count=1000))


def _drained_bytes(pg_dsn: str, schema: str) -> int:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        return sum(conn.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)",
                                (f'"{schema}".{table}',)).fetchone()[0] for table in _DRAINED_TABLES)


def _drop(pg_dsn: str, client: redis.Redis, schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    RedisKeys(schema).clear(client)


def measure(scenario: str, args: argparse.Namespace, client: redis.Redis) -> dict[str, Any]:
    schema = f"bench_growth_{uuid.uuid4().hex[:8]}"
    keys = RedisKeys(schema)
    locust = str(Path(sys.executable).with_name("locust"))
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command = [locust, "--headless", "--only-summary", "--pg-dsn", args.pg_dsn, "--redis-url", args.redis_url,
                   "--schema", schema, "--scenario", scenario, "--users", str(args.users), "--spawn-rate",
                   str(args.users), "--run-time", f"{args.run_time}s", "--pool-size", "10",
                   "--report-json", str(report_path)]
        before = client.info("memory")["used_memory"]
        peak_used, peak_keys = before, 0
        try:
            with subprocess.Popen(command, cwd=args.checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL) as run:
                while run.poll() is None:
                    peak_used = max(peak_used, client.info("memory")["used_memory"])
                    peak_keys = max(peak_keys, _keys_bytes(client, keys))
                    time.sleep(_SAMPLE_EVERY_S)
            report = json.loads(report_path.read_text(encoding="utf-8"))
            end_used, end_keys = client.info("memory")["used_memory"], _keys_bytes(client, keys)
            drained = _drained_bytes(args.pg_dsn, schema)
        finally:
            _drop(args.pg_dsn, client, schema)
    calls = sum(tool["calls"] for tool in report["tools"].values())
    return {
        "scenario": scenario,
        "calls": calls,
        "audit": "pass" if report["audit"]["ok"] else "FAIL",
        "used_peak_per_call": (peak_used - before) / calls,
        "used_end_per_call": (end_used - before) / calls,
        "keys_peak": peak_keys,
        "keys_end": end_keys,
        "keys_peak_per_call": peak_keys / calls,
        "keys_end_per_call": end_keys / calls,
        "pg_per_call": drained / calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--run-time", type=int, default=60, help="seconds per scenario")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--checkout", default=str(ROOT), help="the toolclash checkout whose locustfile runs")
    args = parser.parse_args()
    header = (f"{'scenario':<14}{'calls':>8}  {'used_memory B/call':>18}  {'keys B/call':>12}  {'keys peak':>10}"
              f"  {'keys end':>9}  {'PostgreSQL B/call':>17}  audit")
    print(f"{args.run_time} s a scenario, {args.users} agents, checkout {args.checkout}")
    print(header)
    print(f"{'':<14}{'':>8}  {'peak / end':>18}  {'peak / end':>12}")
    with redis.Redis.from_url(args.redis_url) as client:
        for scenario in SCENARIOS:
            m = measure(scenario, args, client)
            print(f"{m['scenario']:<14}{m['calls']:>8}  {m['used_peak_per_call']:>8.1f} /{m['used_end_per_call']:>8.1f}"
                  f"  {m['keys_peak_per_call']:>5.1f} /{m['keys_end_per_call']:>5.1f}  {m['keys_peak']:>10}"
                  f"  {m['keys_end']:>9}  {m['pg_per_call']:>17.1f}  {m['audit']}", flush=True)


if __name__ == "__main__":
    main()
