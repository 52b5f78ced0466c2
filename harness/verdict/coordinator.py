"""The coordinator (the local runner, or the master): it owns the schema for the run, reads the
server's own counters, runs the audits once at the end, and turns it all into the verdict."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

import gevent
import psycopg
import redis
from locust.runners import Runner
from psycopg import sql

from db import schema as run_schema
from db.audits import Acknowledged, AuditContext, OpIdsNotStored
from db.connect import ServerInfo
from db.pool import SessionSettings, load_application_prefix
from db.redis_keys import RedisClaim
from db.server_stats import connection_room, database_counters, wait_for_sessions_to_end
from db.session import Session, SessionLost
from harness.config import sla
from harness.config.run_settings import fingerprint, settings_summary
from harness.config.settings import HARNESS_SESSIONS, Settings
from harness.faults.chaos import FaultInjector, KillToolServer
from harness.report_shape import Evidence, Finding, Heartbeats, Report, ServerCounters, Workers
from harness.verdict import evidence
from harness.verdict.drainer import Drainer
from harness.verdict.probe import ProbeEnding, probe_section
from harness.verdict.report import StageStart, build_report, stage_reports
from harness.verdict.transport import McpFacts, transport_section
from harness.watch.hub_lag import HubLag, hub_note, hub_section
from harness.watch.metrics import Metrics
from harness.watch.sampler import ServerSampler, summarize, write_csv

__all__ = ["Coordinator"]

_SESSIONS_END_TIMEOUT_S = 10.0
# A terminated backend lets go of its locks as it exits, a moment after its client learnt of it.
_BACKEND_EXIT_TIMEOUT_S = 5.0
_BACKEND_EXIT_POLL_S = 0.02


def _wait_for_backend_to_exit(conn: psycopg.Connection, pid: int) -> None:
    """Until the backend `pid` is gone (it releases its locks before it leaves pg_stat_activity),
    or the timeout."""
    deadline = time.monotonic() + _BACKEND_EXIT_TIMEOUT_S
    while (conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is not None
           and time.monotonic() < deadline):
        gevent.sleep(_BACKEND_EXIT_POLL_S)


class Coordinator:
    def __init__(self, settings: Settings, pg_dsn: str, redis_url: str, servers: list[ServerInfo],
                 kept: bool = False) -> None:
        """`kept`: the run is a capacity probe on the data earlier probes left (harness.run.capacity):
        nothing is emptied, seeded or set up, and only the audits' scoped checks are judged."""
        self.settings = settings
        self.kept = kept
        self._pg_dsn = pg_dsn
        name = f"toolclash-coordinator:{settings.schema}"
        # Named after its role, like its PostgreSQL session: CLIENT LIST tells the harness's own
        # clients from the load's (the only ones --chaos redis-kill hits).
        self._redis = redis.Redis.from_url(redis_url, client_name=name)
        self._sampler: ServerSampler | None = None
        self._drainer: Drainer | None = None
        self._servers = servers
        # Every use of it goes through self._session.run: work lost with its connection is done
        # again, whole, on a new one (the schema re-claimed first).
        self._session = Session(pg_dsn, name, on_connect=self._claim)
        self._backend_pid: int | None = None  # the backend whose session holds the schema's lock
        self._redis_claim = RedisClaim(self._redis, settings.params.keys, name)
        # Idle (no connection) until a test with --chaos starts it.
        self._injector = FaultInjector(pg_dsn, redis_url, settings.schema)
        self.deadlock_timeout: dict[str, Any] = {}
        self._run: dict[str, Any] | None = None
        self._baseline: dict[str, int] = {}
        self._started = 0.0

    def open(self) -> None:
        """Claim and prepare the schema; raises SchemaRefused or psycopg.Error."""
        self._session.open()
        self._redis_claim.claim()
        self._session.run(partial(run_schema.prepare, schema=self.settings.schema, reset=self.settings.reset,
                                  kept=self.kept))
        self.deadlock_timeout = self._session.run(self._probe_deadlock_timeout)

    def _claim(self, conn: psycopg.Connection) -> None:
        """Hold the schema on each new session of the coordinator's: the advisory lock (see
        db.schema.claim) went with the lost one, and another run may have taken it meanwhile."""
        if self._backend_pid is not None:
            _wait_for_backend_to_exit(conn, self._backend_pid)
        try:
            run_schema.claim(conn, self.settings.schema)
        except run_schema.SchemaRefused as exc:
            if self._backend_pid is None:
                raise
            raise SessionLost(f"the coordinator's session was lost, and another toolclash run claimed schema"
                              f" {self.settings.schema!r} meanwhile: this run's data can no longer be trusted") from exc
        self._backend_pid = conn.info.backend_pid

    def attach(self, runner: Runner) -> None:
        """Locust's runner, where the verdict is made: --chaos faults stop when it starts stopping."""
        self._injector.attach(runner)

    def use(self, settings: Settings) -> None:
        """The settings of the next test: its per-run options may differ from the last one's (the
        fixed ones, the servers and the schema, never do)."""
        probe_again = settings.deadlock_timeout_ms != self.settings.deadlock_timeout_ms
        self.settings = settings
        if probe_again:
            self.deadlock_timeout = self._session.run(self._probe_deadlock_timeout)

    def _probe_deadlock_timeout(self, conn: psycopg.Connection) -> dict[str, Any]:
        server_value = conn.execute("SHOW deadlock_timeout").fetchone()[0]
        requested = self.settings.deadlock_timeout_ms
        if requested is None:
            return {"requested_ms": None, "applied": False, "effective": server_value,
                    "note": f"the server's {server_value} (no --deadlock-timeout given)"}
        probe = SessionSettings(self.settings.schema, deadlock_timeout_ms=requested)
        if probe.try_set_deadlock_timeout(conn):
            conn.execute("RESET deadlock_timeout")
            return {"requested_ms": requested, "applied": True, "effective": f"{requested}ms",
                    "note": f"{requested}ms, set for the harness's sessions (--deadlock-timeout)"}
        role = conn.execute("SELECT current_user").fetchone()[0]
        return {"requested_ms": requested, "applied": False, "effective": server_value,
                "note": f"--deadlock-timeout {requested} NOT applied: role {role} may not set deadlock_timeout"
                        f" (needs superuser or GRANT SET); the server's {server_value} was used"}

    def connections_refused(self, agents: int, processes: int) -> str | None:
        """Why the server cannot take the sessions a run of `agents` on `processes` load processes
        opens (one line naming both figures and what to change), or None when it can."""
        needed, per_process = self.settings.connections_needed(agents, processes)
        room = self._session.run(connection_room)
        if needed <= room.free:
            return None
        if self.settings.mcp is not None:  # a user's server's are not counted: needed is the harness's alone
            return (f"the run needs {needed} PostgreSQL connections (the {self.settings.mcp.server} MCP server's pool"
                    f" of {needed - HARNESS_SESSIONS} + {HARNESS_SESSIONS} for the harness) but the server takes"
                    f" {room.free} more ({room.describe()}): lower --pool-size, or raise max_connections")
        return (f"the run needs {needed} PostgreSQL connections ({processes} load process(es) x --pool-size"
                f" {per_process} + {HARNESS_SESSIONS} for the harness) but the server takes {room.free} more"
                f" ({room.describe()}): lower --pool-size or --processes, or raise max_connections")

    def begin(self, agents: int, agents_now: Callable[[], int], seed: int,
              kill_tool_server: KillToolServer | None = None) -> str:
        """Seed the run's data and start sampling the servers; the run's id. `seed` is the agents'
        (--seed's, or drawn for this test): the report records it. `kill_tool_server`: --chaos
        mcp-kill's fault, on the tool server the run started."""
        run_id = uuid.uuid4().hex[:12]
        self._baseline = self._session.run(partial(self._seed, run_id))
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
        self._drainer = Drainer(
            self._pg_dsn,
            self.settings.sample_interval_s,
            lambda conn: self._context(conn=conn),
            [s.drain for s in self.settings.scenarios if s.drain is not None],
            f"toolclash-drain:{self.settings.schema}",
        )
        self._drainer.start()
        if self.settings.chaos:
            self._injector.start(self._started, self.settings.chaos, kill_tool_server)
        self._run = {
            "run_id": run_id,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "scenarios": [s.name for s in self.settings.scenarios],
            "isolation": self.settings.isolation,
            "schema": self.settings.schema,
            "agents": agents,
            "seed": seed,
            "settings_fingerprint": fingerprint(self.settings),
        }
        return run_id

    def _seed(self, run_id: str, conn: psycopg.Connection) -> dict[str, int]:
        """Empty and seed the run's data, in PostgreSQL and Redis (safe to run again whole); the
        server's counters before the load. On kept data, the run only starts on what is there."""
        if self.kept:
            run_schema.continue_run(conn, self.settings.schema, run_id)
            return database_counters(conn)
        run_schema.begin_run(
            conn,
            self.settings.schema,
            run_id,
            accounts=self.settings.params.accounts,
            initial_balance=self.settings.params.initial_balance,
            counters=self.settings.params.counters,
        )
        self.settings.params.keys.clear(self._redis)
        for scenario in self.settings.scenarios:
            if scenario.setup is not None:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.settings.schema)))
                    scenario.setup(conn)
        return database_counters(conn)

    def _context(self, conn: psycopg.Connection, metrics: Metrics | None = None,
                 audited: set[str] | None = None, notes: list[dict[str, str]] | None = None) -> AuditContext:
        """What an audit gets; the tools whose outcomes it asks for join `audited`, what it notes
        joins `notes`."""
        metrics = metrics or Metrics()

        def acknowledged_of(tools: Collection[str]) -> Acknowledged:
            if audited is not None:
                audited.update(tools)
            return metrics.acknowledged(set(tools))

        return AuditContext(
            conn=conn,
            schema=self.settings.schema,
            redis=self._redis,
            keys=self.settings.params.keys,
            acknowledged_of=acknowledged_of,
            baseline=self.settings.params.baseline,
            observe=metrics.observe,
            findings=metrics.findings,
            notes=notes if notes is not None else [],
        )

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def samples(self) -> list[dict[str, Any]]:
        """The server sampler's rows of the current (or last) test: the web UI reads them live."""
        return self._sampler.rows if self._sampler is not None else []

    @property
    def faults_injected(self) -> list[dict[str, Any]]:
        """The --chaos faults injected in the current (or last) test so far."""
        return self._injector.injected

    def finish(
        self,
        metrics: Metrics,
        peak_agents: int,
        hub_lags: dict[str, HubLag],
        heartbeats: Heartbeats | None = None,
        workers: Workers | None = None,
        stages: list[StageStart] | None = None,
        mcp: McpFacts | None = None,
        probe: ProbeEnding | None = None,
    ) -> Report:
        """Audit the run whose load has stopped and closed its connections; the full report.
        `hub_lags`: each process's event-loop probe, by process; `heartbeats`: on a master, the
        workers' heartbeat gaps; `workers`: in a distributed run, what each worker shipped, and
        the workers that were lost; `mcp`: the test's MCP server, when the agents called their
        tools over MCP (its sessions, when toolclash started it, are the load's sessions);
        `probe`: how the run ended, when it is a capacity probe (its `probe` section)."""
        run, self._run = self._run, None
        faults = self._injector.stop() if self.settings.chaos else []
        samples = self._sampler.stop()
        # Before the audits, which drain to the end themselves: two drains must not overlap.
        self._drainer.stop()
        run["duration_s"] = time.monotonic() - self._started
        run["agents"] = max(run["agents"], peak_agents)
        sessions = load_application_prefix(self.settings.schema) if mcp is None else mcp.sessions_prefix
        sessions_left = None if sessions is None else self._session.run(partial(
            wait_for_sessions_to_end, application_prefix=sessions, timeout_s=_SESSIONS_END_TIMEOUT_S))
        final = self._session.run(database_counters)
        server_counters: ServerCounters = {**{name: final[name] - self._baseline[name] for name in final},
                                           "deadlock_timeout": self.deadlock_timeout,
                                           "load_sessions_left": sessions_left, **summarize(samples)}
        if self.settings.timeseries_csv:
            write_csv(samples, self.settings.timeseries_csv)
        audits = {}
        for scenario in self.settings.scenarios:
            audits.update(scenario.audits(self.settings.params))
        # An audit cut short by a lost connection runs again whole, on a new session: the audits
        # only read, but for the outbox relay and the drains of Redis, which are idempotent.
        audited: set[str] = set()
        # The tools audits asked for but could not compare by identity: their op ids were not stored.
        unjudged: set[str] = set()
        audit_notes: list[dict[str, str]] = []
        not_stored: dict[str, Finding] = {}  # by audit: one whose identity checks had no op id to compare

        def run_audit(conn: psycopg.Connection, name: str, audit: Any, noted_before: int) -> list[Any]:
            del audit_notes[noted_before:]  # an audit cut short and run again notes once
            asked: set[str] = set()
            ctx = self._context(conn, metrics, asked, audit_notes)
            try:
                checks: list[Any] = audit(ctx)
            except OpIdsNotStored as exc:
                not_stored[name] = evidence.op_ids_not_stored(name, exc, asked & set(metrics.tools))
                unjudged.update(asked)
                checks = []
            audited.update(asked)
            unjudged.update(ctx.not_by_identity)
            return checks

        checks = []
        for name, audit in audits.items():
            checks += self._session.run(partial(run_audit, name=name, audit=audit, noted_before=len(audit_notes)))
        # On kept data a check that needs to know what the data held before the run (a sum, a
        # balance, every row a call's) is not judged: its baseline would have to be read from the
        # data it audits. The report names it, never counts it held.
        not_judged = [check.name for check in checks if not check.scoped] if self.kept else []
        if self.kept:
            checks = [check for check in checks if check.scoped]
        measured = build_report(
            metrics=metrics,
            server_counters=server_counters,
            checks=checks,
            run=run,
            servers=[{"kind": s.kind, "version": s.version, "where": s.where, "origin": s.origin,
                      "description": s.describe()} for s in self._servers],
            timeseries=samples,
            transport=transport_section(metrics, mcp),
        )
        hub = hub_section(hub_lags, samples, self.settings.sample_interval_s, heartbeats)
        problems = evidence.evidence_problems(metrics, workers, sessions_left or 0) + list(not_stored.values())
        if workers is not None:
            problems += evidence.settings_problems(workers["settings"], run["settings_fingerprint"])
        if self._redis_claim.lost:
            problems.append({"kind": "keys_lost", "detail": f"another run took the Redis keys {self._redis_claim.key}:*"
                                                            " during this one: their data is not this run's"})
        # What the reader must know but the verdict does not rest on: the figures are still the run's.
        notes = [note] if (note := hub_note(hub)) else []
        if mcp is not None and mcp.server == "user":
            notes += evidence.user_server_notes(self.settings)
        if claimed_again := self._redis_claim.take_claimed_again():
            notes.append({"kind": "keys_claimed_again",
                          "detail": f"the hold on the Redis keys {self._redis_claim.key}:* was gone {claimed_again}"
                                    " time(s) and taken again: Redis restarted without its data, or the hold expired"
                                    " while Redis was unreachable; what Redis lost of the run is for the audits"})
        judged: Evidence = {"ok": not problems, "problems": problems, "notes": notes + audit_notes}
        sla_results = sla.evaluate(self.settings.sla_rules, measured, self.settings.scopes)
        verdict, exit_code = evidence.decide(problems, measured["audit"]["ok"], sla_results)
        report: Report = {
            **measured,
            "baseline": self.settings.params.baseline.as_dict(),
            # A tool no audit compared by operation id (none asked, or its op ids were not stored where
            # its calls wrote): its calls' effects are unchecked, which the reader must see rather
            # than take the audit's "ok" for them too.
            "not_audited_by_identity": sorted(set(metrics.tools) - (audited - unjudged)),
            "faults": faults,
            "hub": hub,
            "settings": settings_summary(self.settings),
            "evidence": judged,
            "sla": sla_results,
            "verdict": verdict,
            "exit_code": exit_code,
        }
        # The sections only some runs have come last.
        if workers is not None:
            report["workers"] = workers
        if stages:
            report["stages"] = stage_reports(metrics, stages, time.monotonic(), self.settings.sla_rules,
                                             self.settings.scopes, self.settings.isolation, measured["transport"])
        if probe is not None:
            report["probe"] = probe_section(metrics, probe, self.settings, measured["transport"],
                                            scoped=[check.name for check in checks] if self.kept else [],
                                            not_judged=not_judged)
        # A failed audit's data is the evidence of what went wrong: the next run must not wipe it
        # unless told --reset.
        self._session.run(partial(run_schema.finish_run, schema=self.settings.schema, audit_ok=report["audit"]["ok"]))
        return report

    def close(self) -> None:
        self._injector.close()
        self._redis_claim.release()
        self._redis.close()
        self._session.close()
