"""Many thinking agents on one process: what an agent costs while it thinks (memory, the hub's
schedule), and the calls/s and CPU a call of such a load takes, at think times of 5 to 30 s.

    .venv/bin/python bench/thinking_agents.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--runs 1000@lognormal:5s:15s,5000@lognormal:30s:90s] [--seconds 40]

Runs toolclash headless once per run of `--runs` (AGENTS@THINK_TIME), each as Locust's local
runner (one process: the agents, the audits, the sampler), in process, the default scenario mix,
its own `--schema` and `--reset`, the agents spawned over `--spawn-s` seconds. Every agent makes
its first call as it starts (Locust runs a task before its first wait), so the first seconds
are a burst; the steady window opens `--settle` seconds after the start and closes
`_UNMEASURED_END_S` before the end. Over that window: the calls/s (bench/counted_locustfile.py's
count of Locust's `request` events), the locust process's CPU in cores and per call, its RSS
(median of samples every 0.5 s) and RSS per agent. After the run: the process's peak RSS (VmHWM, the audits included),
the report's hub figures (the event loop's lag, p50 / p99 / max and when, whether it fell
behind, the sampler's late samples), the pool wait p95, and the verdict. Last, the marginal
memory of an agent: the slope of the window RSS over the agents of the runs that share a think
time. The machine's 1-minute load average is sampled during each window.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from toolclash_processes import Toolclash, add_server_arguments, calls_between, cpu_of, process_tree, verdict_of

_MB = 1024 * 1024
_UNMEASURED_END_S = 3.0  # the window closes this long before the run's end (agents stopping)
_RUNS = "1000@lognormal:5s:15s,2500@lognormal:5s:15s,5000@lognormal:5s:15s,5000@lognormal:30s:90s"


def _high_water_mark(pid: int) -> int:
    """The peak RSS of process `pid` so far, in bytes (Linux's VmHWM); 0 once it has exited (a
    process waiting to be reaped has none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except FileNotFoundError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def _run(args: argparse.Namespace, agents: int, think_time: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="toolclash-thinking-") as scratch:
        calls_dir = Path(scratch) / "calls"
        calls_dir.mkdir()
        run = Toolclash(Path(scratch), pg_dsn=args.pg_dsn, redis_url=args.redis_url, schema=args.schema,
                        users=agents, seconds=args.seconds, processes=0, spawn_rate=agents / args.spawn_s,
                        calls_dir=calls_dir, extra=("--think-time", think_time, "--sla", "sla/without_latency.toml"))
        process = psutil.Process(run.process.pid)
        started = time.monotonic()
        time.sleep(args.settle)
        window = args.seconds - (time.monotonic() - started) - _UNMEASURED_END_S
        rss: list[int] = []
        loads: list[float] = []

        def sample_while(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                rss.append(process.memory_info().rss)
                loads.append(os.getloadavg()[0])
                time.sleep(0.5)

        opened = time.time()
        before = cpu_of(process_tree(run.process.pid))
        sample_while(window)
        after = cpu_of(process_tree(run.process.pid))
        closed = time.time()
        window_cpu = sum(after[pid] - before.get(pid, 0.0) for pid in after)
        peak = _high_water_mark(run.process.pid)
        while run.process.poll() is None:  # the audits: the peak may still grow
            peak = max(peak, _high_water_mark(run.process.pid))
            time.sleep(0.2)
        report = run.report()
        calls = calls_between(calls_dir, opened, closed)
    seconds = closed - opened
    hub = report["hub"]
    lag = hub["processes"]["local runner"]
    calls_per_s = calls / seconds
    cores = window_cpu / seconds
    window_rss = statistics.median(rss)
    return {
        "agents": agents, "think_time": think_time, "calls_per_s": calls_per_s,
        "s_between_calls": agents / calls_per_s if calls_per_s else float("nan"),
        "cores": cores, "us_per_call": cores / calls_per_s * 1e6 if calls_per_s else float("nan"),
        "rss_mb": window_rss / _MB, "kb_per_agent": window_rss / agents / 1024, "peak_mb": peak / _MB,
        "lag_p50_ms": (lag["p50_s"] or 0) * 1000, "lag_p99_ms": (lag["p99_s"] or 0) * 1000,
        "lag_max_ms": (lag["max_s"] or 0) * 1000, "lag_max_at_s": lag["max_at_s"] or 0.0,
        "fell_behind": "yes" if hub["fell_behind"] else "no",
        "late_samples": f"{hub['sampler']['late_samples']}/{hub['sampler']['samples']}",
        "pool_wait_p95_ms": report["latency_ms"]["pool_wait"]["p95"] or 0.0,
        "load": f"{min(loads):.1f}-{max(loads):.1f}", "verdict": verdict_of(report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--runs", default=_RUNS, help="AGENTS@THINK_TIME,...")
    parser.add_argument("--seconds", type=float, default=40.0, help="each run's --run-time")
    parser.add_argument("--spawn-s", type=float, default=3.0, help="seconds to spawn all of a run's agents")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds from a run's start to its window (start-up, --reset, the spawn, the first calls)")
    parser.add_argument("--schema", default="bench_thinking_agents")
    args = parser.parse_args()

    runs = [(int(agents), think) for agents, think in (run.split("@", 1) for run in args.runs.split(","))]
    results = [_run(args, agents, think) for agents, think in runs]
    print(f"one process (Locust's local runner), in process, the default mix, {args.seconds:g} s runs, agents"
          f" spawned over {args.spawn_s:g} s, the window from {args.settle:g} s to {_UNMEASURED_END_S:g} s before"
          f" the end; {os.cpu_count()} cores; PostgreSQL's pool 20")
    print(f"{'agents':>6} {'think time':<20}{'calls/s':>8}{'s/call':>7}{'cores':>6}{'µs/call':>8}{'RSS MB':>7}"
          f"{'KB/agent':>9}{'peak MB':>8}{'lag p50':>8}{'p99':>6}{'max ms':>7}{'at s':>6}{'behind':>7}{'late':>6}"
          f"{'pool p95':>9}{'load':>9}  verdict")
    for r in results:
        print(f"{r['agents']:>6} {r['think_time']:<20}{r['calls_per_s']:>8.0f}{r['s_between_calls']:>7.2f}"
              f"{r['cores']:>6.2f}{r['us_per_call']:>8.0f}{r['rss_mb']:>7.0f}{r['kb_per_agent']:>9.1f}"
              f"{r['peak_mb']:>8.0f}{r['lag_p50_ms']:>8.1f}{r['lag_p99_ms']:>6.1f}{r['lag_max_ms']:>7.0f}"
              f"{r['lag_max_at_s']:>6.1f}{r['fell_behind']:>7}{r['late_samples']:>6}{r['pool_wait_p95_ms']:>9.1f}"
              f"{r['load']:>9}  {r['verdict']}")
    for think in dict.fromkeys(think for _, think in runs):
        same = [r for r in results if r["think_time"] == think]
        agents, rss = [float(r["agents"]) for r in same], [float(r["rss_mb"]) for r in same]
        if len(set(agents)) > 1:
            line = statistics.linear_regression(agents, rss)
            print(f"{think}: each agent more adds {line.slope * 1024:.1f} KB of RSS (least squares over"
                  f" {', '.join(str(int(x)) for x in agents)} agents), a process of none {line.intercept:.0f} MB")
    print("s/call: an agent's seconds from one call to its next (think time and the call); cores: the locust"
          " process's CPU over the window; lag: the report's hub, the event loop's lateness over the whole run.")


if __name__ == "__main__":
    main()
