"""A team's own MCP server, through the real `locust` command: examples/mcp_seat_tools.py's
`book_seat`, a tool of backend "mcp", calls the server's own `book_seat` through `tx.mcp`
(tests/mcp_test_server.py, on the official SDK, a process of its own). The server that stores each
call's op id with its booking is audited by identity and passes, its conflicts retried under the
call's one op id; the one that stores none is not audited by identity, and the report says so."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from harness.report_shape import Report
from tests.report_conformance import nonconforming
from tests.support import ROOT, free_port, read_report, wait_until

_IDENTITY_CHECKS = {"bookings_written", "bookings_within_acknowledged", "bookings_not_of_failed_calls",
                    "bookings_as_written"}


@contextmanager
def _booking_server(servers, admin: psycopg.Connection, run_schema: str, *options: str) -> Iterator[str]:
    """The test server, its own tables in a schema of their own (toolclash uses only a schema it
    made), booking into the run's; its URL."""
    own = f"{run_schema}_srv"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.mcp_test_server", "--port", str(port), "--pg-dsn",
                               servers.pg_dsn, "--schema", own, "--run-schema", run_schema, *options],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening() -> bool:
            assert server.poll() is None, f"the MCP test server exited: {server.stderr.read().decode()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(listening, "the MCP test server to listen", timeout=30)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.terminate()
        server.wait(timeout=10)
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(own)))


def _run(servers, schema: str, tmp_path, locust, url: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = locust.run(*servers.args(schema), "--users", "10", "--spawn-rate", "10", "--run-time", "4s",
                      "--sla", "sla/without_latency.toml", "--report-json", str(tmp_path / "report.json"),
                      "--tools-module", "examples/mcp_seat_tools.py", "--mcp-url", url)
    report = read_report(tmp_path / "report.json")
    assert nonconforming(report, Report) == [], "the report has exactly the keys and types of its TypedDicts"
    assert report["transport"]["kind"] == "mcp" and report["transport"]["mcp"]["server"] == "user"
    assert report["tools"]["book_seat"]["calls"] > 50 and report["errors"] == 0
    return done, report


def test_a_server_that_stores_the_op_id_is_audited_by_identity_its_conflicts_retried_under_one_op_id(
        servers, admin, schema, tmp_path, locust):
    with _booking_server(servers, admin, schema) as url:
        done, report = _run(servers, schema, tmp_path, locust, url)
        seen = admin.execute(sql.SQL(
            "SELECT meta_op_id, count(*), bool_and(idempotency_key = meta_op_id) FROM {} WHERE tool = 'book_seat'"
            " GROUP BY meta_op_id").format(sql.Identifier(f"{schema}_srv", "requests"))).fetchall()
    assert done.returncode == 0 and report["verdict"] == "pass", done.stdout[-3000:] + done.stderr[-2000:]
    assert report["not_audited_by_identity"] == [] and report["evidence"]["problems"] == []
    checks = {check["name"]: check for check in report["audit"]["checks"]}
    assert set(checks) == {f"mcp_seat_tools.{name}" for name in _IDENTITY_CHECKS}
    assert all(check["ok"] for check in checks.values())
    tool = report["tools"]["book_seat"]
    assert tool["failures"]["serialization_failures"] > 0 and tool["succeeded"] == tool["calls"], tool
    # Each call's requests, first and retried, carried its one op id, in _meta and the header alike.
    assert all(same for _, _, same in seen) and {times for _, times, _ in seen} == {1, 2}
    assert len(seen) == tool["calls"] and sum(times for _, times, _ in seen) == tool["attempts"]
    assert report["transport"]["mcp"]["is_error_replies"] == tool["attempts"] - tool["calls"]


def test_a_server_that_stores_no_op_id_is_not_audited_by_identity_and_the_report_says_so(
        servers, admin, schema, tmp_path, locust):
    with _booking_server(servers, admin, schema, "--forget-op-ids") as url:
        done, report = _run(servers, schema, tmp_path, locust, url)
    assert report["not_audited_by_identity"] == ["book_seat"]
    assert report["audit"]["checks"] == [], "no check holds on nothing, none fails as if every booking were lost"
    [note] = [note for note in report["evidence"]["notes"] if note["kind"] == "op_ids_not_stored"]
    assert note["detail"].startswith("none of the ") and "rows of bookings carries the op id" in note["detail"]
    assert "docs/mcp.md, your own server" in note["detail"]
    assert "[WARN] not audited by identity (no check compared their calls with the servers' data): book_seat" \
        in done.stdout
    assert "[WARN] op_ids_not_stored: none of the " in done.stdout
