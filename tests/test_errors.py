"""Error classification, with every conflict provoked for real on the server."""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace

import gevent
import psycopg
import pytest
import redis
import redis.exceptions
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from db.errors import Failure, VersionConflict, classify
from db.pool import SessionSettings
from db.redis_keys import RedisKeys
from tests.support import Recorder, adapter_on, built_in_tool, prepared_schema
from transport.call_record import Outcome


@pytest.fixture
def two_rows(admin: psycopg.Connection, schema: str) -> str:
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    table = f"{schema}.item"
    admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL)")
    admin.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
    return table


def _session(servers, **settings: str) -> psycopg.Connection:
    conn = psycopg.connect(servers.pg_dsn)
    with conn.cursor() as cur:
        for name, value in settings.items():
            cur.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.commit()
    return conn


def test_opposite_lock_order_raises_40P01_classified_as_deadlock(servers, two_rows):
    first, second = (_session(servers, deadlock_timeout="50ms") for _ in range(2))
    first.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = 1")
    second.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = 2")
    outcomes = {}

    def cross(name: str, conn: psycopg.Connection, row: int) -> None:
        try:
            conn.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = %s", (row,))
            outcomes[name] = None
        except psycopg.Error as exc:
            outcomes[name] = exc
            conn.rollback()

    gevent.joinall([gevent.spawn(cross, "first", first, 2), gevent.spawn(cross, "second", second, 1)], timeout=10)
    errors = [exc for exc in outcomes.values() if exc is not None]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert errors[0].sqlstate == "40P01"
    assert classify(errors[0]) is Failure.DEADLOCK
    for conn in (first, second):
        conn.close()


def test_concurrent_update_at_repeatable_read_raises_40001(servers, two_rows):
    reader, writer = _session(servers), _session(servers)
    reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    reader.execute(f"SELECT n FROM {two_rows} WHERE id = 1")  # takes the snapshot
    writer.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = 1")
    writer.commit()
    with pytest.raises(pg_errors.SerializationFailure) as caught:
        reader.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = 1")
    assert caught.value.sqlstate == "40001"
    assert classify(caught.value, reader) is Failure.SERIALIZATION_FAILURE
    reader.close(), writer.close()


def test_lock_timeout_raises_55P03_classified_as_lock_timeout(servers, two_rows):
    holder, waiter = _session(servers), _session(servers, lock_timeout="100ms")
    holder.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = 1")
    with pytest.raises(pg_errors.LockNotAvailable) as caught:
        waiter.execute(f"UPDATE {two_rows} SET n = n + 1 WHERE id = 1")
    assert caught.value.sqlstate == "55P03"
    assert classify(caught.value, waiter) is Failure.LOCK_TIMEOUT
    holder.close(), waiter.close()


def test_terminated_backend_is_a_lost_connection(servers, admin):
    victim = psycopg.connect(servers.pg_dsn, autocommit=True)
    pid = victim.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError) as caught:
        victim.execute("SELECT 1")
    assert victim.broken
    assert classify(caught.value, victim) is Failure.CONNECTION_LOST


def test_statement_timeout_on_a_healthy_connection_is_not_a_lost_connection(servers):
    conn = _session(servers, statement_timeout="50ms")
    with pytest.raises(pg_errors.QueryCanceled) as caught:
        conn.execute("SELECT pg_sleep(1)")
    assert not conn.broken
    assert classify(caught.value, conn) is Failure.ERROR
    conn.close()


def test_exhausted_pool_times_out(servers):
    with ConnectionPool(servers.pg_dsn, min_size=1, max_size=1, open=True) as pool:
        with pool.connection():
            with pytest.raises(PoolTimeout) as caught:
                pool.getconn(timeout=0.1)
    assert classify(caught.value) is Failure.POOL_TIMEOUT


class _AnotherWriterDuringWork:
    """A tool's transaction whose work (between its read and its write) is another session
    changing the same account and committing, on the first attempt only."""

    def __init__(self, tx, other_session: psycopg.Connection, schema: str, changes: list[int]) -> None:
        self._tx, self._other, self._schema, self._changes = tx, other_session, schema, changes

    def __getattr__(self, name):
        return getattr(self._tx, name)

    def work(self) -> None:
        if not self._changes:
            self._changes.append(self._tx.op_id)
            self._other.execute(sql.SQL("UPDATE {} SET version = version + 1 WHERE id = 1")
                                .format(sql.Identifier(self._schema, "accounts")))


def test_a_version_changed_under_deduct_credits_is_a_version_conflict_and_is_retried(servers, admin, schema):
    prepared_schema(admin, schema, accounts=1)
    recorder, changes = Recorder(), []
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder)
    deduct = built_in_tool("deduct_credits", schema, accounts=1)
    with closing(pool):
        record = adapter.call(
            replace(deduct, run=lambda tx, **arguments: deduct.run(
                _AnotherWriterDuringWork(tx, admin, schema, changes), **arguments)),
            "agent-1", seed=3)
    assert changes == [record.op_id], "the other session wrote during the first attempt"
    # The tool's own check found the row changed: classified as a version conflict, retried (the
    # retry read the new version), and applied once.
    assert isinstance(record.exception, VersionConflict)
    assert classify(record.exception) is Failure.VERSION_CONFLICT
    assert record.failures == [Failure.VERSION_CONFLICT] and record.attempts == 2
    assert record.outcome is Outcome.SUCCEEDED
    ledger = sql.Identifier(schema, "ledger")
    [(amount,)] = admin.execute(sql.SQL("SELECT amount FROM {} WHERE op_id = %s").format(ledger), (record.op_id,))
    balance, version = admin.execute(sql.SQL("SELECT balance, version FROM {} WHERE id = 1")
                                     .format(sql.Identifier(schema, "accounts"))).fetchone()
    assert (balance, version) == (1000 - amount, 2), "the other session's change, then the retry's: none lost"


def test_a_redis_connection_killed_while_watching_is_a_watch_error_too(servers, schema):
    """The second meaning of WatchError (see db.errors): no key changed, the connection died."""
    key = RedisKeys(schema)("plan", 1)
    with redis.Redis.from_url(servers.redis_url) as client, redis.Redis.from_url(servers.redis_url) as killer:
        with client.pipeline() as pipe:
            pipe.watch(key)
            assert killer.client_kill_filter(_id=pipe.client_id()) == 1
            with pytest.raises(redis.exceptions.WatchError) as caught:
                pipe.hget(key, "version")
    assert isinstance(caught.value.__context__, redis.exceptions.ConnectionError)
    assert classify(caught.value) is Failure.REDIS_WATCH_CONFLICT
