"""What the benches that run toolclash itself share: its command line, the processes of a run
(the locust process and its workers) and of the servers, the CPU they spend in a window, and the
calls its load processes made in that window (bench/counted_locustfile.py counts them)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

__all__ = ["CALLS_DIR_VARIABLE", "ROOT", "CpuWindow", "Toolclash", "add_server_arguments", "calls_between",
           "cores_each_over", "cores_over", "count_calls_into", "cpu_of", "machine_cpu", "process_tree",
           "server_processes", "verdict_of"]

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
# Where a counted run's load processes write their calls so far (bench/counted_locustfile.py).
CALLS_DIR_VARIABLE = "TOOLCLASH_BENCH_CALLS_DIR"
_CALLS_EVERY_S = 0.1


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--pg-dsn and --redis-url, read from TOOLCLASH_PG_DSN and TOOLCLASH_REDIS_URL when not given,
    as toolclash's own options are."""
    for option, variable in (("--pg-dsn", "TOOLCLASH_PG_DSN"), ("--redis-url", "TOOLCLASH_REDIS_URL")):
        parser.add_argument(option, default=os.environ.get(variable), required=variable not in os.environ,
                            help=f"default: ${variable}")


def _free_port() -> int:
    """A TCP port nothing listens on now (another run on this machine may hold Locust's 5557)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Toolclash:
    """A headless toolclash run in the background: `users` agents (all spawned in the first
    second unless `spawn_rate` says, no think time unless `extra` says) on `processes` load
    processes, with a master port of its own, or on Locust's local runner (one process, no
    master) when `processes` is 0; its output goes to a file (a pipe nobody reads would fill up
    and stall it). `calls_dir`: each load process counts its calls into a file there
    (bench/counted_locustfile.py: toolclash's locustfile and one `request` listener), for
    `calls_between`."""

    def __init__(self, scratch: Path, *, pg_dsn: str, redis_url: str, schema: str, users: int, seconds: float,
                 processes: int, extra: tuple[str, ...] = (), calls_dir: Path | None = None,
                 spawn_rate: float | None = None) -> None:
        self._report = scratch / "report.json"
        self._log = scratch / "locust.log"
        port = str(_free_port())
        distribution = (("--processes", str(processes), "--master-bind-port", port, "--master-port", port)
                        if processes else ())
        locustfile = ROOT / ("bench/counted_locustfile.py" if calls_dir is not None else "locustfile.py")
        command = [LOCUST, "-f", str(locustfile), "--headless", "--only-summary",
                   "--users", str(users), "--spawn-rate", f"{spawn_rate or users:g}", "--run-time", f"{seconds:g}s",
                   *distribution,
                   "--pg-dsn", pg_dsn, "--redis-url", redis_url, "--schema", schema, "--reset",
                   "--report-json", str(self._report), *extra]
        with self._log.open("w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            env={**os.environ, CALLS_DIR_VARIABLE: str(calls_dir or "")})

    def report(self) -> dict[str, Any]:
        """Wait for the run's end; its report (exit 1, a failed SLA or audit, is still a run)."""
        if self.process.wait() not in (0, 1):
            output = self._log.read_text(encoding="utf-8")
            raise SystemExit(f"toolclash failed (exit {self.process.returncode}): {output[-1500:]}")
        return json.loads(self._report.read_text(encoding="utf-8"))


def process_tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and its descendants now (locust --processes forks its workers)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def server_processes(port: int) -> list[psutil.Process]:
    """The server listening on TCP `port` of this machine, with its children (PostgreSQL's
    backends, including other clients' sessions: the machine is shared)."""
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return process_tree(connection.pid)
    raise SystemExit(f"no process of this machine listens on port {port} (a remote server cannot be measured)")


def cpu_of(processes: list[psutil.Process]) -> dict[int, float]:
    """The CPU seconds (user + system) each of `processes` has spent so far, by pid."""
    spent = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        spent[process.pid] = times.user + times.system
    return spent


def machine_cpu() -> dict[str, float]:
    """The CPU seconds all cores of the machine spent busy since boot (not idle, not waiting on
    I/O)."""
    times = psutil.cpu_times()
    return {"machine": sum(times) - times.idle - getattr(times, "iowait", 0.0)}


class CpuWindow:
    """The CPU that what `sample` measures (CPU seconds so far, by process) spends between
    start() and stop(), in cores: processes that appear meanwhile count from zero, those that
    exit meanwhile are lost (none do in a run's steady state)."""

    def __init__(self, sample: Callable[[], dict[Any, float]]) -> None:
        self._sample = sample
        self._before: dict[Any, float] = {}
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._before = self._sample()

    def stop(self) -> dict[Any, float]:
        """CPU seconds spent per second of the window (1.0: one core busy all along), by process."""
        elapsed = time.monotonic() - self._started
        return {key: (cpu - self._before.get(key, 0.0)) / elapsed for key, cpu in self._sample().items()}


def cores_each_over(seconds: float, **samples: Callable[[], dict[Any, float]]) -> dict[str, dict[Any, float]]:
    """The cores each process of each of `samples` (CPU seconds so far, by process) spends over
    the next `seconds`, all measured over the same window."""
    windows = {name: CpuWindow(sample) for name, sample in samples.items()}
    for window in windows.values():
        window.start()
    time.sleep(seconds)
    return {name: window.stop() for name, window in windows.items()}


def cores_over(seconds: float, **samples: Callable[[], dict[Any, float]]) -> dict[str, float]:
    """The cores each of `samples` spends over the next `seconds`, its processes together."""
    return {name: sum(each.values()) for name, each in cores_each_over(seconds, **samples).items()}


def count_calls_into(path: Path, calls: Callable[[], int]) -> None:
    """In a load process (gevent): write `calls()` so far, with the time, to `path` every 0.1 s, in
    a greenlet of its own, for as long as the process runs."""
    import gevent  # only the load processes run greenlets

    def write() -> None:
        with path.open("w", encoding="utf-8") as counts:
            while True:
                counts.write(f"{time.time():.4f} {calls()}\n")
                counts.flush()
                gevent.sleep(_CALLS_EVERY_S)

    gevent.spawn(write)


def calls_between(directory: Path, start: float, end: float) -> float:
    """The calls that the load processes counting into `directory` (count_calls_into) made
    between the times `start` and `end` (time.time()), each process's count interpolated
    between its samples."""
    total = 0.0
    for path in directory.iterdir():
        samples = [tuple(map(float, line.split())) for line in path.read_text(encoding="utf-8").splitlines()
                   if len(line.split()) == 2]
        total += _count_at(samples, end) - _count_at(samples, start)
    return total


def _count_at(samples: list[tuple[float, ...]], when: float) -> float:
    if not samples or when <= samples[0][0]:
        return samples[0][1] if samples else 0.0
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * (when - t0) / (t1 - t0)
    return samples[-1][1]


def verdict_of(report: dict[str, Any]) -> str:
    """The run's verdict, and what failed it: evidence problems, audit checks, SLA rules."""
    failed = ([problem["kind"] for problem in report["evidence"]["problems"]]
              + [check["name"] for check in report["audit"]["checks"] if not check["ok"]]
              + [rule["name"] for rule in report["sla"] if not rule["ok"]])
    return report["verdict"] + (f" ({'; '.join(failed)})" if failed else "")
