"""What the MCP client reads and writes, without a server: event streams as servers send them, the
stateless era's header values (the specification's own examples), tool results read by their
fields into the outcome taxonomy, SQLSTATEs, and the settings with their redaction."""

from __future__ import annotations

import uuid

import pytest

from db.connect import redact, redacted_url
from db.errors import Failure, classify_sqlstate
from db.tool import Tool, Transaction, tool
from transport.mcp.headers import InvalidToolSchema, header_value, param_headers
from transport.mcp.settings import McpSettings
from transport.mcp.sse import message_data
from transport.mcp.tool_calls import McpResult, McpToolFailed
from transport.mcp.tool_result import read_tool_result


def _lines(stream: bytes):
    lines = iter(stream.splitlines(keepends=True))
    return lambda: next(lines, b"")


def test_event_streams_give_the_data_of_message_events_only():
    stream = (b"\xef\xbb\xbfid: 1\r\ndata:\r\n\r\n"  # the priming event: an id, empty data
              b": ping\r\n\r\n"  # a keep-alive comment
              b"event: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n"  # two data lines, joined by a newline
              b"event: other\ndata: skipped\n\n"
              b"data:{\"b\":2}\nretry: 100\n\n"  # LF line ends, no space after the colon, no event type
              b"data: never ended\n")  # the stream ends before the blank line: no event
    assert list(message_data(_lines(stream))) == ['{"a":\n1}', '{"b":2}']


@pytest.mark.parametrize("value, encoded", [  # the specification's Value Encoding table
    ("us-west1", "us-west1"),
    ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
    (" padded ", "=?base64?IHBhZGRlZCA=?="),
    ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
    ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
])
def test_header_values(value, encoded):
    assert header_value(value) == encoded


def test_arguments_marked_for_headers():
    schema = {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "where": {"type": "object", "properties": {"zone": {"type": "integer", "x-mcp-header": "Zone"}}},
        "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"}}}
    marks = {mark.header: mark for mark in param_headers(schema)}
    assert sorted(marks) == ["Mcp-Param-Dry-Run", "Mcp-Param-Region", "Mcp-Param-Zone"]
    arguments = {"region": "eu", "where": {"zone": 3}, "dry": False}
    assert [marks[h].value_in(arguments) for h in sorted(marks)] == ["false", "eu", "3"]
    assert marks["Mcp-Param-Zone"].value_in({"where": {"zone": None}}) is None
    assert marks["Mcp-Param-Region"].value_in({}) is None


@pytest.mark.parametrize("schema, why", [
    ({"properties": {"r": {"type": "number", "x-mcp-header": "R"}}}, "not one of"),
    ({"properties": {"r": {"type": "string", "x-mcp-header": "R r"}}}, "not an HTTP field name"),
    ({"properties": {"a": {"type": "string", "x-mcp-header": "X"}, "b": {"type": "string", "x-mcp-header": "x"}}},
     "used twice"),
    ({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}},
     "through `properties` alone"),
    ({"anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}, "through `properties` alone"),
])
def test_marks_that_break_the_constraints_make_the_tool_invalid(schema, why):
    with pytest.raises(InvalidToolSchema, match=why):
        param_headers(schema)


def test_tool_results_read_by_their_fields():
    ok = read_tool_result({"isError": False, "structuredContent": {"value": 7, "attempts": 3,
                                                                   "failures": ["deadlocks", "deadlocks"]}})
    assert (ok.failure, ok.value, ok.server_attempts, ok.server_failures) == (None, 7, 3, [Failure.DEADLOCK] * 2)
    assert read_tool_result({"content": [{"type": "text", "text": "hi"}]}).value == "hi"
    kind = read_tool_result({"isError": True, "structuredContent": {"kind": "lock_timeouts", "rolled_back": True}})
    assert (kind.failure, kind.rolled_back) == (Failure.LOCK_TIMEOUT, True)
    by_sqlstate = read_tool_result({"isError": True, "structuredContent": {"sqlstate": "40P01"}})
    assert (by_sqlstate.failure, by_sqlstate.rolled_back) == (Failure.DEADLOCK, True)
    not_rolled_back = read_tool_result({"isError": True, "structuredContent": {"sqlstate": "55P03"}})
    assert (not_rolled_back.failure, not_rolled_back.rolled_back) == (Failure.LOCK_TIMEOUT, False)
    refused = read_tool_result({"isError": True, "structuredContent": {"kind": "errors", "refused": True}})
    assert refused.failure is Failure.REFUSED
    texts_only = read_tool_result({"isError": True, "content": [{"type": "text", "text": "serialization failure"}]})
    assert (texts_only.failure, texts_only.message) == (Failure.ERROR, "serialization failure"), "never by its text"
    input_required = read_tool_result({"resultType": "input_required", "inputRequests": {}})
    assert input_required.failure is Failure.ERROR


def test_a_result_for_a_tools_function_keeps_the_servers_fields_beside_toolclashs_reading():
    ok = McpResult.of({"content": [{"type": "text", "text": "booked"}, {"type": "image", "data": "…"}],
                       "isError": False, "structuredContent": {"value": {"seat": 7}, "attempts": 2,
                                                               "failures": ["deadlocks"]}})
    assert (ok.is_error, ok.failure, ok.value, ok.text) == (False, None, {"seat": 7}, "booked")
    assert ok.structured_content == {"value": {"seat": 7}, "attempts": 2, "failures": ["deadlocks"]}
    assert (ok.server_attempts, ok.server_failures) == (2, [Failure.DEADLOCK])
    ok.raise_for_error()  # nothing to raise
    plain = McpResult.of({"content": [{"type": "text", "text": "42"}]})
    assert (plain.is_error, plain.structured_content, plain.value) == (False, None, "42")

    conflict = McpResult.of({"isError": True, "content": [{"type": "text", "text": "could not serialize"}],
                             "structuredContent": {"kind": "serialization_failures", "sqlstate": "40001"}})
    assert (conflict.is_error, conflict.failure, conflict.rolled_back) == (True, Failure.SERIALIZATION_FAILURE, True)
    with pytest.raises(McpToolFailed, match="^could not serialize$") as raised:
        conflict.raise_for_error()
    assert (raised.value.failure, raised.value.rolled_back, raised.value.result) == (
        Failure.SERIALIZATION_FAILURE, True, conflict)
    refused = McpResult.of({"isError": True, "structuredContent": {"refused": True, "rolled_back": True}})
    with pytest.raises(McpToolFailed, match="^refusals$") as raised:  # no text: its kind
        refused.raise_for_error()
    assert raised.value.failure is Failure.REFUSED
    unknown = McpResult.of({"isError": True, "structuredContent": {"kind": "lock_timeouts", "rolled_back": False}})
    assert (unknown.failure, unknown.rolled_back) == (Failure.LOCK_TIMEOUT, False), "not to be tried again"
    asking = McpResult.of({"resultType": "input_required"})
    assert (asking.is_error, asking.failure) == (False, Failure.ERROR), "no input is given: failed all the same"


def test_tx_mcp_is_for_a_tool_of_backend_mcp_only():
    assert Tool("book", lambda tx: None, backend="mcp").calls_mcp and not Tool("book", lambda tx: None).calls_mcp
    assert not Tool("book", lambda tx: None, backend="mcp").uses_postgres
    with pytest.raises(RuntimeError, match="mark it @tool\\(backend='mcp'\\)"):
        Transaction(uuid.uuid4(), "agent-1", 1, None, None).mcp
    with pytest.raises(ValueError, match="backend 'pg', 'redis' or 'mcp'"):
        tool(backend="http")


@pytest.mark.parametrize("sqlstate, failure", [
    ("40001", Failure.SERIALIZATION_FAILURE), ("40P01", Failure.DEADLOCK), ("55P03", Failure.LOCK_TIMEOUT),
    ("08006", Failure.CONNECTION_LOST), ("57P01", Failure.CONNECTION_LOST), ("57014", Failure.ERROR),
    ("23505", Failure.ERROR), ("ZZ999", Failure.ERROR),
])
def test_sqlstates_reported_by_a_server(sqlstate, failure):
    assert classify_sqlstate(sqlstate) is failure


def test_settings_refuse_bad_values_and_never_show_credentials():
    assert redacted_url("https://user:pw@mcp.example:8443/mcp?token=abc&x=") == \
        "https://***@mcp.example:8443/mcp?token=***&x=***"
    assert redact("a reply from https://tok@mcp.example/mcp?key=abc then http://h/mcp?bare") == \
        "a reply from https://***@mcp.example/mcp?key=*** then http://h/mcp?bare=***"
    assert redacted_url("http://pw@[::1/mcp") == "http://***"  # does not parse: nothing shown, nothing raised
    settings = McpSettings("https://mcp.example/mcp", token="sekrit")
    assert "sekrit" not in repr(settings)
    for bad, message in [({"url": "ftp://u:pw@h/"}, r"'ftp://\*\*\*@h/'"), ({"era": "2025"}, "one of auto"),
                         ({"connect_timeout_s": 40}, "less than a request's reply"),
                         ({"connections": 0}, "at least 1")]:
        with pytest.raises(ValueError, match=message):
            McpSettings(**{"url": "http://h/mcp", **bad})
