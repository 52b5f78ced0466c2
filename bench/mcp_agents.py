"""Agents calling their tools over MCP beside in process and beside a bare MCP client: calls/s, the
client's CPU a call, and what limits them (the client's CPU, the tool server's, PostgreSQL's,
Redis's, the machine's cores).

    .venv/bin/python bench/mcp_agents.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--users 300] [--processes 2] [--seconds 20] [--paths …]

Runs the same agents (no think time, the default mix) on the same load processes, one path after
the other (`--paths`, in this order by default):
- `in process`: toolclash's agents run their tools themselves;
- `MCP stateless`, `MCP session`: toolclash's agents over MCP on the builtin tool server
  (`--mcp-server builtin`: one process; for 300 agents of the default mix, 20 threads and 10
  PostgreSQL connections, pool_exhaustion halving the pool as in process), in the era `auto`
  picks (the stateless one), then in the session era;
- `bare stateless`, `bare session`: bench/bare_mcp_loop.py, the same `tools/call`s from plain
  geventhttpclient connections with no toolclash client, no Locust loop and no record, on a
  tool server the bench starts with the builtin's own command line (read from the MCP run
  before it), on the data that run left; `bare session apart`, the bare loop reading each event
  stream's end in a greenlet of its own as toolclash's client does (`--ends-apart`), so that an
  agent's next call does not wait for the server to end the last one's stream;
- `MCP stateless x2`, `bare stateless x2`: the two again, on a tool server of two processes
  (`--processes 2 --stateless`, the builtin's options otherwise), which toolclash reaches by
  `--mcp-url`: the server is then no longer one process at a full core.
For each it prints, over one window of the steady state: the calls/s (counted by the load
processes themselves, bench/counted_locustfile.py), the CPU in cores of the client (toolclash:
the locust master and its workers, `load` the workers alone; bare: its processes), of the tool
server, of PostgreSQL (its postmaster and every backend, other clients' too), of Redis, of the
rest of the machine (`others`: this bench, other runs) and of the whole machine; the CPU a call
of the client, of its load processes and of the server; and
which side was the limit: a process of the client, of the tool server or Redis's at a full
core, or the machine's cores all busy. The servers must run on this machine (their CPU is read
from their processes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import psycopg

from toolclash_processes import (
    ROOT,
    Toolclash,
    add_server_arguments,
    calls_between,
    cores_each_over,
    cpu_of,
    machine_cpu,
    process_tree,
    server_processes,
)

sys.path.insert(0, str(ROOT))

from harness.run.tool_server_process import ToolServerProcess  # noqa: E402


@dataclass(frozen=True)
class CallPath:
    """How the agents' calls are made: by toolclash (with these options) or by the bare loop, in
    which era, and on a tool server the bench starts with this many processes (0: none)."""

    bare: bool
    era: str
    options: tuple[str, ...] = ()
    server_processes: int = 0
    ends_apart: bool = False


PATHS = {
    "in process": CallPath(False, ""),
    "MCP stateless": CallPath(False, "stateless", ("--mcp-server", "builtin")),
    "bare stateless": CallPath(True, "stateless", server_processes=1),
    "MCP session": CallPath(False, "session", ("--mcp-server", "builtin", "--mcp-era", "session")),
    "bare session": CallPath(True, "session", server_processes=1),
    "bare session apart": CallPath(True, "session", server_processes=1, ends_apart=True),
    "MCP stateless x2": CallPath(False, "stateless", ("--mcp-era", "stateless"), server_processes=2),
    "bare stateless x2": CallPath(True, "stateless", server_processes=2),
}
_SETTLE_S = 6.0  # toolclash's start-up, its tool server's, the schema's seeding and the ramp, before the window
_BARE_SETTLE_S = 3.0  # the bare loop's imports and its sessions, before the window
_UNMEASURED_END_S = 3.0  # the window closes this long before the load's end
_FULL_CORE = 0.85  # a process at this much of a core or more is the limit (Python runs on one core)
_BUSY_MACHINE = 0.9  # of all the machine's cores


def _is_tool_server(process: psutil.Process) -> bool:
    try:
        return any("toolserver.__main__" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _tool_servers(pid: int) -> list[psutil.Process]:
    """The tool server processes under `pid`: `python -m toolserver` and what it spawned (the
    processes of `--processes N`)."""
    servers = [p for p in process_tree(pid) if _is_tool_server(p)]
    return list({p.pid: p for server in servers for p in process_tree(server.pid)}.values())


def _server_command_line(servers: list[psutil.Process]) -> list[str]:
    """The builtin tool server's options, but its port, from its command line (`python -c LAUNCH
    *options`: harness.run.tool_server_process)."""
    command = next(p for p in servers if _is_tool_server(p)).cmdline()
    options = command[command.index("-c") + 2:]
    port = options.index("--port")
    return options[:port] + options[port + 2:]


@contextmanager
def _tool_server(path: CallPath, args: argparse.Namespace, builtin: list[str]) -> Iterator[str | None]:
    """The tool server the bench starts for `path`, its MCP URL while it serves (None: no server)."""
    if not path.server_processes:
        yield None
        return
    several = ("--processes", str(path.server_processes), "--stateless") if path.server_processes > 1 else ()
    server = ToolServerProcess([*builtin, "--port", "0", *several], args.pg_dsn, args.redis_url)
    try:
        yield server.wait_until_serving()
    finally:
        server.stop(30.0)
        server.close()


def _bare_loops(args: argparse.Namespace, path: CallPath, url: str, calls_dir: Path) -> list[subprocess.Popen[str]]:
    """The bare loop's processes, the agents split over them as Locust splits them over its workers."""
    seconds = _BARE_SETTLE_S + _window_s(args) + _UNMEASURED_END_S
    return [subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_mcp_loop.py"), "--url", url, "--schema", args.schema,
         "--agents", str(args.users // args.processes + (index < args.users % args.processes)),
         "--seconds", f"{seconds:g}", "--era", path.era, "--process-index", str(index),
         "--calls-file", str(calls_dir / f"bare-{index}.txt"), *(("--ends-apart",) if path.ends_apart else ())],
        cwd=ROOT, stdout=subprocess.PIPE, text=True) for index in range(args.processes)]


def _window_s(args: argparse.Namespace) -> float:
    return args.seconds - _SETTLE_S - _UNMEASURED_END_S


def _limit(cores: dict[str, dict[Any, float]]) -> str:
    """Which side was the limit: a process of the client, the tool server or Redis at a full core,
    or every core of the machine busy; else none (the calls' own waits: locks, --tool-work)."""
    full = [f"{side} ({max(cores[side].values()):.2f} core)" for side in ("client", "server", "redis")
            if cores[side] and max(cores[side].values()) >= _FULL_CORE]
    machine = sum(cores["machine"].values())
    if machine >= _BUSY_MACHINE * (os.cpu_count() or 1):
        full.append(f"machine ({machine:.2f} of {os.cpu_count()} cores)")
    return ", ".join(full) or "none at a full core"


def _run(args: argparse.Namespace, name: str, ports: tuple[int, int], builtin: list[str]) -> dict[str, Any]:
    path = PATHS[name]
    if path.server_processes and not builtin:
        raise SystemExit(f"--paths: {name!r} starts a tool server with the builtin's options: put an MCP path"
                         " on the builtin server (MCP stateless, MCP session) before it")
    pg_port, redis_port = ports
    with tempfile.TemporaryDirectory(prefix="toolclash-mcp-") as scratch, \
            _tool_server(path, args, builtin) as url:
        calls_dir = Path(scratch) / "calls"
        calls_dir.mkdir()
        if path.bare:
            loops = _bare_loops(args, path, url or "", calls_dir)
            client_pids = [loop.pid for loop in loops]
            time.sleep(_BARE_SETTLE_S)
        else:
            run = Toolclash(Path(scratch), pg_dsn=args.pg_dsn, redis_url=args.redis_url, schema=args.schema,
                            users=args.users, seconds=args.seconds, processes=args.processes, calls_dir=calls_dir,
                            extra=("--sla", "sla/without_latency.toml", *path.options,
                                   *(("--mcp-url", url) if url else ())))
            client_pids = [run.process.pid]
            time.sleep(_SETTLE_S)
        server = _tool_servers(os.getpid())
        if "--mcp-server" in path.options:
            builtin[:] = _server_command_line(server)
        client = [p for pid in client_pids for p in process_tree(pid) if p not in server]
        started = time.time()
        cores = cores_each_over(_window_s(args), client=lambda: cpu_of(client), server=lambda: cpu_of(server),
                                postgres=lambda: cpu_of(server_processes(pg_port)),
                                redis=lambda: cpu_of(server_processes(redis_port)), machine=machine_cpu)
        ended = time.time()
        calls_per_s = calls_between(calls_dir, started, ended) / (ended - started)
        if path.bare:
            counts = [json.loads(loop.communicate()[0] or "null") for loop in loops]
            if any(loop.returncode for loop in loops):
                raise SystemExit(f"the bare loop failed (exit codes {[loop.returncode for loop in loops]})")
            outcome = (f"{sum(c['is_error'] for c in counts)} isError, {sum(c['no_result'] for c in counts)}"
                       f" no result, of {sum(c['calls'] for c in counts)}")
            p50_ms = float("nan")
        else:
            report = run.report()
            p50s = sorted(t["p50_ms"] for t in report["tools"].values() if t["p50_ms"] is not None)
            p50_ms = p50s[len(p50s) // 2] if p50s else float("nan")
            outcome = report["verdict"] + ("" if report["audit"]["ok"] else " (audit FAILED)")
    total = {side: sum(each.values()) for side, each in cores.items()}
    master = 0.0 if path.bare else cores["client"].get(client_pids[0], 0.0)
    others = total["machine"] - sum(total[side] for side in ("client", "server", "postgres", "redis"))
    return {"calls_per_s": calls_per_s, "p50_ms": p50_ms, **total, "load": total["client"] - master,
            "others": others, "limit": _limit(cores), "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="each toolclash run's --run-time")
    parser.add_argument("--schema", default="bench_mcp_agents")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    args = parser.parse_args()
    if _window_s(args) <= 0:
        raise SystemExit(f"--seconds {args.seconds:g}: more than {_SETTLE_S + _UNMEASURED_END_S:g}, for a window")
    unknown = [name for name in args.paths.split(",") if name not in PATHS]
    if unknown:
        raise SystemExit(f"--paths: {', '.join(unknown)}: not one of {', '.join(PATHS)}")

    with psycopg.connect(args.pg_dsn) as conn:
        ports = (int(conn.info.port), urlparse(args.redis_url).port or 6379)
    load_before = os.getloadavg()[0]
    builtin: list[str] = []  # the builtin tool server's options, once an MCP run has shown them
    results = {name: _run(args, name, ports, builtin) for name in args.paths.split(",")}
    print(f"{args.users} agents on {args.processes} load processes, no think time, the default mix;"
          f" {args.seconds:g} s runs, measured over {_window_s(args):g} s of each; {os.cpu_count()} cores;"
          f" load average before: {load_before:.1f}")
    print(f"{'path':<19}{'calls/s':>8}{'p50 ms':>7}{'client':>7}{'load':>6}{'server':>7}{'postgres':>9}{'redis':>6}"
          f"{'others':>7}{'machine':>8}  {'µs a call: client':>17}{'load':>6}{'server':>7}  limit; outcome")
    for name, r in results.items():
        per_call = {side: r[side] / r["calls_per_s"] * 1e6 if r["calls_per_s"] else float("nan")
                    for side in ("client", "load", "server")}
        p50 = "-" if r["p50_ms"] != r["p50_ms"] else f"{r['p50_ms']:.0f}"  # NaN: the bare loop measures none
        print(f"{name:<19}{r['calls_per_s']:>8.0f}{p50:>7}{r['client']:>7.2f}{r['load']:>6.2f}"
              f"{r['server']:>7.2f}{r['postgres']:>9.2f}{r['redis']:>6.2f}{r['others']:>7.2f}{r['machine']:>8.2f}"
              f"  {per_call['client']:>17.0f}{per_call['load']:>6.0f}{per_call['server']:>7.0f}"
              f"  {r['limit']}; {r['outcome']}")
    print("CPU in cores (1.00: one core busy all along); client: toolclash's master and workers, or the bare"
          " loop's processes; load: its load processes alone; postgres: every backend of the server (other"
          " clients' too); others: the rest of the machine (this bench, other runs).")


if __name__ == "__main__":
    main()
