"""The harness's own schema: its tables, and the run state that guards them.

Everything lives in one schema of the user's database (default `toolclash`); nothing outside
it is read or written. A `run_state` row marks a run in progress: a run that was killed leaves
it set, and the next run refuses to overwrite that data (the evidence of what went wrong)
unless told `--reset`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from db.rows import one_row

__all__ = ["SchemaRefused", "claim", "prepare", "begin_run", "continue_run", "finish_run"]

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
        applied_at timestamptz,
        relayed boolean NOT NULL DEFAULT false  -- applied to Redis by the relay, not by its agent
    )""",
    # What the drain (db/redis_drain.py) moved out of Redis during the run, so that Redis keeps a
    # bounded amount of it. Each stream's entries keep their stream id (ms, seq): their order.
    # How far each Redis stream was copied into its table (NULL: nothing yet).
    """CREATE TABLE drained_streams (
        stream text PRIMARY KEY,
        through_ms bigint,
        through_seq bigint
    )""",
    # queue: the queue's log. event is enqueue, dequeue or ack, or 'unreadable' for an entry no
    # script wrote (its other columns NULL).
    """CREATE TABLE queue_log (
        stream_ms bigint NOT NULL,
        stream_seq bigint NOT NULL,
        event text NOT NULL,
        job uuid,
        level smallint,
        depth integer,
        consumer uuid,
        PRIMARY KEY (stream_ms, stream_seq)
    )""",
    # agent_state: every change applied to a plan (op_id NULL: an entry no call wrote).
    """CREATE TABLE plan_log (
        stream_ms bigint NOT NULL,
        stream_seq bigint NOT NULL,
        op_id uuid,
        team integer,
        PRIMARY KEY (stream_ms, stream_seq)
    )""",
    # cross_service: the charges Redis applied, moved out of its guard set usage:applied.
    """CREATE TABLE usage_applied (
        op_id uuid PRIMARY KEY
    )""",
    # list_append: each key's list, in the order its elements were appended (tasks/list_append.py).
    """CREATE TABLE append_lists (
        key text PRIMARY KEY,
        elements text[] NOT NULL
    )""",
)

# The comment on every schema toolclash creates: only such a schema is ever used, emptied or dropped.
_MARK = "made by toolclash; --reset drops it"

_RUN_TABLES = ("ledger", "usage_outbox", "counter_ops", "counters", "duty_leave", "accounts", "drained_streams",
               "queue_log", "plan_log", "usage_applied", "append_lists")


class SchemaRefused(Exception):
    """The schema cannot be used for this run; the message says why and what to do."""


def claim(conn: psycopg.Connection, schema: str) -> None:
    """Hold a session advisory lock on the schema's name, so two runs never share its tables.

    `conn` must stay open for the whole run: the lock goes with the session.
    """
    got = one_row(conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"toolclash:{schema}",)
    ))[0]
    if not got:
        raise SchemaRefused(f"schema {schema!r} is in use by another toolclash run; use --schema to pick another")


def prepare(conn: psycopg.Connection, schema: str, *, reset: bool, kept: bool = False) -> None:
    """Make `schema` ready for a run on the autocommit session `conn`, or raise SchemaRefused.
    `kept`: the run goes on with the data the last one left (a capacity probe on kept data), even
    when that one's audit failed: its data is the search's one data set, never emptied.

    Only a schema toolclash created (its comment says so) is ever used, emptied or dropped."""
    ident = sql.Identifier(schema)
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if exists:
        if not _made_by_toolclash(conn, schema):
            raise SchemaRefused(
                f"schema {schema!r} exists and was not made by toolclash; toolclash never uses, empties or drops"
                " a schema it did not create: choose another with --schema"
            )
        if reset:
            _refuse_outside_dependents(conn, schema)
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
            exists = None
        else:
            state = conn.execute(
                sql.SQL("SELECT run_id, status, started_at FROM {}.run_state").format(ident)
            ).fetchone()
            if state and state[1] != "finished" and not (kept and state[1] == "audit_failed"):
                why = "whose audit failed" if state[1] == "audit_failed" else "which did not finish"
                raise SchemaRefused(
                    f"schema {schema!r} holds the data of run {state[0]} (started {state[2]:%Y-%m-%d %H:%M:%S %Z}),"
                    f" {why}; inspect it, then rerun with --reset to drop it"
                )
    if not exists:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident, sql.Literal(_MARK)))
    _add_missing_tables(conn, schema)


def _made_by_toolclash(conn: psycopg.Connection, schema: str) -> bool:
    # Schemas made before the mark existed have our run_state table.
    # Asked of a schema that exists: pg_namespace has its row.
    comment, has_run_state = one_row(conn.execute(
        "SELECT obj_description(oid, 'pg_namespace'), to_regclass(%s) IS NOT NULL FROM pg_namespace WHERE nspname = %s",
        (f"{_quoted(schema)}.run_state", schema),
    ))
    return comment == _MARK or (comment is None and has_run_state)


def _refuse_outside_dependents(conn: psycopg.Connection, schema: str) -> None:
    """DROP SCHEMA … CASCADE would also drop what other schemas built on ours (a view, a foreign
    key): refuse, naming them, rather than touch anything outside the schema."""
    outside = conn.execute(
        # pg_identify_object gives no schema for rules, constraints, defaults and triggers: theirs
        # is their table's.
        """SELECT DISTINCT o.type || ' ' || o.identity
           FROM pg_depend d
           CROSS JOIN LATERAL pg_identify_object(d.refclassid, d.refobjid, 0) r
           CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
           LEFT JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND rw.oid = d.objid
           LEFT JOIN pg_constraint co ON d.classid = 'pg_constraint'::regclass AND co.oid = d.objid
           LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
           LEFT JOIN pg_trigger tg ON d.classid = 'pg_trigger'::regclass AND tg.oid = d.objid
           LEFT JOIN pg_class t ON t.oid = coalesce(rw.ev_class, co.conrelid, ad.adrelid, tg.tgrelid)
           LEFT JOIN pg_namespace tn ON tn.oid = coalesce(t.relnamespace, co.connamespace)
           WHERE r.schema = %(s)s AND coalesce(o.schema, tn.nspname) <> %(s)s AND d.deptype IN ('n', 'a')
           ORDER BY 1""",
        {"s": schema},
    ).fetchall()
    if outside:
        named = ", ".join(row[0] for row in outside[:5]) + (" …" if len(outside) > 5 else "")
        raise SchemaRefused(
            f"--reset would also drop what depends on schema {schema!r} from outside it ({named});"
            " drop or change those first"
        )


def _add_missing_tables(conn: psycopg.Connection, schema: str) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for ddl in _TABLES:
            name = ddl.split()[2]
            if one_row(conn.execute("SELECT to_regclass(%s)", (f"{_quoted(schema)}.{name}",)))[0] is None:
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


def continue_run(conn: psycopg.Connection, schema: str, run_id: str) -> None:
    """Mark the run in progress on the data the last run left, emptying and seeding nothing."""
    conn.execute(
        sql.SQL("UPDATE {}.run_state SET run_id = %s, status = 'running', started_at = now(), finished_at = NULL")
        .format(sql.Identifier(schema)),
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
