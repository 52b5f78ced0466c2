"""MCP with an implementation independent of the Python SDK that toolclash's own servers stand on:
the official TypeScript SDK (its pinned packages in tests/mcp_ts_server/package.json), both ways.

toolclash's MCP client (transport.mcp, under gevent as the load runs it) against a server on the
TypeScript SDK (tests/mcp_ts_server/server.mjs, one node process for the file, no database: the
protocol is under test): both eras, replies as JSON and as event streams, sessions and the SDK's
server without them, the op id arriving three ways, a conflict retried with the same op id, a
refusal, an unknown tool, a reply past the client's timeout, an ended session opened again, DELETE
at the end. And the reference tool server (`python -m toolserver`) called by the TypeScript SDK's
client (tests/mcp_ts_server/client.mjs) in both eras.

Without node or the pinned packages the tests are skipped, naming the install command; with
CI=true that fails (`.ci/run` installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from db.errors import Failure
from db.tool import Tool
from tests.support import QUICK_RETRIES, ROOT, Recorder, prepared_schema, row_of, wait_until
from toolserver.identity import AGENT_ID_META_KEY, OP_ID_META_KEY
from transport.call_record import CallRecord, Outcome
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient
from transport.mcp.exchange import McpError, ReplyTimedOut
from transport.mcp.settings import McpSettings

TS_SDK = ROOT / "tests" / "mcp_ts_server"
INSTALL = "npm ci --prefix tests/mcp_ts_server"
TOOLS = {"write", "conflict", "refuse", "sleepy", "chatty", "region"}


def _not_installed() -> str | None:
    """Why the TypeScript SDK cannot run here, naming what installs it; None when it can."""
    node = shutil.which("node")
    if node is None:
        return f"node is not installed: apt-get install -y nodejs (Node.js 20 or later), then {INSTALL}"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < 20:
        return f"node {version} is too old for the TypeScript MCP SDK: it needs Node.js 20 or later"
    pinned = json.loads((TS_SDK / "package.json").read_text(encoding="utf-8"))["dependencies"]
    for name, wanted in pinned.items():
        installed = TS_SDK / "node_modules" / name / "package.json"
        version = json.loads(installed.read_text(encoding="utf-8"))["version"] if installed.exists() else None
        if version != wanted:
            return f"{name} {wanted} (the TypeScript MCP SDK) is not installed: {INSTALL}"
    return None


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, once the pinned TypeScript SDK is there to run; skipped otherwise,
    naming the install command; with CI=true that fails."""
    missing = _not_installed()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return shutil.which("node")


class TsServer:
    """tests/mcp_ts_server/server.mjs, started once for the file: its endpoints and what it received."""

    def __init__(self, node: str) -> None:
        self.process = subprocess.Popen([node, str(TS_SDK / "server.mjs"), "--port", "0"], cwd=ROOT,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        with gevent.Timeout(30, AssertionError("the TypeScript MCP server did not start within 30 s")):
            line = self.process.stdout.readline()
        found = re.search(r"http://\S+", line)
        if found is None:
            self.close()
            raise AssertionError(f"the TypeScript MCP server did not start: {line}{self.process.stderr.read()}")
        self.base = found.group(0)

    def url(self, endpoint: str) -> str:
        return f"{self.base}/{endpoint}/mcp"

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/admin/state", timeout=10) as reply:
            return json.load(reply)

    def calls_of(self, record: CallRecord) -> list[dict[str, Any]]:
        """The tools/call requests the server's tool received for the call, by its op id."""
        return [call for call in self.state()["calls"] if call["meta_op_id"] == str(record.op_id)]

    def end_sessions(self) -> int:
        request = urllib.request.Request(f"{self.base}/admin/end-sessions", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)["ended"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture(scope="module")
def ts_server(node) -> Iterator[TsServer]:
    server = TsServer(node)
    try:
        yield server
    finally:
        server.close()


def remote(name: str, **arguments: Any) -> Tool:
    """A tool the server runs: here only its name and its arguments step matter."""

    def runs_on_the_server(tx: Any, **_: Any) -> None:
        raise AssertionError(f"{name} runs on the MCP server, not here")

    return Tool(name, runs_on_the_server, arguments=lambda rng: dict(arguments))


def connected(url: str, era: str, **settings: Any) -> tuple[McpClient, McpToolAdapter, Recorder]:
    client = McpClient(McpSettings(url, era=era, **settings))
    client.connect()
    recorder = Recorder()
    return client, McpToolAdapter(client, QUICK_RETRIES, recorder.call_finished, recorder.call_started), recorder


@pytest.mark.parametrize("endpoint, era, found, form", [
    ("sse", "session", "session", "event-stream"),
    ("json", "session", "session", "json"),
    ("sse", "auto", "stateless", "event-stream"),
    ("json", "stateless", "stateless", "json"),
    ("default", "auto", "stateless", "json"),
    ("default", "session", "session", "event-stream"),  # the SDK's session era without sessions
    ("session-only", "auto", "session", "event-stream"),  # server/discover refused: the session era
])
def test_a_call_in_each_era_and_reply_form_carries_the_op_id_three_ways(ts_server, endpoint, era, found, form):
    before = ts_server.state()["sessions"]
    client, adapter, recorder = connected(ts_server.url(endpoint), era)
    assert client.era == found
    assert client.protocol_version == ("2026-07-28" if found == "stateless" else "2025-11-25")
    assert client.server_info["name"] == "toolclash-ts-conformance"
    assert set(client.tools) == TOOLS and all(client.tools[name].takes_op_id for name in TOOLS - {"chatty", "region"})
    record = adapter.call(remote("write", note="hello"), "agent-7", seed=1)
    chatty = adapter.call(remote("chatty"), "agent-7", seed=2)  # in the session era, a log message first
    adapter.close()
    client.close()

    op_id = str(record.op_id)
    assert record.outcome is Outcome.SUCCEEDED and (record.attempts, record.reissues, record.failures) == (1, 0, [])
    assert record.value == {"note": "hello", "received": {"meta": op_id, "header": op_id, "argument": op_id}}
    assert record.arguments == {"note": "hello"}, "the drawn arguments; the op id is added on the wire"
    assert (record.server_attempts, record.server_failures) == (1, [])
    [seen] = ts_server.calls_of(record)
    assert (seen["era"], seen["agent_id"]) == (found, "agent-7")
    assert seen["protocol_version"] == client.protocol_version
    assert chatty.outcome is Outcome.SUCCEEDED and chatty.value == "done"
    refused_probe = endpoint == "session-only"  # server/discover answered 400, in JSON
    assert client.replies[form] > 0 and client.replies[{"json": "event-stream"}.get(form, "json")] == refused_probe
    assert recorder.records == [record, chatty] and all(r["exception"] is None for r in recorder.requests)

    # Sessions: connect()'s and the agent's, each DELETEd at its end; none where the server keeps
    # none (the stateless era; the SDK's session era without sessions: no Mcp-Session-Id, no DELETE).
    with_sessions = found == "session" and endpoint != "default"
    assert bool(seen["session_id"]) is with_sessions
    assert client.sessions_opened == client.sessions_closed == (2 if found == "session" else 0)
    after = ts_server.state()["sessions"]
    opened, deleted = after["opened"] - before["opened"], after["deleted"] - before["deleted"]
    assert (opened, deleted) == ((2, 2) if with_sessions else (0, 0))


@pytest.mark.parametrize("endpoint, era", [("json", "session"), ("sse", "stateless")])
def test_a_conflict_rolled_back_is_retried_with_the_same_op_id(ts_server, endpoint, era):
    client, adapter, _ = connected(ts_server.url(endpoint), era)
    record = adapter.call(remote("conflict", fails=2), "agent-1", seed=1)
    client.close()
    assert record.outcome is Outcome.SUCCEEDED and record.value == {"attempt": 3}
    assert (record.attempts, record.reissues, record.is_error_replies) == (3, 0, 2)
    assert record.failures == record.server_failures == [Failure.SERIALIZATION_FAILURE] * 2
    assert record.server_attempts == 3
    op_id = str(record.op_id)
    assert [(c["meta_op_id"], c["idempotency_key"], c["argument_op_id"]) for c in ts_server.calls_of(record)] == [
        (op_id, op_id, op_id)] * 3, "every try carried the same op id, three ways"


def test_a_refusal_and_an_unknown_tool_end_the_call(ts_server):
    client, adapter, _ = connected(ts_server.url("sse"), "session")
    refused = adapter.call(remote("refuse"), "agent-1", seed=1)
    assert refused.outcome is Outcome.FAILED and refused.failures == [Failure.REFUSED]
    assert (refused.attempts, refused.is_error_replies, str(refused.exception)) == (1, 1, "the account cannot pay")
    # The TypeScript SDK answers an unknown tool with a JSON-RPC error (the Python SDK with isError).
    unknown = adapter.call(remote("nosuch"), "agent-1", seed=2)
    assert unknown.outcome is Outcome.FAILED and unknown.failures == [Failure.ERROR] and unknown.attempts == 1
    assert isinstance(unknown.exception, McpError) and unknown.exception.code == -32602
    assert unknown.is_error_replies == 0
    client.close()


def test_an_argument_marked_for_a_header_is_mirrored_as_the_sdk_checks_it(ts_server):
    """The stateless era's Mcp-Param-Region, in the encoded form for a value that is not plain
    ASCII: the SDK checks the header against the body before the tool runs."""
    client, adapter, _ = connected(ts_server.url("json"), "stateless")
    record = adapter.call(remote("region", region="Zürich"), "agent-1", seed=1)
    client.close()
    assert record.outcome is Outcome.SUCCEEDED, record.exception
    assert record.value == {"argument": "Zürich", "header": "=?base64?WsO8cmljaA==?="}


@pytest.mark.parametrize("era", ["session", "stateless"])
def test_a_slow_reply_comes_after_keep_alive_comments(ts_server, era):
    client, adapter, _ = connected(ts_server.url("sse"), era)
    record = adapter.call(remote("sleepy", seconds=0.5), "agent-1", seed=1)
    client.close()
    assert record.outcome is Outcome.SUCCEEDED and record.value == 0.5 and record.attempts == 1


@pytest.mark.parametrize("endpoint, era", [("sse", "session"), ("json", "stateless")])
def test_a_reply_past_the_timeout_is_indeterminate(ts_server, endpoint, era):
    client, adapter, _ = connected(ts_server.url(endpoint), era, timeout_s=0.5, connect_timeout_s=0.2)
    # On the event stream, keep-alive comments come every 0.2 s: they do not extend the wait.
    record = adapter.call(remote("sleepy", seconds=1.0), "agent-1", seed=1)
    assert record.outcome is Outcome.INDETERMINATE and isinstance(record.exception, ReplyTimedOut)
    assert (record.attempts, record.reissues, record.failures) == (1, 0, [Failure.CONNECTION_LOST])
    wait_until(lambda: [call["finished"] for call in ts_server.calls_of(record)] == [True],
               "the server to finish the call the client gave up on", timeout=10)
    client.close()


def test_an_ended_session_is_opened_again_and_the_call_sent_again(ts_server):
    client, adapter, _ = connected(ts_server.url("sse"), "session")
    first = adapter.call(remote("write", note="before"), "agent-1", seed=1)
    assert ts_server.end_sessions() == 1, "the agent's session (connect()'s was DELETEd)"
    second = adapter.call(remote("write", note="after"), "agent-1", seed=2)
    assert first.outcome is second.outcome is Outcome.SUCCEEDED
    assert (second.attempts, second.reissues, second.failures) == (1, 1, [])
    assert client.sessions_renewed == 1 and client.sessions_opened == 3
    ended = ts_server.calls_of(first)[0]["session_id"]
    [renewed] = ts_server.calls_of(second)
    assert renewed["session_id"] != ended, "sent again in a new session, once: the 404'd request never ran"
    before = ts_server.state()["sessions"]["deleted"]
    adapter.close()
    assert ts_server.state()["sessions"]["deleted"] == before + 1, "the new session DELETEd at the end"
    # The client DELETEd the two it ended; the one the server ended is counted renewed.
    assert client.sessions_closed == client.sessions_opened - client.sessions_renewed == 2
    # The SDK's own answer to a session ended, by the server or by DELETE.
    for session_id in (ended, renewed["session_id"]):
        gone = client.send("tools/list", {}, session_id=session_id, version="2025-11-25")
        assert (gone.status, gone.message["error"]["code"]) == (404, -32001)
    client.close()


@pytest.fixture
def ts_client(node):
    """The TypeScript SDK's client (tests/mcp_ts_server/client.mjs) running a plan at a URL."""

    def run(url: str, era: str, *agents: list[dict[str, Any]], list_tools: bool = False) -> dict[str, Any]:
        plan = json.dumps({"era": era, "list": list_tools, "agents": list(agents)})
        done = subprocess.run([node, str(TS_SDK / "client.mjs"), url], input=plan, text=True, capture_output=True,
                              timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    return run


def test_the_reference_server_answers_the_typescript_sdk_client_in_both_eras(ts_client, toolserver, schema, admin):
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--hold-time", "0", "--tool-work", "0")
    for era, version in (("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")):
        op_id = uuid.uuid4()
        call = {"tool": "increment_counter", "arguments": {"counter": 2},
                "meta": {OP_ID_META_KEY: str(op_id), AGENT_ID_META_KEY: "agent-ts"}}
        bad = {"tool": "increment_counter", "arguments": {"counter": "two"}, "meta": None}
        done = ts_client(server.url, era, [call, bad], list_tools=True)
        assert (done["protocol_version"], done["session"]) == (version, era == "legacy")
        assert sorted(tool["name"] for tool in done["tools"]) == server.info()["tools"]
        result, refused = done["results"][0]
        assert result.get("isError") is False, result
        told = result["structuredContent"]
        assert (told["op_id"], told["op_id_from"], told["attempts"]) == (str(op_id), "meta", 1)
        assert row_of(admin, schema, "SELECT counter_id FROM {schema}.counter_ops WHERE op_id = %s", op_id) == (2,)
        assert refused.get("isError") is True and "structuredContent" not in refused, "refused by the schema"
    assert server.stop() == 0
