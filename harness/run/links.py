"""How a process's agents reach their tools: one class per transport, each owning what its
adapter needs and nothing of the other's. In process (`InProcessLink`): a PostgreSQL pool and a
Redis client, whose pool the load samples and checks at rest. Over MCP (`McpLink`): one MCP client
with its connections sized for the process's agents, and a session per agent, opened when the
agent starts and closed (DELETE) when it stops; the pool is the tool server's and is not measured
here (the report says so).

The load (harness.run.load) opens one link per test and speaks to it through `Link` only."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import gevent
import psycopg
import redis
from locust.event import EventHook
from psycopg_pool import PoolTimeout

from db.pool import PoolNotOpened, SessionSettings, load_application_name, open_pool
from db.session import SEND_ONCE, connection_lost
from harness.config.settings import Settings
from harness.watch.metrics import Metrics
from transport.call_record import CallRecord
from transport.in_process import ToolAdapter
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient, McpUnavailable

__all__ = ["InProcessLink", "Link", "McpLink"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0
_AS_MANY_AS_AGENTS_WANT = 2**31 - 1


class Link(Protocol):
    # The distribution a call's waits for a connection are recorded into (metrics.Metrics.record).
    waits: str

    @property
    def adapter(self) -> ToolAdapter | McpToolAdapter: ...

    def open(self, agents: int) -> dict | None:
        """Ready for `agents` agents; None, or what kept the link from opening (nothing is left open)."""

    def open_agent(self, agent_id: str) -> None: ...

    def close_agent(self, agent_id: str) -> None: ...

    def pool_sample(self) -> dict | None:
        """The pool's own view now (connections, free ones, requests waiting), where the load has one."""

    def close(self, metrics: Metrics, abandoned: list[CallRecord]) -> None:
        """Close every connection, with the agents stopped and `abandoned` calls reported
        indeterminate; what the link saw as it closed goes to `metrics`."""


class InProcessLink:
    waits = "pool_wait"

    def __init__(self, settings: Settings, process_index: int, pg_dsn: str, redis_url: str,
                 call_finished: EventHook, call_started: EventHook) -> None:
        self._settings = settings
        self._process_index = process_index
        self._pg_dsn = pg_dsn
        self._redis_url = redis_url
        self._hooks = call_finished, call_started
        self._size = 0
        self._adapter: ToolAdapter | None = None

    @property
    def adapter(self) -> ToolAdapter:
        assert self._adapter is not None, "the link is open"
        return self._adapter

    def open(self, agents: int) -> dict | None:
        """The pool (every connection ready) and the Redis client, and their adapter."""
        settings = self._settings
        self._size = settings.pool_size_for(agents)
        session = SessionSettings(schema=settings.schema, isolation=settings.isolation,
                                  deadlock_timeout_ms=settings.deadlock_timeout_ms,
                                  lock_timeout_ms=settings.lock_timeout_ms, process=self._process_index)
        try:
            self._pool = open_pool(self._pg_dsn, session, size=self._size, timeout_s=settings.pool_timeout_s)
        except PoolNotOpened as exc:
            return {"process": self._process_index, "kind": exc.kind, "detail": exc.detail}
        # As many connections as agents want (each holds at most one at a time, opened when first
        # needed): redis-py's pool stops at 100 when given no number, and its error for the 101st
        # agent is a ConnectionError, which would count as a lost connection.
        # Named like the load's PostgreSQL sessions (--chaos redis-kill finds them by it); each
        # command sent once (see db.session.SEND_ONCE: a resent script could apply twice).
        self._redis = redis.Redis.from_url(self._redis_url, max_connections=_AS_MANY_AS_AGENTS_WANT, retry=SEND_ONCE,
                                           client_name=load_application_name(settings.schema, self._process_index))
        self._adapter = ToolAdapter(self._pool, self._redis, settings.retry, settings.tool_work, *self._hooks)
        return None

    def open_agent(self, agent_id: str) -> None:
        pass

    def close_agent(self, agent_id: str) -> None:
        pass

    def pool_sample(self) -> dict | None:
        stats = self._pool.stats()
        return {"size": stats["connections"], "available": stats["available"], "waiting": stats["waiting"]}

    def close(self, metrics: Metrics, abandoned: list[CallRecord]) -> None:
        metrics.findings.append(self._at_rest(len(abandoned)))
        self._pool.close()
        self._redis.close()

    def _at_rest(self, calls_in_flight: int) -> dict:
        """With every agent stopped: does the pool hold all its connections again, and is any of
        the load's sessions still idle in a transaction?"""
        stats = self._pool.wait_until_at_rest(DRAIN_TIMEOUT_S)
        return {
            "process": self._process_index,
            "size": self._size,
            "connections": stats["connections"],
            "available": stats["available"],
            "idle_in_transaction": self._sessions_idle_in_transaction(),
            # Calls not finished when the load gave up waiting: they still hold their connections.
            "calls_in_flight": calls_in_flight,
        }

    def _sessions_idle_in_transaction(self) -> int | None:
        """The load's sessions idle in a transaction now; None when no connection could ask. A
        connection of the pool killed while it rested (--chaos) is replaced, and asked again."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            conn = None
            try:
                with self._pool.connection(DRAIN_TIMEOUT_S) as conn:
                    return conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                        " AND datname = current_database() AND state LIKE 'idle in transaction%%'",
                        (load_application_name(self._settings.schema, self._process_index),),
                    ).fetchone()[0]
            except (psycopg.Error, PoolTimeout) as exc:
                if not (isinstance(exc, PoolTimeout) or connection_lost(exc, conn)):
                    raise
                if time.monotonic() >= deadline:
                    log.warning("could not ask the server for idle sessions of process %d: %s",
                                self._process_index, type(exc).__name__)
                    return None
                gevent.sleep(0.05)


class McpLink:
    # Where an MCP call's waits for one of the client's HTTP connections go: not the pool's waits.
    waits = "mcp_connection_wait"

    def __init__(self, settings: Settings, process_index: int, mcp_url: str,
                 call_finished: EventHook, call_started: EventHook) -> None:
        self._settings = settings
        self._process_index = process_index
        self._url = mcp_url
        self._hooks = call_finished, call_started
        self._adapter: McpToolAdapter | None = None

    @property
    def adapter(self) -> McpToolAdapter:
        assert self._adapter is not None, "the link is open"
        return self._adapter

    def open(self, agents: int) -> dict | None:
        """The MCP client, connected, and its adapter."""
        # A connection per call the agents run at once (their turns' calls).
        self._client = McpClient(self._settings.mcp.client_settings(self._url, self._settings.calls_at_once(agents)))
        try:
            self._client.connect()
        except McpUnavailable as exc:
            self._client.close()
            return {"process": self._process_index, "kind": "mcp_unavailable", "detail": str(exc)}
        self._adapter = McpToolAdapter(self._client, self._settings.retry, *self._hooks)
        return None

    def open_agent(self, agent_id: str) -> None:
        """Its session opened now, so that no call's time holds the handshake."""
        self.adapter.open_session(agent_id)

    def close_agent(self, agent_id: str) -> None:
        self.adapter.close_session(agent_id)

    def pool_sample(self) -> dict | None:
        return None

    def close(self, metrics: Metrics, abandoned: list[CallRecord]) -> None:
        self.adapter.close()  # the sessions of agents not seen to stop
        client = self._client
        client.close()
        metrics.count_transport({
            "sessions_opened": client.sessions_opened, "sessions_renewed": client.sessions_renewed,
            "sessions_closed": client.sessions_closed, "json_replies": client.replies["json"],
            "event_stream_replies": client.replies["event-stream"]})
