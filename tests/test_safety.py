"""Nothing outside the run's own schema is touched, and no password is printed or passed in clear."""

from __future__ import annotations

import pytest
from psycopg import sql

from harness.config.option import BadOption
from harness.run.lifecycle import _reach_servers
from harness.run.matrix import _level_arguments
from tests.support import settings_from

RUN = ("--users", "2", "--spawn-rate", "2", "--run-time", "2s", "--scenario", "optimistic_locking")


def _error_lines(done) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("toolclash: error:")]


def test_an_empty_schema_toolclash_did_not_create_is_refused(servers, admin, schema, locust):
    """Before: an empty schema was adopted, and a later --reset dropped it."""
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, "--reset", *RUN)
    assert done.returncode == 2
    [line] = _error_lines(done)
    assert "not made by toolclash" in line
    assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0] == 1
    tables = admin.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)).fetchone()[0]
    assert tables == 0, "nothing was created in it"


def test_the_public_schema_is_refused_before_any_server_is_touched():
    """By the settings parser, which runs first at start (tests/test_bad_input.py runs a refused
    option for real: one line, exit code 2, no traceback)."""
    with pytest.raises(BadOption) as refused:
        settings_from("--schema", "public", *RUN)
    [line] = str(refused.value).splitlines()
    assert "--schema public" in line and "a schema of its own" in line


def test_reset_refuses_to_drop_what_other_schemas_built_on_ours(servers, admin, schema, locust):
    """Before: DROP SCHEMA … CASCADE silently dropped the user's view in public."""
    common = ("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *RUN)
    first = locust.run(*common)
    assert first.returncode in (0, 1), first.stderr[-2000:]
    view = f"tc_view_on_{schema}"
    admin.execute(sql.SQL("CREATE VIEW public.{} AS SELECT id FROM {}.accounts").format(
        sql.Identifier(view), sql.Identifier(schema)))
    try:
        refused = locust.run(*common, "--reset")
        assert refused.returncode == 2
        [line] = _error_lines(refused)
        assert f"public.{view}" in line and "--reset would also drop" in line
        assert admin.execute("SELECT to_regclass(%s)", (f"public.{view}",)).fetchone()[0] is not None
    finally:
        admin.execute(sql.SQL("DROP VIEW IF EXISTS public.{}").format(sql.Identifier(view)))


def test_a_malformed_dsn_or_url_is_reported_without_its_password(servers, capfd, caplog):
    """What the process does at start with the servers it is given (harness.run.lifecycle's init):
    exit code 2 and one line, and the password nowhere, not in what it logged either."""
    for pg_dsn, redis_url in (("postgresql://app:s3cret-pw@[db.internal", servers.redis_url),
                              (servers.pg_dsn, "redis://app:s3cret-pw@cache.internal:notaport/0")):
        with pytest.raises(SystemExit) as exited:
            _reach_servers(settings_from("--pg-dsn", pg_dsn, "--redis-url", redis_url, *RUN))
        assert exited.value.code == 2
        out, err = capfd.readouterr()
        [line] = [line for line in err.splitlines() if line.startswith("toolclash: error:")]
        assert "s3cret-pw" not in err + out + caplog.text
        assert "app:***@" in line


def test_the_isolation_matrix_passes_the_servers_to_its_runs_by_environment():
    argv = ["--pg-dsn", "postgresql://app:s3cret@db/x", "--redis-url=redis://:pw@cache/0", "--users", "5",
            "--isolation", "serializable", "--isolation-matrix", "--require-levels", "repeatable_read"]
    arguments, variables = _level_arguments(argv)
    assert arguments == ["--users", "5", "--scenario", "isolation"]
    assert variables == {"TOOLCLASH_PG_DSN": "postgresql://app:s3cret@db/x", "TOOLCLASH_REDIS_URL": "redis://:pw@cache/0"}


def test_a_run_on_another_database_holding_the_same_redis_keys_is_refused(servers, schema, locust):
    """The schema's advisory lock guards one database only; before, a second run on another
    database with the same --schema cleared the first one's Redis keys."""
    import redis

    from db.redis_keys import RedisClaim, RedisKeys

    with redis.Redis.from_url(servers.redis_url) as client:
        other_run = RedisClaim(client, RedisKeys(schema), "toolclash-coordinator:elsewhere")
        other_run.claim()
        try:
            done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *RUN)
            assert done.returncode == 2
            [line] = _error_lines(done)
            assert f"toolclash:{schema}:*" in line and "in use by another toolclash run" in line
        finally:
            other_run.release()
        assert client.get(f"toolclash:{schema}") is None
        done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *RUN)
        assert done.returncode in (0, 1), done.stderr[-2000:]
        assert client.get(f"toolclash:{schema}") is None, "the run let go of its keys at the end"
