"""A server that does not store toolclash's op id gets no audit by identity, and the report says so:
no check holds on nothing, none fails as if every call's row were lost. A user's table
(`ctx.check_writes`) holding none of the run's op ids: no check, the tools listed as not audited
by identity, a note saying why; a built-in audit, which judges by identity by design: none of its
checks, and the run is no evidence (`op_ids_not_stored`). An empty table after succeeded writes is
still every call lost, and a table that holds some is judged. On the real PostgreSQL, without a
`locust` process (tests/test_mcp_own_server.py runs a real server that stores none)."""

from __future__ import annotations

import json
import uuid

import pytest
from locust.event import EventHook
from psycopg import sql

from db.audits import Acknowledged, AuditContext, OpIds
from harness.run.load import Load
from harness.verdict.coordinator import Coordinator
from tests.support import context_for, settings_from

_CALLS = [uuid.uuid4() for _ in range(4)]


@pytest.fixture
def bookings(admin, schema):
    """A user's table in the run's schema, and what the agents were told of four bookings."""
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    admin.execute("CREATE TABLE bookings (op_id uuid UNIQUE, seat int NOT NULL)")
    return Acknowledged(OpIds.of(_CALLS, [{"seat": n} for n in range(len(_CALLS))]))


def _writes(admin, schema: str, acknowledged: Acknowledged) -> tuple[list, AuditContext]:
    ctx = context_for(admin, schema, lambda tools: acknowledged)
    return ctx.check_writes("bookings", ["book_seat"], columns={"seat": "seat"}), ctx


@pytest.mark.parametrize("stored, says", [
    ("NULL", "none of the 4 rows of bookings carries the op id of one of this run's 4 calls that wrote there"),
    ("gen_random_uuid()", "none of the 4 rows of bookings carries the op id"),  # the server's own ids
])
def test_a_users_table_without_the_runs_op_ids_is_not_audited_by_identity(admin, schema, bookings, stored, says):
    admin.execute(f"INSERT INTO bookings SELECT {stored}, n FROM generate_series(0, 3) n")
    checks, ctx = _writes(admin, schema, bookings)
    assert checks == [] and ctx.not_by_identity == {"book_seat"}
    [note] = ctx.notes
    assert note["kind"] == "op_ids_not_stored" and note["detail"].startswith(says)
    assert "the calls of book_seat cannot be compared with them by identity" in note["detail"]


def test_a_users_table_without_an_op_id_column_is_not_audited_by_identity(admin, schema, bookings):
    admin.execute("ALTER TABLE bookings DROP COLUMN op_id")
    checks, ctx = _writes(admin, schema, bookings)
    assert checks == [] and ctx.not_by_identity == {"book_seat"}
    assert ctx.notes[0]["detail"].startswith("bookings has no op_id column:")


def test_an_empty_table_after_succeeded_writes_is_every_call_lost_and_some_stored_is_judged(admin, schema, bookings):
    checks, ctx = _writes(admin, schema, bookings)
    assert {c.name for c in checks if not c.ok} == {"bookings_written"} and not ctx.not_by_identity
    admin.execute("INSERT INTO bookings VALUES (%s, 0), (NULL, 1)", (_CALLS[0],))
    checks, ctx = _writes(admin, schema, bookings)
    assert {c.name for c in checks if not c.ok} == {"bookings_written", "bookings_within_acknowledged"}
    assert "lost: " in next(c for c in checks if c.name == "bookings_written").detail and not ctx.notes


def test_a_built_in_audit_that_finds_none_of_the_runs_op_ids_makes_the_run_no_evidence(servers, admin, schema):
    """As a server implementing the built-in tools without the op id would leave the ledger: each
    row under an id of its own. The credits audit makes none of its checks, and says why."""
    settings = settings_from("--schema", schema, "--scenario", "optimistic_locking", "--sample-interval", "0.1")
    coordinator = Coordinator(settings, servers.pg_dsn, servers.redis_url, [])
    load = Load(settings, EventHook(), 0)
    load.pg_dsn, load.redis_url = servers.pg_dsn, servers.redis_url
    coordinator.open()
    try:
        coordinator.begin(1, lambda: 1, seed=7)
        assert load.start(1, seed=7) is None
        agent_id, rng = load.next_agent()
        for _ in range(20):
            load.adapter.call(load.toolbox.pick(rng), agent_id, rng.getrandbits(64))
        load.stop()
        admin.execute(sql.SQL("UPDATE {} SET op_id = gen_random_uuid()").format(sql.Identifier(schema, "ledger")))
        report = coordinator.finish(load.metrics, 1, {})
    finally:
        coordinator.close()
    assert report["verdict"] == "fail" and report["exit_code"] == 1
    [problem] = report["evidence"]["problems"]
    assert problem["kind"] == "op_ids_not_stored"
    assert problem["detail"].startswith("the audit credits judges by identity, and none of the ")
    assert "(deduct_credits: not audited by identity)" in problem["detail"]
    assert report["not_audited_by_identity"] == ["deduct_credits"]
    assert not any(check["name"].startswith(("acknowledged_in_ledger", "credits_")) for check in
                   report["audit"]["checks"]), "none of its checks: not even those that need no op id"
    json.dumps(report, default=str)
