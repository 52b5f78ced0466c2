"""What the server itself counted: pg_stat_database for the run's database."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from db.rows import one_row

__all__ = ["DATABASE_COUNTERS", "ConnectionRoom", "connection_room", "database_counters", "wait_for_sessions_to_end"]

DATABASE_COUNTERS = ("deadlocks", "xact_commit", "xact_rollback", "conflicts")


def database_counters(conn: psycopg.Connection) -> dict[str, int]:
    """The cumulative counters of the current database, fresh (not a cached snapshot)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = one_row(conn.execute(
        f"SELECT {', '.join(DATABASE_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()"
    ))
    return {name: int(value) for name, value in zip(DATABASE_COUNTERS, row, strict=True)}


def wait_for_sessions_to_end(conn: psycopg.Connection, application_prefix: str, timeout_s: float) -> int:
    """Wait until no backend whose application_name starts with `application_prefix` is left;
    the number still there at the end.

    A backend publishes its statistics at most once a second, and at the latest when it exits:
    the run's final figures are complete only once the load's sessions are gone.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left: int = one_row(conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE left(application_name, length(%(p)s)) = %(p)s AND datname = current_database()",
            {"p": application_prefix},
        ))[0]
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


@dataclass(frozen=True)
class ConnectionRoom:
    """How many more sessions the server takes from an ordinary role, and why."""

    max_connections: int
    reserved: int  # superuser_reserved_connections + reserved_connections (PostgreSQL 16+)
    in_use: int  # client sessions now

    @property
    def free(self) -> int:
        return max(0, self.max_connections - self.reserved - self.in_use)

    def describe(self) -> str:
        return f"max_connections {self.max_connections} - {self.reserved} reserved - {self.in_use} in use"


def connection_room(conn: psycopg.Connection) -> ConnectionRoom:
    """What the server allows now; `conn` counts as in use."""
    row = one_row(conn.execute(
        """SELECT current_setting('max_connections')::int,
                  current_setting('superuser_reserved_connections')::int
                  + coalesce(current_setting('reserved_connections', true)::int, 0),
                  (SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'client backend')"""
    ))
    return ConnectionRoom(*(int(v) for v in row))
