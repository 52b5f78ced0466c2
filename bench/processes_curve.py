"""Calls/s against `--processes N`, and what limits it: the client's CPU, PostgreSQL's, Redis's.

    .venv/bin/python bench/processes_curve.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--processes 1,2,3] [--users 64] [--seconds 40]

Runs toolclash headless once per workload and number of load processes, with the same agents
(no think time) and the same PostgreSQL connections in all (`--connections` split over the
processes, so that only the client's processes change): the default scenario mix, and the
pgbench-like transfer of bench/transfer_tool.py (`--tool-work 0`). For each run it prints the
calls/s of the whole run (the report's calls over its duration: all agents start in the first
second), and, over a window of the steady state, the CPU in cores of the client (the locust
process and its workers), of the PostgreSQL server (its postmaster and every backend, other
clients' too) and of the Redis server, and of the whole machine. Both servers must run on
this machine (their CPU is read from their processes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from toolclash_processes import (
    ROOT,
    Toolclash,
    add_server_arguments,
    cores_over,
    cpu_of,
    machine_cpu,
    process_tree,
    server_processes,
)

WORKLOADS = {
    "default mix": (),
    "transfer": ("--tools-module", str(ROOT / "bench" / "transfer_tool.py"), "--tool-work", "0"),
}
_SETTLE_S = 8.0  # start-up, the schema's seeding and the ramp, before the CPU window opens
_UNMEASURED_END_S = 4.0  # the window closes this long before the run's end (its drain)


def _pg_port(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.info.port)


def _run(args: argparse.Namespace, workload: str, processes: int, ports: tuple[int, int]) -> dict[str, float]:
    pool_size = max(1, args.connections // processes)
    with tempfile.TemporaryDirectory(prefix="toolclash-curve-") as scratch:
        run = Toolclash(Path(scratch), pg_dsn=args.pg_dsn, redis_url=args.redis_url, schema=args.schema,
                        users=args.users, seconds=args.seconds, processes=processes,
                        extra=("--pool-size", str(pool_size), *WORKLOADS[workload]))
        time.sleep(_SETTLE_S)
        pg_port, redis_port = ports
        cores = cores_over(args.seconds - _SETTLE_S - _UNMEASURED_END_S,
                           client=lambda: cpu_of(process_tree(run.process.pid)),
                           postgres=lambda: cpu_of(server_processes(pg_port)),
                           redis=lambda: cpu_of(server_processes(redis_port)), machine=machine_cpu)
        report = run.report()
    calls_per_s = sum(t["calls"] for t in report["tools"].values()) / report["run"]["duration_s"]
    return {"calls_per_s": calls_per_s, **cores, "client_us_per_call": cores["client"] / calls_per_s * 1e6,
            "pool_size": pool_size, "fell_behind": report["hub"]["fell_behind"],
            "worst_lag_s": report["hub"]["worst_lag_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--processes", default="1,2,3", help="the numbers of load processes, comma-separated")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=40.0, help="each run's --run-time")
    parser.add_argument("--connections", type=int, default=18,
                        help="PostgreSQL connections of the load in every run, split over its processes")
    parser.add_argument("--schema", default="bench_processes_curve")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"of {', '.join(WORKLOADS)}")
    args = parser.parse_args()

    ports = (_pg_port(args.pg_dsn), urlparse(args.redis_url).port or 6379)
    load_before = os.getloadavg()[0]
    results = {(workload, int(n)): _run(args, workload, int(n), ports)
               for workload in args.workloads.split(",") for n in args.processes.split(",")}
    print(f"{args.users} agents, no think time, {args.connections} PostgreSQL connections split over the processes;"
          f" {args.seconds:g} s runs, CPU over {args.seconds - _SETTLE_S - _UNMEASURED_END_S:g} s of each;"
          f" {os.cpu_count()} cores; load average before: {load_before:.1f}")
    print(f"{'workload':<13}{'processes':>10}{'calls/s':>9}{'client':>8}{'postgres':>10}{'redis':>7}{'machine':>9}"
          f"{'client µs/call':>16}  hub")
    for (workload, processes), r in results.items():
        print(f"{workload:<13}{processes:>10}{r['calls_per_s']:>9.0f}{r['client']:>8.2f}{r['postgres']:>10.2f}"
              f"{r['redis']:>7.2f}{r['machine']:>9.2f}{r['client_us_per_call']:>16.0f}  "
              + ("FELL BEHIND" if r["fell_behind"] else "kept up") + f" (worst {r['worst_lag_s']:.3f} s)")
    print("CPU columns in cores (1.00: one core busy all along); postgres counts every backend of the server.")


if __name__ == "__main__":
    main()
