"""Agents calling their tools over MCP beside in process: calls/s, and what limits them (the
client's CPU, the tool server's, PostgreSQL's, Redis's).

    .venv/bin/python bench/mcp_agents.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--users 300] [--processes 2] [--seconds 30]

Runs toolclash headless once per transport, with the same agents (no think time) on the same
load processes and the default scenario mix: in process; over MCP on the builtin tool server
(`--mcp-server builtin`: one process, as many threads as agents up to 20, one PostgreSQL
connection per thread), in the era `auto` picks (the stateless one), and in the session era.
For each run it prints the calls/s of the whole run, the latency of the median call, and, over a
window of the steady state, the CPU in cores of the client (the locust process and its workers),
of the tool server, of PostgreSQL (its postmaster and every backend, other clients' too), of
Redis, and of the whole machine. The servers must run on this machine (their CPU is read from
their processes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import psycopg

from toolclash_processes import (
    Toolclash,
    add_server_arguments,
    cores_over,
    cpu_of,
    machine_cpu,
    process_tree,
    server_processes,
)

TRANSPORTS = {
    "in process": (),
    "MCP stateless": ("--mcp-server", "builtin"),
    "MCP session": ("--mcp-server", "builtin", "--mcp-era", "session"),
}
_SETTLE_S = 8.0  # start-up, the tool server's, the schema's seeding and the ramp, before the window opens
_UNMEASURED_END_S = 4.0  # the window closes this long before the run's end (its drain)


def _is_tool_server(process: psutil.Process) -> bool:
    try:
        return any("toolserver.__main__" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _run(args: argparse.Namespace, transport: str, ports: tuple[int, int]) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="toolclash-mcp-") as scratch:
        run = Toolclash(Path(scratch), pg_dsn=args.pg_dsn, redis_url=args.redis_url, schema=args.schema,
                        users=args.users, seconds=args.seconds, processes=args.processes,
                        extra=("--sla", "sla/without_latency.toml", *TRANSPORTS[transport]))
        time.sleep(_SETTLE_S)
        tree = process_tree(run.process.pid)
        client = [p for p in tree if not _is_tool_server(p)]
        server = [p for p in tree if _is_tool_server(p)]
        pg_port, redis_port = ports
        cores = cores_over(args.seconds - _SETTLE_S - _UNMEASURED_END_S,
                           client=lambda: cpu_of(client), server=lambda: cpu_of(server),
                           postgres=lambda: cpu_of(server_processes(pg_port)),
                           redis=lambda: cpu_of(server_processes(redis_port)), machine=machine_cpu)
        cores["tool server"] = cores.pop("server")
        report = run.report()
    calls = sum(t["calls"] for t in report["tools"].values())
    p50s = sorted(t["p50_ms"] for t in report["tools"].values() if t["p50_ms"] is not None)
    calls_per_s = calls / report["run"]["duration_s"]
    return {"calls_per_s": calls_per_s, "p50_ms": p50s[len(p50s) // 2] if p50s else float("nan"), **cores,
            "client_us_per_call": cores["client"] / calls_per_s * 1e6,
            "verdict": report["verdict"] + ("" if report["audit"]["ok"] else " (audit FAILED)")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="each run's --run-time")
    parser.add_argument("--schema", default="bench_mcp_agents")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help=f"of {', '.join(TRANSPORTS)}")
    args = parser.parse_args()

    with psycopg.connect(args.pg_dsn) as conn:
        ports = (int(conn.info.port), urlparse(args.redis_url).port or 6379)
    load_before = os.getloadavg()[0]
    results = {transport: _run(args, transport, ports) for transport in args.transports.split(",")}
    print(f"{args.users} agents on {args.processes} load processes, no think time, the default mix;"
          f" {args.seconds:g} s runs, CPU over {args.seconds - _SETTLE_S - _UNMEASURED_END_S:g} s of each;"
          f" {os.cpu_count()} cores; load average before: {load_before:.1f}")
    print(f"{'transport':<15}{'calls/s':>8}{'p50 ms':>8}{'client':>8}{'server':>8}{'postgres':>10}{'redis':>7}"
          f"{'machine':>9}{'client µs/call':>16}  verdict")
    for transport, r in results.items():
        print(f"{transport:<15}{r['calls_per_s']:>8.0f}{r['p50_ms']:>8.1f}{r['client']:>8.2f}{r['tool server']:>8.2f}"
              f"{r['postgres']:>10.2f}{r['redis']:>7.2f}{r['machine']:>9.2f}{r['client_us_per_call']:>16.0f}"
              f"  {r['verdict']}")
    print("CPU columns in cores (1.00: one core busy all along); postgres counts every backend of the server.")


if __name__ == "__main__":
    main()
