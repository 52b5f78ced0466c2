"""The connection pool every tool borrows from, and the session settings of its connections."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import IsolationLevel, sql
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

__all__ = ["ISOLATION_LEVELS", "SessionSettings", "open_pool", "load_application_name", "load_application_prefix"]

log = logging.getLogger(__name__)

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


def open_pool(dsn: str, settings: SessionSettings, *, size: int, timeout_s: float) -> ConnectionPool:
    """Open a pool of exactly `size` connections, all connected before the first call, so
    that connection set-up is never measured as pool wait."""
    pool = ConnectionPool(
        dsn,
        min_size=size,
        max_size=size,
        timeout=timeout_s,
        kwargs={"application_name": load_application_name(settings.schema, settings.process)},
        configure=settings.configure,
        open=False,
        name=f"toolclash:{settings.schema}",
    )
    pool.open(wait=True, timeout=max(30.0, timeout_s))
    return pool
