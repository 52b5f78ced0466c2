"""The MCP client (transport.mcp) against real MCP servers on the official SDK
(tests/mcp_test_server.py), their tools writing to the real PostgreSQL: both eras, replies as JSON
and as event streams, an expired session, DELETE at the end, tool errors, conflicts retried with
the same op id, a reply that never came (timed out, or lost and sent again), an unreachable
server, many agents at once, a bearer token and TLS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import psutil
import psycopg
import pytest
from psycopg import sql

from db.errors import Failure, Refused
from db.tool import Tool
from tests.mcp_test_server import prepare
from tests.support import (
    QUICK_RETRIES,
    ROOT,
    Recorder,
    _Proxy,
    built_in_tool,
    free_port,
    prepared_schema,
    wait_until,
)
from transport.call_record import CallRecord, Outcome
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient, McpUnavailable, UnusableTool
from transport.mcp.exchange import McpError, NotDelivered, ReplyLost, ReplyTimedOut
from transport.mcp.settings import McpSettings
from transport.mcp.tool_calls import McpToolFailed

SESSION_IDLE_S = 1.5  # server A ends a session idle this long


@dataclass(frozen=True)
class McpServers:
    """A: event streams, both eras (the SDK's dual-era endpoint), sessions ended after
    SESSION_IDLE_S idle. B: JSON replies, session era only. C: JSON, HTTPS and a bearer token."""

    a: str
    b: str
    c: str
    token: str
    ca_file: str
    schema: str


def _start(port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "tests.mcp_test_server", "--port", str(port), *args],
                                cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)


def _accepts(port: int, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the MCP test server exited: {log.read_text(errors='replace')[-2000:]}")
    try:
        with gevent.socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _certificate(directory: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: apt-get install -y openssl (the TLS test makes its certificate)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def mcp(servers, tmp_path_factory) -> Iterator[McpServers]:
    schema = f"tc_mcp_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(servers.pg_dsn, autocommit=True) as conn:
        prepare(conn, schema)
    files = tmp_path_factory.mktemp("mcp")
    cert, key = _certificate(files)
    token = uuid.uuid4().hex
    base = ["--pg-dsn", servers.pg_dsn, "--schema", schema]
    ports = [free_port() for _ in range(3)]
    logs = [files / f"server-{name}.log" for name in "abc"]
    processes = [
        _start(ports[0], logs[0], *base, "--session-idle-timeout", str(SESSION_IDLE_S), "--modern-sse-after", "0.2"),
        _start(ports[1], logs[1], *base, "--json", "--legacy-only"),
        _start(ports[2], logs[2], *base, "--json", "--token", token, "--certfile", cert, "--keyfile", key),
    ]
    try:
        for port, process, log in zip(ports, processes, logs):
            wait_until(lambda: _accepts(port, process, log), "the MCP test server to listen", timeout=30)
        yield McpServers(f"http://127.0.0.1:{ports[0]}/mcp", f"http://127.0.0.1:{ports[1]}/mcp",
                         f"https://127.0.0.1:{ports[2]}/mcp", token, cert, schema)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        with psycopg.connect(servers.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def remote(name: str, **arguments: Any) -> Tool:
    """A tool the server runs: here only its name and its arguments step matter."""

    def runs_on_the_server(tx: Any, **_: Any) -> None:
        raise AssertionError(f"{name} runs on the MCP server, not here")

    return Tool(name, runs_on_the_server, arguments=lambda rng: dict(arguments))


def connected(url: str, era: str = "auto", **settings: Any) -> McpClient:
    client = McpClient(McpSettings(url, era=era, **settings))
    client.connect()
    return client


def seen_by_server(admin: psycopg.Connection, schema: str, record: CallRecord) -> list[tuple[str, str, str]]:
    """What the server received of the call, per request: the op id as the `op_id` argument, in
    `_meta`, in the Idempotency-Key header."""
    rows = admin.execute(sql.SQL("SELECT op_id, meta_op_id, idempotency_key FROM {}.requests WHERE meta_op_id = %s"
                                 " ORDER BY at").format(sql.Identifier(schema)), (str(record.op_id),))
    return rows.fetchall()


def written(admin: psycopg.Connection, schema: str, record: CallRecord) -> int:
    rows = admin.execute(sql.SQL("SELECT count(*) FROM {}.writes WHERE op_id = %s").format(sql.Identifier(schema)),
                         (str(record.op_id),))
    return rows.fetchone()[0]


@pytest.mark.parametrize("server, era, form", [("a", "session", "event-stream"), ("b", "auto", "json"),
                                               ("a", "auto", "json")])
def test_a_call_in_each_era_and_reply_form(mcp, admin, server, era, form):
    recorder = Recorder()
    client = connected(getattr(mcp, server), era)
    assert client.era == ("stateless" if (server, era) == ("a", "auto") else "session")
    assert client.protocol_version == ("2026-07-28" if client.era == "stateless" else "2025-11-25")
    adapter = McpToolAdapter(client, QUICK_RETRIES, recorder.call_finished, recorder.call_started)
    record = adapter.call(remote("write", note="hello"), "agent-1", seed=1)
    chatty = adapter.call(remote("chatty"), "agent-1", seed=2)  # notifications before its reply
    adapter.close()
    client.close()
    assert record.outcome is Outcome.SUCCEEDED and record.value == {"note": "hello"}
    assert record.arguments == {"note": "hello"}, "the drawn arguments; the op id is added on the wire"
    assert (record.attempts, record.reissues, record.failures) == (1, 0, [])
    assert (record.server_attempts, record.server_failures) == (2, [Failure.DEADLOCK]), "the server's own, apart"
    assert seen_by_server(admin, mcp.schema, record) == [(str(record.op_id),) * 3]
    assert written(admin, mcp.schema, record) == 1
    assert chatty.outcome is Outcome.SUCCEEDED and chatty.value == {"result": "done"}
    assert client.replies[form] > 0 and client.replies[{"json": "event-stream"}.get(form, "json")] == 0
    assert client.sessions_opened == client.sessions_closed == (0 if client.era == "stateless" else 2)
    assert recorder.records == [record, chatty] and len(recorder.requests) == 2, "one report per call"
    assert all(request["exception"] is None for request in recorder.requests)


def test_the_stateless_era_streams_slow_replies_and_mirrors_arguments_into_headers(mcp, admin):
    client = connected(mcp.a, "stateless")
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    slow = adapter.call(remote("sleepy", seconds=0.5), "agent-1", seed=1)
    assert slow.outcome is Outcome.SUCCEEDED and slow.value == 0.5
    assert client.replies["event-stream"] == 1, "held past 0.2 s, the reply came as an event stream, pings first"
    region = adapter.call(remote("region", region="Zürich"), "agent-1", seed=2)
    assert region.outcome is Outcome.SUCCEEDED, "the server checked Mcp-Param-Region against the body"
    assert region.value == {"result": "=?base64?WsO8cmljaA==?="}
    assert client.tools["badly_marked"].invalid, "an x-mcp-header on a number makes the tool invalid"
    refused = adapter.call(remote("badly_marked", ratio=0.5), "agent-1", seed=3)
    assert refused.outcome is Outcome.FAILED and isinstance(refused.exception, UnusableTool)
    assert client.sessions_opened == 0
    client.close()


def test_a_session_era_server_has_no_stateless_era(mcp):
    with pytest.raises(McpUnavailable, match="does not speak the stateless era"):
        connected(mcp.b, "stateless")


def test_an_expired_session_is_opened_again_and_the_call_sent_again(mcp, admin):
    client = connected(mcp.a, "session")
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    first = adapter.call(remote("write", note="before"), "agent-1", seed=1)
    # No request can tell when the server ends an idle session without renewing it: wait past it.
    time.sleep(SESSION_IDLE_S + 0.7)
    second = adapter.call(remote("write", note="after"), "agent-1", seed=2)
    assert first.outcome is second.outcome is Outcome.SUCCEEDED
    assert (second.attempts, second.reissues, second.failures) == (1, 1, [])
    assert client.sessions_renewed == 1
    assert len(seen_by_server(admin, mcp.schema, second)) == 1, "the request the server answered 404 never ran"
    adapter.close()
    client.close()


def test_sessions_are_deleted_at_the_end(mcp):
    client = connected(mcp.b, "session")
    session = client.session()
    session.open()
    session_id = session.session_id
    assert session.request("tools/list", {})["tools"]
    session.close()
    gone = client.send("tools/list", {}, session_id=session_id, version="2025-11-25")
    assert gone.status == 404, "the server no longer knows the session"
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    adapter.open_session("agent-1")
    assert adapter.call(remote("chatty"), "agent-1", seed=1).outcome is Outcome.SUCCEEDED
    adapter.close()
    assert client.sessions_closed == client.sessions_opened == 3  # connect()'s own, this test's, the agent's
    client.close()


@pytest.mark.parametrize("server, era", [("b", "session"), ("a", "stateless")])
def test_a_conflict_rolled_back_is_retried_with_the_same_op_id(mcp, admin, server, era):
    client = connected(getattr(mcp, server), era)
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    record = adapter.call(remote("conflict", fails=2, sqlstate="40001"), "agent-1", seed=1)
    assert record.outcome is Outcome.SUCCEEDED
    assert record.attempts == 3 and record.reissues == 0 and record.is_error_replies == 2
    assert record.failures == [Failure.SERIALIZATION_FAILURE] * 2
    # Each request timed to its reply: mcp.client.operation.duration, its failure as error.type.
    assert [(system, kind) for system, _, _, kind in record.operations] == [
        ("mcp", "serialization_failures"), ("mcp", "serialization_failures"), ("mcp", "")]
    assert all(0 < seconds <= record.duration_s for _, seconds, _, _ in record.operations)
    assert record.server_failures == [Failure.SERIALIZATION_FAILURE] * 2 and record.server_attempts == 3
    assert seen_by_server(admin, mcp.schema, record) == [(str(record.op_id),) * 3] * 3
    assert written(admin, mcp.schema, record) == 1
    # A deadlock told by its SQLSTATE alone: class 40, "transaction rollback", says it was rolled back.
    deadlock = adapter.call(remote("conflict", fails=1, sqlstate="40P01", say_kind=False, rolled_back=None),
                            "agent-1", seed=2)
    assert deadlock.outcome is Outcome.SUCCEEDED and deadlock.failures == [Failure.DEADLOCK]
    client.close()


@pytest.mark.parametrize("arguments, failure", [
    ({"sqlstate": "40001", "rolled_back": False}, Failure.SERIALIZATION_FAILURE),  # the server says: not rolled back
    ({"sqlstate": "55P03", "say_kind": False, "rolled_back": None}, Failure.LOCK_TIMEOUT),  # nothing says it was
])
def test_a_conflict_not_known_rolled_back_is_not_retried(mcp, admin, arguments, failure):
    client = connected(mcp.b)
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    record = adapter.call(remote("conflict", fails=1, **arguments), "agent-1", seed=1)
    assert record.outcome is Outcome.FAILED and record.failures == [failure] and record.attempts == 1
    assert len(seen_by_server(admin, mcp.schema, record)) == 1
    client.close()


def test_refusals_and_errors_end_the_call(mcp, admin):
    recorder = Recorder()
    client = connected(mcp.a, "session")
    adapter = McpToolAdapter(client, QUICK_RETRIES, recorder.call_finished)
    refused = adapter.call(remote("refuse"), "agent-1", seed=1)
    assert refused.outcome is Outcome.FAILED and refused.failures == [Failure.REFUSED]
    assert str(refused.exception) == "the account cannot pay"
    crashed = adapter.call(remote("boom"), "agent-1", seed=2)  # isError with a text only
    unknown = adapter.call(remote("nosuch"), "agent-1", seed=3)
    for record in (crashed, unknown):
        assert record.outcome is Outcome.FAILED and record.failures == [Failure.ERROR] and record.attempts == 1
        assert record.is_error_replies == 1
    rpc_error = adapter.call(remote("invalid"), "agent-1", seed=4)  # a JSON-RPC error, not a tool result
    assert rpc_error.outcome is Outcome.FAILED and rpc_error.failures == [Failure.ERROR]
    assert isinstance(rpc_error.exception, McpError) and rpc_error.exception.code == -32602
    assert rpc_error.is_error_replies == 0 and len(seen_by_server(admin, mcp.schema, rpc_error)) == 1
    no_arguments_step = adapter.call(Tool("write", lambda tx: None), "agent-1", seed=5)
    assert no_arguments_step.outcome is Outcome.FAILED and "no arguments step" in str(no_arguments_step.exception)
    assert [request["exception"] is not None for request in recorder.requests] == [True] * 5
    client.close()


def test_a_tool_that_calls_the_servers_tools_itself_keeps_one_op_id_across_its_retries(mcp, admin):
    """A user's tool of backend "mcp": its function runs here and calls the server's `conflict`
    through tx.mcp; the conflicts the server rolled back are retried by the policy, each request
    under the call's one op id, and what the function returns is the call's value."""
    recorder = Recorder()
    client = connected(mcp.a, "session")
    adapter = McpToolAdapter(client, QUICK_RETRIES, recorder.call_finished)

    def book(tx: Any, *, seat: int) -> dict[str, Any]:
        result = tx.mcp.call("conflict", {"fails": 2, "sqlstate": "40001"})
        return {"seat": seat, "written": result.value}

    record = adapter.call(Tool("book", book, backend="mcp", arguments=lambda rng: {"seat": 7}), "agent-1", seed=1)
    assert record.outcome is Outcome.SUCCEEDED and record.value == {"seat": 7, "written": "written"}
    assert (record.attempts, record.failures, record.is_error_replies) == (3, [Failure.SERIALIZATION_FAILURE] * 2, 2)
    assert record.server_attempts == 3 and record.arguments == {"seat": 7}
    assert seen_by_server(admin, mcp.schema, record) == [(str(record.op_id),) * 3] * 3, "one op id, three requests"
    assert written(admin, mcp.schema, record) == 1
    assert recorder.requests[0]["request_type"] == "mcp" and recorder.requests[0]["exception"] is None
    adapter.close()
    client.close()


def test_what_a_tool_that_calls_the_server_decides_itself(mcp, admin):
    """A refusal raised by tx.mcp.call, one the function raises on a result it asked to see
    (check=False), its own bug, and a tool without an arguments step (it runs here, where the seed is)."""
    client = connected(mcp.b)
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)

    def calling(function: Any, arguments: Any = None) -> Tool:
        return Tool(function.__name__, function, backend="mcp", arguments=arguments)

    def pay(tx: Any) -> None:
        tx.mcp.call("refuse")

    def pay_or_say_why(tx: Any) -> None:
        result = tx.mcp.call("refuse", check=False)
        assert result.is_error and result.failure is Failure.REFUSED and result.text == "the account cannot pay"
        raise Refused(f"refused: {result.text}")

    def buggy(tx: Any) -> None:
        tx.mcp.call("write", {"note": "before the bug"})
        raise KeyError("seat")

    def note(tx: Any) -> Any:
        return tx.mcp.call("write", {"note": f"note {tx.rng.randint(1, 10**6)}"}).value

    refused, refused_itself, crashed = (adapter.call(calling(f), "agent-1", seed=1)
                                        for f in (pay, pay_or_say_why, buggy))
    assert (refused.outcome, refused.failures, refused.attempts) == (Outcome.FAILED, [Failure.REFUSED], 1)
    assert isinstance(refused.exception, McpToolFailed) and refused.exception.result.is_error
    assert (refused_itself.failures, str(refused_itself.exception)) == ([Failure.REFUSED], "refused: the account"
                                                                                          " cannot pay")
    assert (crashed.outcome, crashed.failures, crashed.attempts) == (Outcome.FAILED, [Failure.ERROR], 1)
    assert written(admin, mcp.schema, crashed) == 1, "what the server applied before the bug stays"
    drawn = adapter.call(calling(note), "agent-1", seed=5)
    again = adapter.call(calling(note), "agent-2", seed=5)
    assert drawn.outcome is again.outcome is Outcome.SUCCEEDED and drawn.arguments is None
    assert drawn.value == again.value and drawn.value["note"].startswith("note "), "the same seed, the same call"
    client.close()


def test_a_reply_that_never_came_in_time_is_indeterminate(mcp, admin):
    client = connected(mcp.b, timeout_s=0.5, connect_timeout_s=0.2)
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    record = adapter.call(remote("sleepy", seconds=1.0), "agent-1", seed=1)
    assert record.outcome is Outcome.INDETERMINATE and isinstance(record.exception, ReplyTimedOut)
    assert (record.attempts, record.reissues, record.failures) == (1, 0, [Failure.CONNECTION_LOST])
    wait_until(lambda: written(admin, mcp.schema, record), "the server to finish the call the client gave up on",
               timeout=10)
    client.close()


class ReplyCutter(_Proxy):
    """A proxy in front of an MCP server that cuts the connection instead of passing on the
    reply to the first `cuts` requests carrying `marker`: the server ran them, the client never
    hears back."""

    def __init__(self, url: str, marker: bytes, cuts: int = 1) -> None:
        super().__init__(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))
        self._marker, self._cuts = marker, cuts
        self._clients: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __exit__(self, *exc: object) -> None:
        """Stopped, it refuses connections, and the open ones end (the client's pool keeps them)."""
        super().__exit__(*exc)
        for client in self._clients:
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def _relay(self, client: socket.socket, address: object) -> None:
        self._clients.append(client)
        super()._relay(client, address)

    def _request(self, data: bytes, connection: dict) -> None:
        if self._cuts and self._marker in data:
            self._cuts -= 1
            connection["cut"] = True

    def _reply(self, data: bytes, connection: dict) -> bool:
        return not connection.get("cut")


@pytest.mark.parametrize("reissue", [True, False])
def test_a_lost_reply_is_sent_again_with_the_same_op_id(mcp, admin, reissue):
    with ReplyCutter(mcp.b, b"lose-me") as proxy:
        client = connected(proxy.url)
        adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished, reissue_lost=reissue)
        record = adapter.call(remote("write", note="lose-me"), "agent-1", seed=1)
        client.close()
    assert record.failures[0] is Failure.CONNECTION_LOST
    if reissue:
        assert record.outcome is Outcome.SUCCEEDED
        assert (record.attempts, record.reissues, record.failures) == (2, 1, [Failure.CONNECTION_LOST])
        assert seen_by_server(admin, mcp.schema, record) == [(str(record.op_id),) * 3] * 2
    else:
        assert record.outcome is Outcome.INDETERMINATE and isinstance(record.exception, ReplyLost)
        assert record.attempts == 1 and record.reissues == 0
    assert written(admin, mcp.schema, record) == 1, "applied once, by op id"


def test_a_call_sent_again_that_meets_the_key_on_its_op_id_was_applied_by_an_earlier_send(mcp):
    """The recipe's answer (docs/mcp.md): the call sent again after its reply was lost fails on
    the unique key its op id is written under (23505). That is no error, and no try more: the
    call stays indeterminate, since what the earlier send returned never came."""
    with ReplyCutter(mcp.b, b'"23505"') as proxy:
        client = connected(proxy.url)
        adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
        record = adapter.call(remote("conflict", fails=2, sqlstate="23505", say_kind=False, rolled_back=True),
                              "agent-1", seed=1)
        client.close()
    assert record.outcome is Outcome.INDETERMINATE and isinstance(record.exception, ReplyLost)
    assert (record.attempts, record.reissues, record.is_error_replies) == (2, 1, 1)
    assert record.failures == [Failure.CONNECTION_LOST], "not an error"


def _closed_by_this_machine(url: str) -> int:
    """Connections to `url`'s port this machine closed first, in the last minute (TIME_WAIT)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return sum(1 for connection in psutil.net_connections("tcp")
               if connection.status == psutil.CONN_TIME_WAIT and connection.raddr and connection.raddr.port == port)


def test_a_connection_is_used_again_after_a_reply_in_an_event_stream(toolserver, schema, admin):
    """The reference server ends a reply's event stream a moment after the reply: the client reads
    that end apart and uses the connection again, where leaving it unread closed it, and the next
    call opened another (here: all 20)."""
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--threads", "1", "--tool-work", "0")
    client = connected(server.url, "session")
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    closed_before = _closed_by_this_machine(server.url)
    records = [adapter.call(built_in_tool("deduct_credits", schema), "agent-1", seed=n) for n in range(20)]
    closed = _closed_by_this_machine(server.url) - closed_before
    adapter.close()
    client.close()
    assert all(record.outcome is Outcome.SUCCEEDED for record in records)
    assert client.replies["event-stream"] >= 20
    # A stream that a very busy server ends later than 1 s after its reply costs a connection.
    assert closed <= 2, f"{closed} connections closed for 20 calls"
    assert server.stop() == 0


def test_a_server_that_cannot_be_reached(mcp):
    with pytest.raises(McpUnavailable, match=r"^MCP server http://\*\*\*@127\.0\.0\.1:\d+/mcp\?key=\*\*\*: POST: "
                                             r"cannot connect") as refused:
        connected(f"http://user:secret@127.0.0.1:{free_port()}/mcp?key=secret")
    assert "secret" not in str(refused.value)
    proxy = ReplyCutter(mcp.b, b"", cuts=0)  # cuts nothing: stopped, it refuses connections
    with proxy:
        client = connected(proxy.url, connect_timeout_s=0.5)
    adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
    record = adapter.call(remote("write", note="never sent"), "agent-1", seed=1)
    assert record.outcome is Outcome.FAILED, "provably never sent: nothing applied"
    # Refused, it may be restarting: tried for connect_timeout_s before the policy's tries count.
    assert record.attempts > QUICK_RETRIES.max_tries and record.duration_s >= 0.5
    assert set(record.failures) == {Failure.CONNECTION_LOST} and len(record.failures) == record.attempts
    assert isinstance(record.exception, NotDelivered)
    client.close()


def _call_out(mcp, admin, seconds: float):
    """An agent's call of a tool that sleeps `seconds`, once the server has its request: the
    recorder, the records started, the client, the adapter and the agent's greenlet."""
    recorder = Recorder()
    started: list[CallRecord] = []
    recorder.call_started.add_listener(lambda record: started.append(record))
    client = connected(mcp.b)
    adapter = McpToolAdapter(client, QUICK_RETRIES, recorder.call_finished, recorder.call_started)
    agent = gevent.spawn(adapter.call, remote("sleepy", seconds=seconds), "agent-1", 1)
    wait_until(lambda: started and seen_by_server(admin, mcp.schema, started[0]), "the server to get the request")
    return recorder, started, client, adapter, agent


def test_an_agent_stopped_while_its_request_is_out_is_indeterminate(mcp, admin):
    recorder, started, client, adapter, agent = _call_out(mcp, admin, 1.0)
    agent.kill()
    assert recorder.records == started and started[0].outcome is Outcome.INDETERMINATE and started[0].cut_off
    assert adapter.calls_in_flight == 0
    client.close()


def test_calls_abandoned_in_flight_are_reported_indeterminate_once(mcp, admin):
    recorder, started, client, adapter, agent = _call_out(mcp, admin, 0.5)
    abandoned = adapter.abandon_calls_in_flight()
    assert abandoned == started and abandoned[0].outcome is Outcome.INDETERMINATE and recorder.records == abandoned
    assert not abandoned[0].cut_off, "still out when the load gave up on it: the platform's unknown"
    agent.join()
    assert len(recorder.records) == 1 and adapter.calls_in_flight == 0, "its own end, later, is not reported"
    client.close()


def test_many_agents_call_at_once_and_overlap_on_the_server(mcp):
    recorder = Recorder()
    client = connected(mcp.a, "session")
    adapter = McpToolAdapter(client, QUICK_RETRIES, recorder.call_finished)
    agents = [gevent.spawn(adapter.call, remote("hold", seconds=0.3), f"agent-{n}", n) for n in range(60)]
    gevent.joinall(agents, raise_error=True)
    records = [agent.value for agent in agents]
    assert all(record.outcome is Outcome.SUCCEEDED for record in records)
    assert max(record.value for record in records) >= 20, "the server ran many of them at once"
    assert client.sessions_opened == 61 and len(recorder.records) == 60
    adapter.close()
    assert client.sessions_closed == 61
    client.close()


def test_a_bearer_token_and_tls(mcp):
    with pytest.raises(McpUnavailable, match="HTTP 401") as unauthorized:
        connected(mcp.c, ca_file=mcp.ca_file)
    with pytest.raises(McpUnavailable, match="cannot connect.*certificate verify failed"):
        connected(mcp.c, token=mcp.token)  # the system's authorities do not know the test's
    for tls in ({"ca_file": mcp.ca_file}, {"tls_verify": False}):
        client = connected(mcp.c, token=mcp.token, **tls)
        adapter = McpToolAdapter(client, QUICK_RETRIES, Recorder().call_finished)
        assert adapter.call(remote("chatty"), "agent-1", seed=1).outcome is Outcome.SUCCEEDED
        assert mcp.token not in repr(client.settings)
        client.close()
    assert mcp.token not in str(unauthorized.value)
