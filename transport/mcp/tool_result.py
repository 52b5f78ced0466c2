"""A `tools/call` result as a careful client reads it: did the tool succeed, and if not, what kind
of failure was it (db.errors.Failure), and was its work rolled back (only then may the call be
tried again)? Read from the result's fields, never from its text.

`isError: false`: succeeded; the value is `structuredContent.value` when the server gives one
(toolclash's reference server does), else the whole `structuredContent`, else the text content.
`isError: true`: the kind is `structuredContent.kind` (a Failure's value), else the one its
`sqlstate` names (db.errors.classify_sqlstate), else an error; a `refused: true` makes it a
refusal. Rolled back: `structuredContent.rolled_back` when the server says, else only when the
SQLSTATE's class is 40, "transaction rollback" (a deadlock, a serialization failure): PostgreSQL
rolled that transaction back whoever ran it. `structuredContent.attempted`, when the server gives
it (toolclash's reference server does, for a tool that says), is what its last attempt set out to
do (db.tool.Transaction.attempted). What the server says of its own attempts (`attempts`,
`failures`: kinds) is read either way, apart from the client's.

A result that is not complete (`resultType` "input_required": the server asks the client for
input, which toolclash's agents never give; or a type unknown to this client, which the
specification makes invalid) is an error. An absent `resultType` is "complete" (servers before
2026-07-28 send none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from db.errors import Failure, classify_sqlstate

__all__ = ["ToolError", "ToolResult", "content_text", "read_tool_result"]

_KINDS = {failure.value: failure for failure in Failure}
_ROLLBACK_CLASS = "40"
_ROLLED_BACK_KINDS = (Failure.DEADLOCK, Failure.SERIALIZATION_FAILURE)  # their SQLSTATEs, 40P01 and 40001


class ToolError(Exception):
    """A tool result with `isError: true` (or one this client cannot take), as the call's exception:
    its text is the server's message."""


@dataclass(frozen=True)
class ToolResult:
    failure: Failure | None  # None: the tool succeeded
    rolled_back: bool = False
    value: Any = None
    message: str = ""
    server_attempts: int = 0  # 0: the server did not say
    server_failures: list[Failure] = field(default_factory=list)
    sqlstate: str | None = None  # PostgreSQL's code for the failure, when the server gave one
    attempted: Any = None  # a failed call's: what its last attempt set out to do, when the server said


def read_tool_result(result: Mapping[str, Any]) -> ToolResult:
    structured = result.get("structuredContent")
    said = structured if isinstance(structured, dict) else {}
    attempts = said.get("attempts")
    server_attempts = attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0
    server_failures = [_KINDS.get(kind, Failure.ERROR) for kind in said.get("failures") or () if isinstance(kind, str)]
    result_type = result.get("resultType", "complete")
    if result_type != "complete":
        return ToolResult(Failure.ERROR, message=f"a result of type {result_type!r}: toolclash's agents take only"
                          " complete ones", server_attempts=server_attempts, server_failures=server_failures)
    if result.get("isError") is not True:
        # The text only when there is no structured content: a call's result has its value there.
        value = said["value"] if "value" in said else structured if structured is not None else content_text(
            result.get("content"))
        return ToolResult(None, value=value, server_attempts=server_attempts, server_failures=server_failures)
    failure = _kind(said)
    sqlstate = said.get("sqlstate") if isinstance(said.get("sqlstate"), str) else None
    rolled_back = said.get("rolled_back")
    if not isinstance(rolled_back, bool):
        rolled_back = sqlstate.startswith(_ROLLBACK_CLASS) if sqlstate is not None else failure in _ROLLED_BACK_KINDS
    return ToolResult(failure, rolled_back=rolled_back, message=content_text(result.get("content")) or failure.value,
                      server_attempts=server_attempts, server_failures=server_failures, sqlstate=sqlstate,
                      attempted=said.get("attempted"))


def _kind(said: dict[str, Any]) -> Failure:
    kind, sqlstate = said.get("kind"), said.get("sqlstate")
    if isinstance(kind, str) and kind in _KINDS:
        failure = _KINDS[kind]
    elif isinstance(sqlstate, str):
        failure = classify_sqlstate(sqlstate)
    else:
        failure = Failure.ERROR
    if said.get("refused") is True and not failure.refusal:
        return Failure.REFUSED
    return failure


def content_text(content: Any) -> str:
    """The text blocks of a result's `content`, one per line."""
    texts = [block["text"] for block in content if isinstance(block, dict) and isinstance(block.get("text"), str)] \
        if isinstance(content, list) else []
    return "\n".join(texts)
