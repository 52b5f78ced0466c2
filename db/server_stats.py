"""What the server itself counted: pg_stat_database for the run's database."""

from __future__ import annotations

import time

import psycopg

__all__ = ["DATABASE_COUNTERS", "database_counters", "wait_for_sessions_to_end"]

DATABASE_COUNTERS = ("deadlocks", "xact_commit", "xact_rollback", "conflicts")


def database_counters(conn: psycopg.Connection) -> dict[str, int]:
    """The cumulative counters of the current database, fresh (not a cached snapshot)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        f"SELECT {', '.join(DATABASE_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return {name: int(value) for name, value in zip(DATABASE_COUNTERS, row, strict=True)}


def wait_for_sessions_to_end(conn: psycopg.Connection, application_prefix: str, timeout_s: float) -> int:
    """Wait until no backend whose application_name starts with `application_prefix` is left;
    the number still there at the end.

    A backend publishes its statistics at most once a second, and at the latest when it exits:
    the run's final figures are complete only once the load's sessions are gone.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE left(application_name, length(%(p)s)) = %(p)s AND datname = current_database()",
            {"p": application_prefix},
        ).fetchone()[0]
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
