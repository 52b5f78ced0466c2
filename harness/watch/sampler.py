"""The servers' side of the story, sampled during the run (on the local runner or the master
only, on one session of its own): PostgreSQL's database counters and lock waits, Redis's
clients and throughput, what the scenarios watch (queue depth, the outbox relay), how many
agents were running, and how late the sample started, every --sample-interval."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis

from db.audits import AuditContext
from db.server_stats import DATABASE_COUNTERS, database_counters
from db.session import RedisLost, Session, SessionLost
from harness.watch.background import Background

__all__ = ["ServerSampler", "summarize", "write_csv"]

log = logging.getLogger(__name__)

# Sessions of this database waiting for a lock: since when, and who blocks them.
_LOCK_WAITS = """
    SELECT l.pid, extract(epoch FROM clock_timestamp() - min(l.waitstart)), pg_blocking_pids(l.pid)
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE NOT l.granted AND a.datname = current_database()
    GROUP BY l.pid
"""


def _longest_chain(blockers: dict[int, list[int]]) -> int:
    """Sessions in the longest chain of waits (a waits for b, which waits for c: 3)."""
    depth: dict[int, int] = {}

    def walk(pid: int, seen: frozenset[int]) -> int:
        if pid in depth:
            return depth[pid]
        ahead = [walk(b, seen | {pid}) for b in blockers.get(pid, []) if b not in seen]
        depth[pid] = 1 + max(ahead, default=0)
        return depth[pid]

    return max((walk(pid, frozenset()) for pid in blockers), default=0)


class ServerSampler:
    def __init__(
        self,
        pg_dsn: str,
        redis_client: redis.Redis,
        interval_s: float,
        context: Callable[[psycopg.Connection], AuditContext],
        scenario_samples: list[Callable[[AuditContext], dict[str, Any]]],
        agents_now: Callable[[], int],
        application_name: str,
    ) -> None:
        self._pg_dsn = pg_dsn
        self._redis = redis_client
        self._interval_s = interval_s
        self._context = context
        self._scenario_samples = scenario_samples
        self._agents_now = agents_now
        self._application_name = application_name
        self._background = Background()
        self.rows: list[dict[str, Any]] = []

    def start(self, baseline: dict[str, int]) -> None:
        self.rows = []
        self._baseline = baseline
        self._started = time.monotonic()
        self._background.start(self._run)

    def stop(self) -> list[dict[str, Any]]:
        """Finish the sample being taken, then stop; the rows. A sample still waiting for a lost
        server after a few seconds is given up: the audit will wait for that server anyway."""
        self._background.stop()
        return self.rows

    def _run(self) -> None:
        # A sample cut short by a lost connection is taken again whole on a new session (the relay
        # a scenario may run in it is idempotent).
        session = Session(self._pg_dsn, self._application_name)
        due = time.monotonic() + self._interval_s
        try:
            # On a schedule, not `interval` after the end of the last sample: a slow sample (a busy
            # server) must not stretch the series.
            while not self._background.stopping.wait(max(0.0, due - time.monotonic())):
                # How late this sample starts: the hub's delay, when something held it (the
                # report's `hub` section); a slow sample stretches the interval instead.
                late_s = max(0.0, time.monotonic() - due)
                row = session.run(self._sample)
                row["sampler_late_s"] = round(late_s, 3)
                self.rows.append(row)
                due = max(due + self._interval_s, time.monotonic())
        except (SessionLost, RedisLost) as exc:
            # The run goes on without samples; the audit meets the same server and ends the run.
            log.warning("toolclash: the server sampler stops: %s", exc)
        finally:
            session.close()

    def _sample(self, conn: psycopg.Connection) -> dict[str, Any]:
        context = self._context(conn)
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self._started, 3), "agents": self._agents_now()}
        counters = database_counters(conn)
        row.update({f"pg_{name}": counters[name] - self._baseline[name] for name in DATABASE_COUNTERS})
        waits = conn.execute(_LOCK_WAITS).fetchall()
        row["pg_lock_waiters"] = len(waits)
        row["pg_longest_lock_wait_ms"] = round(max((float(w[1] or 0) for w in waits), default=0.0) * 1000, 1)
        row["pg_longest_blocking_chain"] = _longest_chain({pid: list(blockers) for pid, _, blockers in waits})
        info = {**self._redis.info("clients"), **self._redis.info("stats")}
        row["redis_connected_clients"] = info.get("connected_clients", 0)
        row["redis_ops_per_sec"] = info.get("instantaneous_ops_per_sec", 0)
        row["redis_rejected_connections"] = info.get("rejected_connections", 0)
        for sample in self._scenario_samples:
            row.update(sample(context))
        return row


_PEAKS = {
    "pg_lock_waiters": "peak_lock_waiters",
    "pg_longest_lock_wait_ms": "longest_lock_wait_ms",
    "pg_longest_blocking_chain": "longest_blocking_chain",
    "redis_connected_clients": "peak_redis_clients",
    "redis_ops_per_sec": "peak_redis_ops_per_sec",
}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The peaks of the samples, for the report's `server_counters` section."""
    peaks: dict[str, Any] = {name: max((r[column] for r in rows), default=0) for column, name in _PEAKS.items()}
    peaks["redis_rejected_connections"] = (
        rows[-1]["redis_rejected_connections"] - rows[0]["redis_rejected_connections"] if rows else 0)
    peaks["samples"] = len(rows)
    return peaks


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(column for row in rows for column in row)) or ["t_s", "agents"]
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
