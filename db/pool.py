"""The connection pool every tool borrows from, and the session settings of its connections."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from time import monotonic
from typing import cast

import gevent
import gevent.lock
import psycopg
from psycopg import IsolationLevel, sql
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from db.hub_wait import HubWaitConnection

__all__ = [
    "ISOLATION_LEVELS",
    "AgentPool",
    "PoolNotOpened",
    "SessionSettings",
    "open_pool",
    "load_application_name",
    "load_application_prefix",
]

log = logging.getLogger(__name__)

# Opening 100 connections takes about a second here.
_OPEN_TIMEOUT_S = 15.0
_PROBE_TIMEOUT_S = 4

ISOLATION_LEVELS = {
    "read_committed": IsolationLevel.READ_COMMITTED,
    "repeatable_read": IsolationLevel.REPEATABLE_READ,
    "serializable": IsolationLevel.SERIALIZABLE,
}


def load_application_prefix(schema: str) -> str:
    """How the application_name of every load session of a run starts, so the coordinator can
    find them in pg_stat_activity (one schema is used by one run at a time: see db.schema)."""
    return f"toolclash-load:{schema}:"


def load_application_name(schema: str, process: int = 0) -> str:
    """The application_name of one process's load sessions."""
    name = f"{load_application_prefix(schema)}{process}"
    if len(name) > 63:  # PostgreSQL would truncate it, and the prefix would no longer find it
        raise ValueError(f"schema name too long for an application_name: {schema!r}")
    return name


@dataclass(frozen=True)
class SessionSettings:
    """What every harness session runs with."""

    schema: str
    isolation: str = "read_committed"
    deadlock_timeout_ms: int | None = None
    lock_timeout_ms: int = 0
    process: int = 0  # which Locust process: each one's sessions are told apart by application_name

    def configure(self, conn: psycopg.Connection) -> None:
        """The pool's `configure=` callback: run once on each new connection."""
        conn.autocommit = True
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self.lock_timeout_ms}ms",))
        if self.deadlock_timeout_ms is not None:
            self.try_set_deadlock_timeout(conn)
        conn.autocommit = False
        conn.isolation_level = ISOLATION_LEVELS[self.isolation]

    def try_set_deadlock_timeout(self, conn: psycopg.Connection) -> bool:
        """Set deadlock_timeout on an autocommit session; False when the role may not.

        deadlock_timeout is a superuser setting (or granted with GRANT SET in PostgreSQL 15+),
        so a plain role keeps the server's value.
        """
        try:
            conn.execute(
                "SELECT set_config('deadlock_timeout', %s, false)", (f"{self.deadlock_timeout_ms}ms",)
            )
        except pg_errors.InsufficientPrivilege:
            return False
        return True


class PoolNotOpened(Exception):
    """The pool could not open all its connections. `kind` "server_refused": the server refuses
    connections (too many clients, a role's limit, unreachable), the run's configuration;
    "load_failed": a session cannot be set up. `detail` is one line."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


# Stopped agents: Locust kills their greenlets, and GreenletExit is a BaseException.
_STOPPED = (gevent.GreenletExit, KeyboardInterrupt, SystemExit)


class AgentPool:
    """The load's pool, with the agents queueing in front of it rather than inside it.

    psycopg_pool forgets a client waiting in `getconn` only on an `Exception`; an agent stopped
    there by Locust (GreenletExit) stays in its queue, and the next connection given back is handed
    to the dead agent and never seen again (the pool then reports connections missing at the end).
    So agents wait for one of `size` slots on a gevent semaphore, which forgets a killed waiter,
    and only then take a connection, which is ready unless the pool is replacing a broken one.
    """

    def __init__(self, pool: ConnectionPool, size: int, timeout_s: float) -> None:
        self.size = size
        self._pool = pool
        self._timeout_s = timeout_s
        self._slots = gevent.lock.BoundedSemaphore(size)
        self.waiting = 0  # agents waiting for a slot now

    def getconn(self) -> psycopg.Connection:
        """A connection within the pool timeout, or PoolTimeout."""
        deadline = monotonic() + self._timeout_s
        # Most calls find a slot and a connection ready: taken without a timer or a greenlet,
        # and without yielding to the hub, so no agent can be stopped half-way.
        if self._slots.acquire(blocking=False):
            if self._pool.get_stats()["pool_available"]:
                return self._pool.getconn()
        else:
            self._wait_for_slot()
        # The pool may still make us wait (a broken connection being replaced): wait in a
        # greenlet of our own that is never killed, and give back what it gets if we are.
        taker = gevent.spawn(self._pool.getconn, max(0.0, deadline - monotonic()))
        try:
            return taker.get()
        except _STOPPED:
            # Called back only if the taker returned: its value is the connection.
            taker.link_value(lambda done: self.putconn(cast("psycopg.Connection", done.value)))
            taker.link_exception(lambda _: self._slots.release())
            raise
        except BaseException:
            self._slots.release()
            raise

    def _wait_for_slot(self) -> None:
        self.waiting += 1
        try:
            got_slot = self._slots.acquire(timeout=self._timeout_s)
        finally:
            self.waiting -= 1
        if not got_slot:
            raise PoolTimeout(f"no connection free within {self._timeout_s:g} s")

    def putconn(self, conn: psycopg.Connection) -> None:
        try:
            self._pool.putconn(conn)
        finally:
            self._slots.release()

    def connection(self, timeout_s: float) -> AbstractContextManager[psycopg.Connection]:
        """A connection for the harness's own checks, straight from the pool."""
        return self._pool.connection(timeout=timeout_s)

    def stats(self) -> dict[str, int]:
        """Connections, free ones, and requests waiting (for a slot, or inside the pool)."""
        stats = self._pool.get_stats()
        return {
            "connections": stats.get("pool_size", 0),
            "available": stats.get("pool_available", 0),
            "waiting": self.waiting + stats.get("requests_waiting", 0),
        }

    def wait_until_at_rest(self, timeout_s: float) -> dict[str, int]:
        """Wait until every connection is back and free (the pool returns and replaces them in
        background tasks); the stats at that moment, or at the timeout."""
        deadline = monotonic() + timeout_s
        while True:
            stats = self.stats()
            if (stats["connections"] == stats["available"] == self.size) or monotonic() >= deadline:
                return stats
            gevent.sleep(0.05)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> AgentPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_pool(dsn: str, settings: SessionSettings, *, size: int, timeout_s: float) -> AgentPool:
    """Open a pool of exactly `size` connections, all connected before the first call, so
    that connection set-up is never measured as pool wait. Raises PoolNotOpened when the server
    would not give them all (the pool is closed then)."""
    pool: ConnectionPool[psycopg.Connection] = ConnectionPool(
        dsn,
        connection_class=HubWaitConnection,  # psycopg's waits on gevent's hub, for less CPU a statement
        min_size=size,
        max_size=size,
        timeout=timeout_s,
        kwargs={"application_name": load_application_name(settings.schema, settings.process)},
        configure=settings.configure,
        open=False,
        name=f"toolclash:{settings.schema}",
    )
    pool.open(wait=False)
    deadline = monotonic() + _OPEN_TIMEOUT_S
    # Not pool.open(wait=True): a server that refuses connections would keep it retrying until
    # the timeout; the first refused connection is answer enough.
    while True:
        stats = pool.get_stats()
        if stats.get("pool_available", 0) >= size:
            return AgentPool(pool, size, timeout_s)
        if stats.get("connections_errors", 0) or monotonic() >= deadline:
            try:
                # Asked while the pool still holds what it got, so the answer is the server's now.
                raise _why_not_opened(dsn, settings, size, stats.get("pool_available", 0))
            finally:
                pool.close()
        gevent.sleep(0.02)


def _why_not_opened(dsn: str, settings: SessionSettings, size: int, opened: int) -> PoolNotOpened:
    """Learn on one connection of our own why the pool could not open."""
    need = f"load process {settings.process} needs {size} connections (--pool-size), got {opened}"
    try:
        with psycopg.connect(dsn, connect_timeout=_PROBE_TIMEOUT_S) as conn:
            settings.configure(conn)
    except psycopg.OperationalError as exc:
        return PoolNotOpened("server_refused", f"PostgreSQL refused the load's connections ({type(exc).__name__}:"
                             f" {_first_line(exc)}): {need}; lower --pool-size or raise the server's limits")
    except psycopg.Error as exc:
        return PoolNotOpened("load_failed", f"the load's sessions cannot be set up: {type(exc).__name__}:"
                             f" {_first_line(exc)}")
    return PoolNotOpened("server_refused", f"PostgreSQL gave the pool too few connections in {_OPEN_TIMEOUT_S:g} s:"
                         f" {need}; lower --pool-size or raise the server's limits")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
