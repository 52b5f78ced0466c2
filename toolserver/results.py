"""A call's outcome as its MCP result: `isError`, and in `structuredContent` what a careful client
needs to tell a success from a conflict, a refusal, an error or an unknown outcome, and how many
attempts the server made (the client counts its own apart).

Succeeded (isError false): {"value", "op_id", "op_id_from", "attempts", "failures"}.
Failed (isError true): {"kind", "sqlstate", "rolled_back", "refused", "op_id", "op_id_from",
"attempts", "failures"}: `kind` the last attempt's failure (db.errors.Failure's value, the report's
counter name), `sqlstate` PostgreSQL's code when it gave one, `rolled_back` whether the work is
known not applied (false when the outcome is unknown: a connection lost during COMMIT, or a Redis
tool's commands), `refused` the tool's business "no" (db.errors.Refused). `failures` is the kind of
each failed attempt, in order; `attempted`, only when the call has a value, is what its last
attempt that said set out to do (db.tool.Transaction.attempted; transport.call_record's value). A
success also carries its structured content as JSON text, for clients that read only `content`; a
failure, one line saying what failed (a client's message).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from mcp.types import CallToolResult, TextContent

from db.errors import Failure
from toolserver.identity import Identity
from transport.call_record import CallRecord, Outcome

__all__ = ["call_result"]


def call_result(record: CallRecord, identity: Identity) -> CallToolResult:
    """The MCP result of the call the adapter recorded."""
    shared: dict[str, Any] = {"op_id": str(record.op_id), "op_id_from": identity.op_id_from,
                              "attempts": record.attempts, "failures": [f.value for f in record.failures]}
    if record.outcome is Outcome.SUCCEEDED:
        succeeded = {"value": record.value, **shared}
        return CallToolResult(content=[_text(succeeded)], structured_content=succeeded, is_error=False)
    last = record.failures[-1] if record.failures else Failure.ERROR
    failed = {"kind": last.value, "sqlstate": _sqlstate(record.exception),
              "rolled_back": record.outcome is Outcome.FAILED, "refused": last.refusal, **shared}
    if record.value is not None:
        failed["attempted"] = record.value
    said = f"{record.tool} {'refused' if last.refusal else 'failed'} ({last.value}"
    said += ", outcome unknown" if record.outcome is Outcome.INDETERMINATE else ""
    said += f", attempt {record.attempts}): {_first_line(record.exception)}"
    return CallToolResult(content=[TextContent(type="text", text=said)], structured_content=failed, is_error=True)


def _text(structured: dict[str, Any]) -> TextContent:
    return TextContent(type="text", text=json.dumps(structured, separators=(",", ":")))


def _sqlstate(exc: BaseException | None) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


def _first_line(exc: BaseException | None) -> str:
    text = (str(exc).strip() or type(exc).__name__) if exc is not None else "no attempt ran"
    return text.splitlines()[0]
