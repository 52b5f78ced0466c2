"""--deadlock-timeout is applied where the role may set it, and reported where it may not."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from db.pool import SessionSettings
from harness.verdict.coordinator import Coordinator
from tests.support import settings_from


@pytest.fixture
def plain_role_dsn(servers, admin):
    """A login role that is not a superuser and was granted nothing but CREATE on the database."""
    role = f"tc_plain_{uuid.uuid4().hex[:8]}"
    database = admin.info.dbname
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))
    yield make_conninfo(servers.pg_dsn, user=role)
    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_superuser_session_gets_the_requested_deadlock_timeout(servers, schema):
    with psycopg.connect(servers.pg_dsn, autocommit=True) as conn:
        assert SessionSettings(schema, deadlock_timeout_ms=70).try_set_deadlock_timeout(conn)
        assert conn.execute("SHOW deadlock_timeout").fetchone()[0] == "70ms"


def test_a_plain_role_keeps_the_servers_value_and_the_report_says_so(servers, plain_role_dsn, admin, schema):
    server_value = admin.execute("SHOW deadlock_timeout").fetchone()[0]
    with psycopg.connect(plain_role_dsn, autocommit=True) as conn:
        assert not SessionSettings(schema, deadlock_timeout_ms=70).try_set_deadlock_timeout(conn)
        assert conn.execute("SHOW deadlock_timeout").fetchone()[0] == server_value

    settings = settings_from("--schema", schema, "--deadlock-timeout", "70")
    coordinator = Coordinator(settings, plain_role_dsn, servers.redis_url, [])
    coordinator.open()
    try:
        note = coordinator.deadlock_timeout
    finally:
        coordinator.close()
    assert note["applied"] is False and note["effective"] == server_value
    assert "NOT applied" in note["note"] and "tc_plain_" in note["note"]
