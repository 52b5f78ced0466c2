"""The coordinator (the local runner, or the master): it owns the schema for the run, reads the
server's own counters, runs the audits once at the end, and turns it all into the verdict."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import redis
from psycopg import sql

from db import schema as run_schema
from db.audits import AuditContext
from db.connect import CONNECT_TIMEOUT_S, ServerInfo
from db.pool import SessionSettings, load_application_prefix
from db.server_stats import connection_room, database_counters, wait_for_sessions_to_end
from harness import sla, verdict
from harness.metrics import Metrics
from harness.options import HARNESS_SESSIONS, Settings
from harness.report import build_report, stage_reports
from harness.sampler import ServerSampler, summarize, write_csv

__all__ = ["Coordinator"]

_SESSIONS_END_TIMEOUT_S = 10.0


class Coordinator:
    def __init__(self, settings: Settings, pg_dsn: str, redis_url: str, servers: list[ServerInfo]) -> None:
        self.settings = settings
        self._pg_dsn = pg_dsn
        self._redis = redis.Redis.from_url(redis_url)
        self._sampler: ServerSampler | None = None
        self._servers = servers
        self._conn: psycopg.Connection | None = None
        self.deadlock_timeout: dict[str, Any] = {}
        self._run: dict[str, Any] | None = None
        self._baseline: dict[str, int] = {}
        self._started = 0.0

    def open(self) -> None:
        """Claim and prepare the schema; raises SchemaRefused or psycopg.Error."""
        self._conn = psycopg.connect(
            self._pg_dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=f"toolclash-coordinator:{self.settings.schema}"[:63],
        )
        run_schema.claim(self._conn, self.settings.schema)
        run_schema.prepare(self._conn, self.settings.schema, reset=self.settings.reset)
        self.deadlock_timeout = self._probe_deadlock_timeout()

    def _probe_deadlock_timeout(self) -> dict[str, Any]:
        server_value = self._conn.execute("SHOW deadlock_timeout").fetchone()[0]
        requested = self.settings.deadlock_timeout_ms
        if requested is None:
            return {"requested_ms": None, "applied": False, "effective": server_value,
                    "note": f"the server's {server_value} (no --deadlock-timeout given)"}
        probe = SessionSettings(self.settings.schema, deadlock_timeout_ms=requested)
        if probe.try_set_deadlock_timeout(self._conn):
            self._conn.execute("RESET deadlock_timeout")
            return {"requested_ms": requested, "applied": True, "effective": f"{requested}ms",
                    "note": f"{requested}ms, set for the harness's sessions (--deadlock-timeout)"}
        role = self._conn.execute("SELECT current_user").fetchone()[0]
        return {"requested_ms": requested, "applied": False, "effective": server_value,
                "note": f"--deadlock-timeout {requested} NOT applied: role {role} may not set deadlock_timeout"
                        f" (needs superuser or GRANT SET); the server's {server_value} was used"}

    def connections_refused(self, agents: int, processes: int) -> str | None:
        """Why the server cannot take the sessions a run of `agents` on `processes` load processes
        opens (one line naming both figures and what to change), or None when it can."""
        needed, per_process = self.settings.connections_needed(agents, processes)
        room = connection_room(self._conn)
        if needed <= room.free:
            return None
        return (f"the run needs {needed} PostgreSQL connections ({processes} load process(es) x --pool-size"
                f" {per_process} + {HARNESS_SESSIONS} for the harness) but the server takes {room.free} more"
                f" ({room.describe()}): lower --pool-size or --processes, or raise max_connections")

    def begin(self, agents: int, agents_now: Callable[[], int]) -> None:
        run_id = uuid.uuid4().hex[:12]
        run_schema.begin_run(
            self._conn,
            self.settings.schema,
            run_id,
            accounts=self.settings.params.accounts,
            initial_balance=self.settings.initial_balance,
            counters=self.settings.params.counters,
        )
        self.settings.params.keys.clear(self._redis)
        for scenario in self.settings.scenarios:
            if scenario.setup is not None:
                with self._conn.transaction():
                    self._conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.settings.schema)))
                    scenario.setup(self._conn)
        self._baseline = database_counters(self._conn)
        self._started = time.monotonic()
        params = self.settings.params
        self._sampler = ServerSampler(
            self._pg_dsn,
            self._redis,
            self.settings.sample_interval_s,
            lambda conn: self._context(conn=conn),
            [partial(s.sample, params=params) for s in self.settings.scenarios if s.sample is not None],
            agents_now,
            f"toolclash-sampler:{self.settings.schema}",
        )
        self._sampler.start(self._baseline)
        self._run = {
            "run_id": run_id,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "scenarios": [s.name for s in self.settings.scenarios],
            "isolation": self.settings.isolation,
            "schema": self.settings.schema,
            "agents": agents,
        }

    def _context(self, metrics: Metrics | None = None, conn: psycopg.Connection | None = None) -> AuditContext:
        return AuditContext(
            conn=conn or self._conn,
            schema=self.settings.schema,
            redis=self._redis,
            keys=self.settings.params.keys,
            acknowledged_of=(metrics or Metrics()).acknowledged,
            findings=metrics.findings if metrics else [],
        )

    @property
    def running(self) -> bool:
        return self._run is not None

    def finish(
        self,
        metrics: Metrics,
        peak_agents: int,
        workers: dict[str, Any] | None = None,
        stages: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Audit the run whose load has stopped and closed its connections; the full report.
        `workers`: in a distributed run, what each worker shipped, and the workers that were lost."""
        run, self._run = self._run, None
        samples = self._sampler.stop()
        run["duration_s"] = time.monotonic() - self._started
        run["agents"] = max(run["agents"], peak_agents)
        sessions_left = wait_for_sessions_to_end(
            self._conn, load_application_prefix(self.settings.schema), _SESSIONS_END_TIMEOUT_S
        )
        final = database_counters(self._conn)
        server: dict[str, Any] = {name: final[name] - self._baseline[name] for name in final}
        server["deadlock_timeout"] = self.deadlock_timeout
        server["load_sessions_left"] = sessions_left
        server.update(summarize(samples))
        if self.settings.timeseries_csv:
            write_csv(samples, self.settings.timeseries_csv)
        context = self._context(metrics)
        audits = {}
        for scenario in self.settings.scenarios:
            audits.update(scenario.audits(self.settings.params))
        checks = [check for audit in audits.values() for check in audit(context)]
        report = build_report(
            metrics=metrics,
            server=server,
            checks=checks,
            run=run,
            servers=[{"kind": s.kind, "version": s.version, "where": s.where, "origin": s.origin,
                      "description": s.describe()} for s in self._servers],
            timeseries=samples,
        )
        if workers is not None:
            report["workers"] = workers
        problems = verdict.evidence_problems(metrics, workers["lost"] if workers else None)
        report["evidence"] = {"ok": not problems, "problems": problems}
        report["sla"] = sla.evaluate(self.settings.sla_rules, report, self.settings.scopes)
        if stages:
            report["steps"] = stage_reports(metrics, stages, time.monotonic(), self.settings.sla_rules,
                                            self.settings.scopes)
        report["verdict"], report["exit_code"] = verdict.decide(report)
        # A failed audit's data is the evidence of what went wrong: the next run must not wipe it
        # unless told --reset.
        run_schema.finish_run(self._conn, self.settings.schema, audit_ok=report["audit"]["ok"])
        return report

    def close(self) -> None:
        self._redis.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
