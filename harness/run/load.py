"""The load side of a process that runs agents (the local runner, or a worker): its pool, its
Redis client, the adapter, and the metrics its calls are recorded into; the agents find it with
`load_of` (they need nothing else of the process's role).

Over MCP (--mcp-url, --mcp-server) the load has no pool and no Redis client: one MCP client (its
connections sized for this process's agents), the MCP adapter, and a session per agent, opened
when the agent starts and closed (DELETE) when it stops. What the in-process load samples of its
pool is the tool server's own there, and is not measured (the report says so)."""

from __future__ import annotations

import itertools
import logging
import random
import time
import weakref
from bisect import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import psycopg
import redis
from locust.env import Environment
from locust.event import EventHook
from psycopg_pool import PoolTimeout

from db.pool import PoolNotOpened, SessionSettings, load_application_name, open_pool
from db.session import SEND_ONCE, connection_lost
from db.tool import Tool
from harness.config.settings import Settings
from harness.run.locust_requests import told_to
from harness.watch.metrics import Metrics
from transport.call_record import Outcome
from transport.in_process import ToolAdapter
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient, McpUnavailable

if TYPE_CHECKING:
    from harness.output.history import History

__all__ = ["Load", "Toolbox", "load_of", "new_load"]

log = logging.getLogger(__name__)

_DRAIN_TIMEOUT_S = 10.0
_POOL_SAMPLE_INTERVAL_S = 1.0
_AS_MANY_AS_AGENTS_WANT = 2**31 - 1
# Where an MCP call's waits for one of the client's HTTP connections go: not the pool's waits.
_MCP_CONNECTION_WAIT = "mcp_connection_wait"


_LOADS: weakref.WeakKeyDictionary[Environment, Load] = weakref.WeakKeyDictionary()


def new_load(environment: Environment, settings: Settings, process_index: int, history: History | None) -> Load:
    """The load of the agents Locust runs in this process (`load_of` finds it): Locust is told of
    each call, the --history file too, and the metrics count the agents' own errors."""
    load = Load(settings, environment.events.request, process_index)
    load.agents_now = lambda: environment.runner.user_count
    environment.events.user_error.add_listener(load.on_agent_error)
    if history is not None:
        load.call_started.add_listener(history.invoked)
        load.call_finished.add_listener(history.completed)
    _LOADS[environment] = load
    return load


def load_of(environment: Environment) -> Load:
    """The load the agents of `environment` run on."""
    return _LOADS[environment]


class Toolbox:
    """The tools of the selected scenarios, picked by weight."""

    def __init__(self, settings: Settings) -> None:
        weighted = [wt for scenario in settings.scenarios for wt in scenario.tools(settings.params)]
        self.tools = [wt.tool for wt in weighted]
        self._cumulative = list(itertools.accumulate(wt.weight for wt in weighted))
        self._total = float(self._cumulative[-1]) if self._cumulative else 0.0

    def pick(self, rng: random.Random) -> Tool:
        # What rng.choices(self.tools, cum_weights=self._cumulative)[0] computes (one random()
        # drawn, so the same seed picks the same tools), without its checks and list on every call.
        return self.tools[bisect(self._cumulative, rng.random() * self._total, 0, len(self.tools) - 1)]


class Load:
    def __init__(self, settings: Settings, request_event: EventHook, process_index: int):
        self.settings = settings
        # Known at once in a local run; a worker learns them from the master at each test start.
        self.pg_dsn: str | None = None
        self.redis_url: str | None = None
        # The MCP server's URL, over MCP: the judging side's, or the master's, at each test start.
        self.mcp_url: str | None = None
        self.toolbox = Toolbox(settings)
        self.metrics = Metrics()
        # The project's own hooks, which the adapter fires (transport.hooks): each call's CallRecord as it
        # starts (before its first attempt), and once it has finished, with every retry and its
        # cause. Locust's EventHook, so that a listener's exception is handled as Locust handles
        # any other's. Locust is told of each call first (its `request` event), then the metrics.
        self.call_started = EventHook()
        self.call_finished = EventHook()
        self.call_finished.add_listener(told_to(request_event))
        self.call_finished.add_listener(self._record)
        # The load shape's current stage (None without --shape): calls are also counted per stage.
        self.stage: int | None = None
        self.adapter: ToolAdapter | McpToolAdapter | None = None
        self._mcp: McpClient | None = None
        self._waits = "pool_wait"
        self._pool = None
        self._redis: redis.Redis | None = None
        self._agent_numbers = itertools.count(1)
        self._seed = 0
        self._process_index = process_index
        self._pool_size = 0
        self._sampler: gevent.Greenlet | None = None
        self._started = 0.0
        # This process's running totals since its test started: unlike `metrics`, never taken
        # by a shipment (the charts' rates are their differences from one second to the next).
        self._totals = dict.fromkeys(("calls", "attempts", "conflicts"), 0)
        # How many agents run in this process now (Locust's runner tells: set by new_load).
        self.agents_now: Callable[[], int] = lambda: 0

    def use(self, settings: Settings) -> None:
        """The settings of the next test (its per-run options may differ from the last one's)."""
        self.settings = settings
        self.toolbox = Toolbox(settings)

    def _record(self, record) -> None:
        self.metrics.record(record, self._waits)
        self._totals["attempts"] += record.attempts
        if record.failures:  # most calls have none
            self._totals["conflicts"] += sum(failure.counted_as_conflict for failure in record.failures)
        if record.outcome is not Outcome.INTERRUPTED:
            self._totals["calls"] += 1
        if self.stage is not None:
            self.metrics.stage(self.stage).record(record, self._waits)

    def on_agent_error(self, exception: BaseException, **_: Any) -> None:
        """Locust's `user_error`: an agent's task raised instead of finishing its call."""
        self.metrics.record_agent_error(exception)

    def take_metrics(self) -> Metrics:
        """What was recorded since the last take (a worker ships it to the master)."""
        taken, self.metrics = self.metrics, Metrics()
        return taken

    def next_agent(self) -> tuple[str, random.Random]:
        """A new agent's id, numbered in spawn order on this process from 1 at each test start,
        and its random source: agents of the same id draw the same tools and arguments in every
        test of the same seed."""
        agent_id = f"p{self._process_index}-a{next(self._agent_numbers)}"
        # A str seed is hashed with SHA-512, the same in every process (unlike hash()).
        return agent_id, random.Random(f"{self._seed}:{agent_id}")

    def start(self, agents: int, seed: int) -> dict | None:
        """Open the pool (all its connections ready before the first call) and a fresh Metrics,
        and number the agents from 1 again; None, or what kept the load from starting (also kept
        in the metrics, for the verdict)."""
        self.metrics = Metrics()
        self._totals = dict.fromkeys(self._totals, 0)
        self._seed = seed
        self._agent_numbers = itertools.count(1)
        failure = self._open_mcp(agents) if self.settings.mcp is not None else self._open_pool(agents)
        if failure is not None:
            log.error("toolclash: %s", failure["detail"])
            self.metrics.load_failures.append(failure)
            return failure
        self._started = time.monotonic()
        self._sampler = gevent.spawn(self._sample_pool)
        return None

    def _open_mcp(self, agents: int) -> dict | None:
        """The MCP client, connected, and its adapter; None, or what kept them from starting."""
        self._waits = _MCP_CONNECTION_WAIT
        self._mcp = McpClient(self.settings.mcp.client_settings(self.mcp_url, agents))
        try:
            self._mcp.connect()
        except McpUnavailable as exc:
            self._mcp.close()
            self._mcp = None
            return {"process": self._process_index, "kind": "mcp_unavailable", "detail": str(exc)}
        self.adapter = McpToolAdapter(self._mcp, self.settings.retry, self.call_finished, self.call_started)
        return None

    def _open_pool(self, agents: int) -> dict | None:
        """The pool (every connection ready) and the Redis client, and their adapter; None, or
        what kept them from starting."""
        self._waits = "pool_wait"
        size = self._pool_size = self.settings.pool_size_for(agents)
        session = SessionSettings(
            schema=self.settings.schema,
            isolation=self.settings.isolation,
            deadlock_timeout_ms=self.settings.deadlock_timeout_ms,
            lock_timeout_ms=self.settings.lock_timeout_ms,
            process=self._process_index,
        )
        try:
            self._pool = open_pool(self.pg_dsn, session, size=size, timeout_s=self.settings.pool_timeout_s)
        except PoolNotOpened as exc:
            return {"process": self._process_index, "kind": exc.kind, "detail": exc.detail}
        # As many connections as agents want (each holds at most one at a time, opened when first
        # needed): redis-py's pool stops at 100 when given no number, and its error for the 101st
        # agent is a ConnectionError, which would count as a lost connection.
        # Named like the load's PostgreSQL sessions (--chaos redis-kill finds them by it); each
        # command sent once (see db.session.SEND_ONCE: a resent script could apply twice).
        self._redis = redis.Redis.from_url(self.redis_url, max_connections=_AS_MANY_AS_AGENTS_WANT, retry=SEND_ONCE,
                                           client_name=load_application_name(self.settings.schema, self._process_index))
        self.adapter = ToolAdapter(self._pool, self._redis, self.settings.retry, self.settings.tool_work_s,
                                   self.call_finished, self.call_started)
        return None

    def open_agent(self, agent_id: str) -> None:
        """An agent started: over MCP, its session opened now, so that no call's time holds the
        handshake."""
        if isinstance(self.adapter, McpToolAdapter):
            self.adapter.open_session(agent_id)

    def close_agent(self, agent_id: str) -> None:
        """An agent stopped: over MCP, its session closed (DELETE)."""
        if isinstance(self.adapter, McpToolAdapter):
            self.adapter.close_session(agent_id)

    def _sample_pool(self) -> None:
        """The pool's own view, every second: connections, free ones, requests waiting (none over
        MCP: the pool is the tool server's); and the running totals of the calls, for the web
        UI's charts."""
        while True:
            t = round(time.monotonic() - self._started, 3)
            waiting = None
            if self._pool is not None:
                stats = self._pool.stats()
                waiting = stats["waiting"]
                self.metrics.pool_samples.append({
                    "t": t,
                    "process": self._process_index,
                    "size": stats["connections"],
                    "available": stats["available"],
                    "waiting": waiting,
                })
            self.metrics.load_samples.append({"t": t, "process": self._process_index, **self._totals,
                                              "agents": self.agents_now(), "pool_waiting": waiting})
            gevent.sleep(_POOL_SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        """Let calls still in flight finish recording, then close every connection."""
        if self.adapter is None:
            return
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while self.adapter.calls_in_flight and time.monotonic() < deadline:
            gevent.sleep(0.01)
        # Their agents were not seen to end them: each may yet commit, so each is indeterminate.
        abandoned = len(self.adapter.abandon_calls_in_flight())
        if abandoned:
            log.warning("%d tool calls still in flight after %.0f s: reported indeterminate", abandoned,
                        _DRAIN_TIMEOUT_S)
        self._sampler.kill()
        if self._mcp is not None:
            self.adapter.close()  # the sessions of agents not seen to stop
            self._mcp.close()
            self.metrics.count_transport({
                "sessions_opened": self._mcp.sessions_opened, "sessions_renewed": self._mcp.sessions_renewed,
                "sessions_closed": self._mcp.sessions_closed, "json_replies": self._mcp.replies["json"],
                "event_stream_replies": self._mcp.replies["event-stream"]})
            self._mcp = None
        else:
            self.metrics.findings.append(self._pool_at_rest(abandoned))
            self._pool.close()
            self._redis.close()
        self.adapter = None
        self._pool = None

    def _pool_at_rest(self, calls_in_flight: int) -> dict:
        """With every agent stopped: does the pool hold all its connections again, and is any of
        the load's sessions still idle in a transaction?"""
        stats = self._pool.wait_until_at_rest(_DRAIN_TIMEOUT_S)
        return {
            "process": self._process_index,
            "size": self._pool_size,
            "connections": stats["connections"],
            "available": stats["available"],
            "idle_in_transaction": self._sessions_idle_in_transaction(),
            # Calls not finished when the load gave up waiting: they still hold their connections.
            "calls_in_flight": calls_in_flight,
        }

    def _sessions_idle_in_transaction(self) -> int | None:
        """The load's sessions idle in a transaction now; None when no connection could ask. A
        connection of the pool killed while it rested (--chaos) is replaced, and asked again."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while True:
            conn = None
            try:
                with self._pool.connection(_DRAIN_TIMEOUT_S) as conn:
                    return conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                        " AND datname = current_database() AND state LIKE 'idle in transaction%%'",
                        (load_application_name(self.settings.schema, self._process_index),),
                    ).fetchone()[0]
            except (psycopg.Error, PoolTimeout) as exc:
                if not (isinstance(exc, PoolTimeout) or connection_lost(exc, conn)):
                    raise
                if time.monotonic() >= deadline:
                    log.warning("could not ask the server for idle sessions of process %d: %s",
                                self._process_index, type(exc).__name__)
                    return None
                gevent.sleep(0.05)

