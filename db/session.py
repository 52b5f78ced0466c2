"""Sessions of the harness's own that outlive a lost connection.

The coordinator, the server sampler, the fault injector and the audits each work on one
PostgreSQL session of their own (and on Redis beside it). A connection dies in production, and
on purpose under --chaos: a backend terminated, a Redis client killed, a server restarted. The
run must not lose its verdict to that, so their work runs through `Session.run`, which does it
again, whole, on a new connection, until it is done or the servers stayed unreachable for
RECONNECT_LIMIT_S. Work run this way must be safe to run twice: read-only, or idempotent.

"Lost" is decided from the exception's class and psycopg's own `broken` flag, never from
message text (which changes with the server's version and locale).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import gevent
import psycopg
import redis.exceptions
from psycopg import errors as pg_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from db.connect import CONNECT_TIMEOUT_S

__all__ = ["RECONNECT_LIMIT_S", "SEND_ONCE", "RedisLost", "Session", "SessionLost", "connection_lost"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a server may stay unreachable before the run gives up (exit code 2). Long enough for
# a restart or a failover; short enough that a run against a dead server still ends.
RECONNECT_LIMIT_S = 30.0
# Pauses between two tries: short at first (a killed backend is replaced at once), doubling up
# to a ceiling (a restarting server is not hammered).
_FIRST_PAUSE_S = 0.05
_MAX_PAUSE_S = 2.0

# The load's Redis client sends each command once. A command whose connection is lost in flight
# may have run (a Lua script applied, a job queued): sent again, it could be applied twice, so
# the call is reported indeterminate instead. A command that was never sent is not affected:
# redis-py's pool finds a connection killed while idle dead before using it, and reconnects.
SEND_ONCE = Retry(NoBackoff(), 0)

# The server ended the session: 57P01 terminated (pg_terminate_backend), 57P02 crash, 57P03 not
# accepting connections yet. Lost, whatever state psycopg left the connection in.
_SERVER_ENDED = (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)
_REDIS_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class SessionLost(psycopg.OperationalError):
    """A session could not be had back: PostgreSQL stayed unreachable past the limit, or what the
    session held (the schema's lock) went to another run meanwhile. An OperationalError, so that
    whoever handles the server's errors handles this one; the message is one line."""


class RedisLost(redis.exceptions.ConnectionError):
    """Redis stayed unreachable past the limit; the message is one line."""


def connection_lost(exc: BaseException, conn: psycopg.Connection | None) -> bool:
    """Whether `exc` means a connection was lost or could not be made (rather than the work
    failing). `conn`: the PostgreSQL connection the work ran on, None when none could be opened."""
    if isinstance(exc, (SessionLost, RedisLost)):
        return False  # already given up on
    if isinstance(exc, _REDIS_LOST + _SERVER_ENDED):
        return True
    # An OperationalError on a healthy connection (a cancelled statement) is the work's own.
    return isinstance(exc, psycopg.OperationalError) and (conn is None or conn.broken)


class Session:
    """One autocommit PostgreSQL session of the harness's own, opened again when lost.

    `on_connect(conn)` runs on each new connection before any work (the coordinator re-claims
    the schema's advisory lock there: the lock went with the lost session).
    """

    def __init__(
        self,
        dsn: str,
        application_name: str,
        *,
        on_connect: Callable[[psycopg.Connection], None] | None = None,
        limit_s: float = RECONNECT_LIMIT_S,
    ) -> None:
        self._dsn = dsn
        self.application_name = application_name[:63]
        self._on_connect = on_connect
        self._limit_s = limit_s
        self._conn: psycopg.Connection | None = None

    def open(self) -> psycopg.Connection:
        """Connect now, once: the first connection of a run is not retried (a server that cannot
        be reached at the start is the run's configuration, reported at once)."""
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name=self.application_name)
        try:
            if self._on_connect is not None:
                self._on_connect(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """`work(conn)`, run again whole on a new connection (after a pause) each time a
        connection it uses is lost, until it returns. Raises SessionLost or RedisLost when the
        servers stayed unreachable for the limit; any other error of the work at once."""
        lost_since: float | None = None
        pause = _FIRST_PAUSE_S
        while True:
            conn = None
            try:
                # psycopg marks a lost connection closed (and broken).
                conn = self._conn if self._conn is not None and not self._conn.closed else self.open()
                return work(conn)
            except (psycopg.Error, redis.exceptions.RedisError) as exc:
                if not connection_lost(exc, conn):
                    raise
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    log.info("%s: connection lost (%s), running its work again", self.application_name,
                             type(exc).__name__)
                if now - lost_since >= self._limit_s:
                    raise self._given_up(exc) from exc
                gevent.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE_S)

    def _given_up(self, exc: BaseException) -> Exception:
        redis_lost = isinstance(exc, redis.exceptions.RedisError)
        server, lost = ("Redis", RedisLost) if redis_lost else ("PostgreSQL", SessionLost)
        last = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return lost(f"{server} unreachable for {self._limit_s:g} s (session {self.application_name}): {last}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
