"""`tx.mcp`: how a call reaches a tool of the run's MCP server by name and arguments, and what it
gets back. A user's tool of backend "mcp" (db.tool) calls `tx.mcp.call("book_seat", {"seat": 7})`
in its function; the MCP adapter (transport.mcp.adapter) sends each call of a tool by name through
the same `McpCalls`.

Each `call` is one `tools/call` in the agent's session (transport.mcp.client), carrying the call's
op id (in `_meta`, the `Idempotency-Key` header, and as the `op_id` argument where the server's
tool declares one) and the agent's id: the server can write the op id in its tool's transaction,
for the audits to compare by identity. Every attempt of the call sends the same op id.

What came back is an `McpResult`: the result's `content`, `structured_content` and `is_error`, and
how toolclash reads them (transport.mcp.tool_result): its `value`, its `failure` kind and whether
the server rolled its work back. By default a failed result raises `McpToolFailed`, the failure of
the kind it names, so that a tool never reports a failed call as a success by forgetting to look:
a conflict the server rolled back is tried again by the retry policy, a refusal is a refusal,
anything else an error. `check=False` returns it instead, for a tool that decides itself
(`result.raise_for_error()` raises as `call` would have). No reply raises what the exchange
raised (transport.mcp.exchange): `NotDelivered` (nothing applied: tried again) or `ReplyLost`
(the server may have applied it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from db.errors import Failure
from transport.call_record import CallRecord
from transport.mcp.client import McpSession
from transport.mcp.tool_result import ToolError, content_text, read_tool_result

__all__ = ["McpCalls", "McpResult", "McpToolFailed"]


@dataclass(frozen=True)
class McpResult:
    """A `tools/call` result: `content` (its content blocks), `structured_content`, `is_error`, as
    the server sent them; `value` (`structuredContent.value`, else `structuredContent`, else the
    text), `failure` (None: the tool succeeded; else the kind, a db.errors.Failure) and
    `rolled_back` (the server says its work was not applied), as toolclash reads them. A result
    that is not complete (`resultType` other than "complete") is failed, an error."""

    content: list[Any] = field(default_factory=list)
    structured_content: Any = None
    is_error: bool = False
    value: Any = None
    failure: Failure | None = None
    rolled_back: bool = False
    server_attempts: int = 0  # the server's own attempts, as it said (0: it did not)
    server_failures: list[Failure] = field(default_factory=list)
    sqlstate: str | None = None  # PostgreSQL's code for the failure, when the server gave one
    attempted: Any = None  # a failed call's: what its last attempt set out to do, when the server said

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> McpResult:
        read = read_tool_result(result)
        content = result.get("content")
        return cls(content=content if isinstance(content, list) else [],
                   structured_content=result.get("structuredContent"), is_error=result.get("isError") is True,
                   value=read.value, failure=read.failure, rolled_back=read.rolled_back,
                   server_attempts=read.server_attempts, server_failures=read.server_failures,
                   sqlstate=read.sqlstate, attempted=read.attempted)

    @property
    def text(self) -> str:
        """The text of its content blocks, one per line."""
        return content_text(self.content)

    def raise_for_error(self) -> None:
        """McpToolFailed if the tool failed."""
        if self.failure is not None:
            raise McpToolFailed(self)


class McpToolFailed(ToolError):
    """A failed `tools/call` result, as the attempt's exception: its kind (`failure`), whether the
    server rolled it back, and the whole `result`. Its message is the result's text."""

    def __init__(self, result: McpResult) -> None:
        failure = result.failure or Failure.ERROR
        super().__init__(result.text or failure.value)
        self.result = result
        self.failure = failure
        self.rolled_back = result.rolled_back


class McpCalls:
    """`tx.mcp` of one attempt of a call: its agent's session, and its record, whose op id and
    agent every request carries and where what the server said of its own work is counted."""

    def __init__(self, session: McpSession, record: CallRecord) -> None:
        self._session = session
        self._record = record

    def call(self, name: str, arguments: Mapping[str, Any] | None = None, *, check: bool = True) -> McpResult:
        """Call the server's tool `name` with `arguments` (JSON-able); its result. `check`: a failed
        result raises McpToolFailed."""
        record = self._record
        result = McpResult.of(self._session.call_tool(name, dict(arguments or {}), record.op_id, record.agent_id,
                                                      record.lane, waits=record.pool_waits_s))
        record.server_attempts += result.server_attempts
        record.server_failures.extend(result.server_failures)
        record.is_error_replies += result.failure is not None
        if check:
            result.raise_for_error()
        return result
