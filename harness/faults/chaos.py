"""Faults on purpose (--chaos): prove that the platform loses nothing when connections die.

    --chaos pg-kill:3s,redis-kill:5s:25%,worker-stop:20s
    --mcp-server builtin --chaos mcp-kill:5s

Each fault is KIND:EVERY[:SHARE], injected every EVERY (seconds `s` or milliseconds `ms`) from
the start of the run until the run starts stopping:

    pg-kill      terminate SHARE (default 50 %) of the load's PostgreSQL backends, chosen at random
    redis-kill   CLIENT KILL SHARE (default 50 %) of the load's Redis connections, chosen at random
    worker-stop  tell one worker to die at once (distributed runs only; never the last one left)
    mcp-kill     kill -9 the MCP tool server toolclash started (--mcp-server), and start it again on
                 the same URL (harness.run.mcp_server: the calls it had in flight get no reply)

The injector runs where the verdict is made (the local runner or the master), on a PostgreSQL
session and a Redis client of its own (`toolclash-chaos:<schema>`). It finds its targets by
name: the load's sessions by application_name and the load's Redis clients by client name,
both `toolclash-load:<schema>:<process>`, so it never touches the harness's own sessions,
another run's, or anyone else's. The tool server it kills is the one the run started, by the
callable it is handed (`start`): never a user's server.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import psycopg
import redis
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, Runner

from db.pool import load_application_prefix
from db.session import RedisLost, Session, SessionLost
from harness.watch.background import Background

__all__ = ["MCP_KILL", "PG_KILL", "REDIS_KILL", "WORKER_STOP", "WORKER_STOP_MESSAGE", "BadChaos", "Fault",
           "FaultInjector", "KillToolServer", "NotRestarted", "parse_chaos", "stop_this_worker"]

log = logging.getLogger(__name__)

WORKER_STOP_MESSAGE = "toolclash_worker_stop"  # master -> one worker: die at once (--chaos worker-stop)

PG_KILL = "pg-kill"
REDIS_KILL = "redis-kill"
WORKER_STOP = "worker-stop"
MCP_KILL = "mcp-kill"
_KINDS = (PG_KILL, REDIS_KILL, WORKER_STOP, MCP_KILL)
# The faults that hit one target each time: no share of anything.
_ONE_TARGET = {WORKER_STOP: "stops one worker", MCP_KILL: "kills the one tool server"}

_DEFAULT_SHARE = 0.5
# Faults closer together than this leave the load no time to reconnect between them: the run
# would measure nothing but reconnections.
_MIN_EVERY_S = 0.5
_EVERY = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")
_SHARE = re.compile(r"(\d+(?:\.\d+)?)%")
# How long the backends signalled are waited for: a fault counts the backends the server really
# ended, not those merely signalled.
_TERMINATE_WAIT_S = 1.0
_TERMINATE_POLL_S = 0.01
# A worker stopped on purpose exits with this code (it never says goodbye to the master).
_WORKER_STOP_EXIT_CODE = 1


class BadChaos(ValueError):
    """The --chaos value does not parse; the message says what is wrong, in one line."""


class NotRestarted(Exception):
    """mcp-kill: the tool server was killed, and its replacement did not come up (one line)."""


# mcp-kill: kill the run's tool server and start it again; what was done (`targets`, `hit`,
# `down_s`), or None when there was no server to kill. Raises NotRestarted.
KillToolServer = Callable[[], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Fault:
    kind: str
    every_s: float
    share: float = 1.0  # of the load's connections hit each time (pg-kill, redis-kill; the others: one target)


def parse_chaos(value: str | None, *, distributed: bool) -> tuple[Fault, ...]:
    """The faults of a --chaos value ('' or None: none). `distributed`: the run has workers."""
    if not value:
        return ()
    faults: dict[str, Fault] = {}
    for item in (part.strip() for part in value.split(",")):
        fields = item.split(":")
        if len(fields) not in (2, 3):
            raise BadChaos(f"{item!r}: write kind:every[:share], e.g. pg-kill:3s or redis-kill:500ms:25%")
        kind, every, share = fields[0], fields[1], fields[2] if len(fields) == 3 else None
        if kind not in _KINDS:
            raise BadChaos(f"unknown fault {kind!r}; known: {', '.join(_KINDS)}")
        if kind in faults:
            raise BadChaos(f"{kind} is given twice")
        faults[kind] = Fault(kind, _every_s(item, every), _share(item, kind, share))
        if kind == WORKER_STOP and not distributed:
            raise BadChaos(f"{WORKER_STOP} needs workers: add --processes N (or run --master with --worker)")
    return tuple(faults.values())


def _every_s(item: str, every: str) -> float:
    match = _EVERY.fullmatch(every)
    if match is None:
        raise BadChaos(f"{item!r}: the interval is seconds or milliseconds, e.g. 3s, 2.5s or 500ms")
    seconds = float(match[1]) / (1000.0 if match[2] == "ms" else 1.0)
    if seconds < _MIN_EVERY_S:
        raise BadChaos(f"{item!r}: at most one fault of a kind every {_MIN_EVERY_S:g} s")
    return seconds


def _share(item: str, kind: str, share: str | None) -> float:
    if kind in _ONE_TARGET:
        if share is not None:
            raise BadChaos(f"{item!r}: {kind} {_ONE_TARGET[kind]} each time, it takes no share")
        return 1.0
    if share is None:
        return _DEFAULT_SHARE
    match = _SHARE.fullmatch(share)
    if match is None or not 0 < float(match[1]) <= 100:
        raise BadChaos(f"{item!r}: the share is a percentage above 0 and at most 100, e.g. 50%")
    return float(match[1]) / 100.0


# The load's backends of this database, by application_name prefix.
_LOAD_BACKENDS = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND left(application_name, length(%(prefix)s)) = %(prefix)s
"""
# Signal the chosen ones that are still the load's (a pid is checked again as it is hit: FILTER
# sees only the rows WHERE kept); the pids signalled.
_TERMINATE = """
    SELECT coalesce(array_agg(pid) FILTER (WHERE pg_terminate_backend(pid)), '{}') FROM pg_stat_activity
    WHERE pid = ANY(%(pids)s) AND datname = current_database()
      AND left(application_name, length(%(prefix)s)) = %(prefix)s
"""
_STILL_THERE = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"


class FaultInjector:
    """Injects the run's faults on their schedules; `injected` says what, when and how many."""

    def __init__(self, pg_dsn: str, redis_url: str, schema: str) -> None:
        name = f"toolclash-chaos:{schema}"
        self._faults: tuple[Fault, ...] = ()
        self._session = Session(pg_dsn, name)
        self._redis = redis.Redis.from_url(redis_url, client_name=name)
        self._load_prefix = load_application_prefix(schema)
        self._rng = random.Random()
        self._background = Background()
        self._master: MasterRunner | None = None
        self._stopped_workers: set[str] = set()
        self._kill_tool_server: KillToolServer | None = None
        self.injected: list[dict[str, Any]] = []

    def attach(self, runner: Runner) -> None:
        """Stop injecting as soon as the run starts stopping (Locust's test_stopping, before the
        agents stop and each load checks its pool at rest); worker-stop speaks through the master."""
        self._master = runner if isinstance(runner, MasterRunner) else None
        runner.environment.events.test_stopping.add_listener(lambda **_: self.stop())

    def start(self, started: float, faults: tuple[Fault, ...], kill_tool_server: KillToolServer | None = None) -> None:
        """Inject `faults` from now on; `started` (time.monotonic()) is the run's start, which
        `at_s` counts from. `kill_tool_server`: what mcp-kill does (the run's tool server, which
        the run started)."""
        self._faults = faults
        self._kill_tool_server = kill_tool_server
        self.injected = []
        self._stopped_workers = set()
        self._background.start(self._run, started)

    def stop(self) -> list[dict[str, Any]]:
        """Inject no more (a fault being injected is finished, unless it is still waiting for a
        lost server after a few seconds); what was injected."""
        self._background.stop()
        return self.injected

    def close(self) -> None:
        self.stop()
        self._session.close()
        self._redis.close()

    def _run(self, started: float) -> None:
        due = {fault: fault.every_s for fault in self._faults}  # seconds since the start
        while True:
            fault = min(due, key=due.get)
            if self._background.stopping.wait(max(0.0, started + due[fault] - time.monotonic())):
                return
            at_s = round(time.monotonic() - started, 3)
            try:
                done = self._inject(fault)
            except (SessionLost, RedisLost) as exc:  # the audit will meet the same server, and say so
                log.warning("--chaos %s at %.1f s not injected: %s", fault.kind, at_s, exc)
                done = None
            except NotRestarted as exc:  # the agents' calls fail from now on: the verdict will say so
                log.error("--chaos %s at %.1f s: %s", fault.kind, at_s, exc)
                done = {"targets": 1, "hit": 1}
            if done is not None:
                self.injected.append({"kind": fault.kind, "at_s": at_s, **done})
            due[fault] += fault.every_s

    def _inject(self, fault: Fault) -> dict[str, Any] | None:
        """One fault: how many targets there were and how many it hit; None when there was
        nothing it may hit."""
        if fault.kind == PG_KILL:
            return self._session.run(lambda conn: self._kill_backends(conn, fault.share))
        if fault.kind == REDIS_KILL:
            return self._session.run(lambda conn: self._kill_redis_clients(fault.share))
        if fault.kind == MCP_KILL:
            return self._kill_tool_server() if self._kill_tool_server is not None else None
        return self._stop_a_worker()

    def _pick(self, targets: list[Any], share: float) -> list[Any]:
        return self._rng.sample(targets, math.ceil(share * len(targets)))

    def _kill_backends(self, conn: psycopg.Connection, share: float) -> dict[str, int]:
        pids = [row[0] for row in conn.execute(_LOAD_BACKENDS, {"prefix": self._load_prefix})]
        chosen = self._pick(pids, share)
        signalled = conn.execute(_TERMINATE, {"pids": chosen, "prefix": self._load_prefix}).fetchone()[0]
        deadline = time.monotonic() + _TERMINATE_WAIT_S
        left = len(signalled)
        while left and time.monotonic() < deadline:
            gevent.sleep(_TERMINATE_POLL_S)
            left = conn.execute(_STILL_THERE, (signalled,)).fetchone()[0]
        return {"targets": len(pids), "hit": len(signalled) - left}

    def _kill_redis_clients(self, share: float) -> dict[str, int]:
        clients = [c["id"] for c in self._redis.client_list(_type="normal") if c["name"].startswith(self._load_prefix)]
        killed = sum(self._redis.client_kill_filter(_id=client) for client in self._pick(clients, share))
        return {"targets": len(clients), "hit": killed}

    def _stop_a_worker(self) -> dict[str, Any] | None:
        alive = sorted(worker.id for worker in self._master.clients.all
                       if worker.state in (STATE_RUNNING, STATE_SPAWNING) and worker.id not in self._stopped_workers)
        if len(alive) < 2:  # the last worker keeps running: the run goes on, and ends with a report
            return None
        worker = self._rng.choice(alive)
        self._stopped_workers.add(worker)
        self._master.send_message(WORKER_STOP_MESSAGE, None, client_id=worker)
        log.warning("--chaos %s: told worker %s to die", WORKER_STOP, worker)
        return {"targets": len(alive), "hit": 1, "worker": worker}


def stop_this_worker(environment: Any, msg: Any, **_: Any) -> None:
    """WORKER_STOP_MESSAGE, on a worker: die at once, as a crashed host would: no final shipment,
    no goodbye to the master; the kernel drops its connections."""
    print("toolclash: this worker stops now (--chaos worker-stop)", file=sys.stderr, flush=True)
    os._exit(_WORKER_STOP_EXIT_CODE)
