"""The resident memory of the master and of each worker over a long run at this machine's top
rate: its growth per 1 million calls, its peak, and what a 1-hour soak would take.

    .venv/bin/python bench/runner_memory.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--minutes 10] [--users 64] [--processes 2]

Runs toolclash headless (the default scenario mix, no think time) on `--processes` workers and
samples every `--every` seconds the RSS of the master (the locust process, which keeps what the
audits need: every call's operation id and outcome) and of each worker (which ships what it
recorded to the master every few seconds). With `--processes 0`, Locust's local runner: one
process that runs the agents and keeps what the audits need, measured as the master is. The
growth is the slope of RSS over the run's load (after `--settle` seconds), turned into bytes per
call with the run's calls/s. The master's peak includes the audit after the load (its
high-water mark, VmHWM); the 1-hour figure is the master's RSS when the load started plus what
the run's calls cost it up to that peak, scaled to the calls of an hour at the same rate. Run
it for minutes, not seconds: a process's first minute of load is mostly its warm-up (45 s
here extrapolated the master to 1.3 GB an hour; the hour itself peaked at 258 MB).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psutil

from toolclash_processes import Toolclash, add_server_arguments, verdict_of

_MB = 1024 * 1024


def _high_water_mark(pid: int) -> int | None:
    """The peak RSS of process `pid` so far, in bytes (Linux's VmHWM); None once it is gone
    (an exited process waiting to be reaped has no VmHWM any more)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _slope(points: list[tuple[float, int]]) -> float:
    """Least-squares bytes per second of (seconds, bytes) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_b = sum(b for _, b in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (b - mean_b) for t, b in points) / spread if spread else 0.0


def _sample(master: psutil.Process, keeper: str, series: dict[str, list[tuple[float, int]]], t: float) -> None:
    """One RSS sample of the master (or local runner), called `keeper`, and of each worker (named by
    their order of pid)."""
    try:
        processes = {keeper: master, **{f"worker {index}": worker for index, worker in
                                          enumerate(sorted(master.children(), key=lambda p: p.pid), 1)}}
        for name, process in processes.items():
            series.setdefault(name, []).append((t, process.memory_info().rss))
    except psutil.NoSuchProcess:
        pass  # the run is ending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2, help="workers; 0: the local runner, no master")
    parser.add_argument("--pool-size", type=int, default=16, help="PostgreSQL connections per load process")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between two samples of RSS")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds of load before the growth is measured")
    parser.add_argument("--schema", default="bench_runner_memory")
    args = parser.parse_args()

    run_s = args.minutes * 60
    keeper = "master" if args.processes else "local"
    series: dict[str, list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="toolclash-memory-") as scratch:
        run = Toolclash(Path(scratch), pg_dsn=args.pg_dsn, redis_url=args.redis_url, schema=args.schema,
                        users=args.users, seconds=run_s, processes=args.processes,
                        extra=("--pool-size", str(args.pool_size)))
        master = psutil.Process(run.process.pid)
        started = time.monotonic()
        peak = 0
        while run.process.poll() is None:
            _sample(master, keeper, series, time.monotonic() - started)
            peak = max(peak, _high_water_mark(master.pid) or 0)
            # Faster once the load has stopped: the audit's peak is short.
            time.sleep(args.every if time.monotonic() - started < run_s else 0.2)
        after_load = time.monotonic() - started - run_s
        report = run.report()

    calls = sum(t["calls"] for t in report["tools"].values())
    rate = calls / report["run"]["duration_s"]
    processes = f"{args.processes} workers" if args.processes else "the local runner"
    print(f"{args.users} agents, no think time, {processes}, {args.minutes:g} min: {calls:,} calls,"
          f" {rate:,.0f} calls/s, verdict {verdict_of(report)}; {os.cpu_count()} cores, load average now"
          f" {os.getloadavg()[0]:.1f}")
    print(f"from the load's end to the exit code (the last drain, the audits, the report): {after_load:.1f} s")
    print(f"{'process':<11}{'RSS at load start MB':>22}{'peak MB':>9}{'growth bytes/s':>16}{'MB per 1M calls':>17}"
          f"{'1 h MB':>8}")
    for name, points in series.items():
        during_load = [(t, rss) for t, rss in points if args.settle <= t <= run_s]
        if not during_load:
            raise SystemExit(f"no sample of {name} during the load: run longer than --settle")
        slope = _slope(during_load)
        start_rss = during_load[0][1]
        process_peak = max(rss for _, rss in points)
        if name == keeper:
            # Its peak is the audit's, after the load: what the run's calls cost it up to there.
            process_peak = max(process_peak, peak)
            per_call = (process_peak - start_rss) / (calls * (run_s - args.settle) / run_s)
        else:
            per_call = slope / rate
        in_one_hour = start_rss + per_call * rate * 3600
        print(f"{name:<11}{start_rss / _MB:>22.0f}{process_peak / _MB:>9.0f}{slope:>16,.0f}"
              f"{per_call * 1e6 / _MB:>17.1f}{in_one_hour / _MB:>8.0f}")
    print(f"{keeper}: its peak is the audit's, VmHWM; its MB per 1M calls are (peak - RSS at load start) over the"
          " calls made since; a worker's are its RSS slope during the load over the calls/s.")


if __name__ == "__main__":
    main()
