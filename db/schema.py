"""The harness's own schema: its tables, and the run state that guards them.

Everything lives in one schema of the user's database (default `toolclash`); nothing outside
it is read or written. A `run_state` row marks a run in progress: a run that was killed leaves
it set, and the next run refuses to overwrite that data (the evidence of what went wrong)
unless told `--reset`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

__all__ = ["SchemaRefused", "claim", "prepare", "begin_run", "finish_run"]

_TABLES = (
    """CREATE TABLE run_state (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        run_id text NOT NULL,
        status text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    )""",
    """CREATE TABLE accounts (
        id integer PRIMARY KEY,
        balance bigint NOT NULL,
        version bigint NOT NULL DEFAULT 0,
        initial_balance bigint NOT NULL
    )""",
    # One row per acknowledged operation, written in the operation's own transaction.
    """CREATE TABLE ledger (
        op_id uuid PRIMARY KEY,
        tool text NOT NULL,
        agent_id text NOT NULL,
        debit_account integer REFERENCES accounts (id),
        credit_account integer REFERENCES accounts (id),
        amount bigint NOT NULL CHECK (amount > 0),
        recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    # isolation: counters incremented by a naive read-then-write, and the increments acknowledged.
    """CREATE TABLE counters (
        id integer PRIMARY KEY,
        value bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE counter_ops (
        op_id uuid PRIMARY KEY,
        counter_id integer NOT NULL REFERENCES counters (id),
        amount integer NOT NULL
    )""",
    # isolation: two on-call agents per pair, at least one must stay on duty; a row = one off duty.
    # Pairs come from a sequence, two calls each, so every violation stays visible to the audit.
    "CREATE SEQUENCE duty_pair_calls",
    """CREATE TABLE duty_leave (
        pair_id bigint NOT NULL,
        slot smallint NOT NULL,
        op_id uuid NOT NULL UNIQUE,
        PRIMARY KEY (pair_id, slot)
    )""",
    # cross_service: usage charged in PostgreSQL, to be applied to Redis's counters.
    """CREATE TABLE usage_outbox (
        op_id uuid PRIMARY KEY,
        agent_id text NOT NULL,
        amount bigint NOT NULL,
        committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        applied_at timestamptz
    )""",
)

_RUN_TABLES = ("ledger", "usage_outbox", "counter_ops", "counters", "duty_leave", "accounts")


class SchemaRefused(Exception):
    """The schema cannot be used for this run; the message says why and what to do."""


def claim(conn: psycopg.Connection, schema: str) -> None:
    """Hold a session advisory lock on the schema's name, so two runs never share its tables.

    `conn` must stay open for the whole run: the lock goes with the session.
    """
    got = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"toolclash:{schema}",)
    ).fetchone()[0]
    if not got:
        raise SchemaRefused(f"schema {schema!r} is in use by another toolclash run; use --schema to pick another")


def prepare(conn: psycopg.Connection, schema: str, *, reset: bool) -> None:
    """Make `schema` ready for a run on the autocommit session `conn`, or raise SchemaRefused."""
    ident = sql.Identifier(schema)
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if exists:
        ours = conn.execute("SELECT to_regclass(%s)", (f"{_quoted(schema)}.run_state",)).fetchone()[0]
        if ours is None:
            objects = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s",
                (schema,),
            ).fetchone()[0]
            if objects:
                raise SchemaRefused(
                    f"schema {schema!r} exists and was not made by toolclash ({objects} objects);"
                    " toolclash never touches it: choose another with --schema"
                )
        elif reset:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
            exists = None
        else:
            state = conn.execute(
                sql.SQL("SELECT run_id, status, started_at FROM {}.run_state").format(ident)
            ).fetchone()
            if state and state[1] != "finished":
                why = "whose audit failed" if state[1] == "audit_failed" else "which did not finish"
                raise SchemaRefused(
                    f"schema {schema!r} holds the data of run {state[0]} (started {state[2]:%Y-%m-%d %H:%M:%S %Z}),"
                    f" {why}; inspect it, then rerun with --reset to drop it"
                )
            _add_missing_tables(conn, schema)
            return
    if not exists:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    _add_missing_tables(conn, schema)


def _add_missing_tables(conn: psycopg.Connection, schema: str) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for ddl in _TABLES:
            name = ddl.split()[2]
            if conn.execute("SELECT to_regclass(%s)", (f"{_quoted(schema)}.{name}",)).fetchone()[0] is None:
                conn.execute(ddl)
        # Schemas made before a run could end 'audit_failed' allowed only 'running' and 'finished'.
        conn.execute("ALTER TABLE run_state DROP CONSTRAINT IF EXISTS run_state_status_check")


def begin_run(
    conn: psycopg.Connection, schema: str, run_id: str, *, accounts: int, initial_balance: int, counters: int
) -> None:
    """Empty the run's tables, seed accounts and counters, and mark the run in progress, atomically."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(schema, t) for t in _RUN_TABLES))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, balance, initial_balance) SELECT i, %(b)s, %(b)s FROM generate_series(1, %(n)s) i"
            ).format(sql.Identifier(schema, "accounts")),
            {"b": initial_balance, "n": accounts},
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (id) SELECT generate_series(1, %s)").format(sql.Identifier(schema, "counters")),
            (counters,),
        )
        conn.execute("SELECT setval(%s, 1, false)", (f"{_quoted(schema)}.duty_pair_calls",))
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.run_state (run_id, status) VALUES (%s, 'running')"
                " ON CONFLICT (only_row) DO UPDATE SET run_id = excluded.run_id, status = 'running',"
                " started_at = now(), finished_at = NULL"
            ).format(ident),
            (run_id,),
        )


def finish_run(conn: psycopg.Connection, schema: str, *, audit_ok: bool) -> None:
    """Mark the run over: 'finished', or 'audit_failed' to keep its data from the next run."""
    conn.execute(
        sql.SQL("UPDATE {}.run_state SET status = %s, finished_at = now()").format(sql.Identifier(schema)),
        ("finished" if audit_ok else "audit_failed",),
    )


def _quoted(schema: str) -> str:
    """The schema as a quoted identifier inside a to_regclass() text argument."""
    return '"' + schema.replace('"', '""') + '"'
