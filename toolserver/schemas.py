"""What each built-in tool declares over MCP: its description, its arguments (the inputSchema an
agent reads in `tools/list`, and the model the server checks a call's arguments with) and what it
returns (the outputSchema of its `structuredContent`).

The arguments are declared here by hand, one table row per tool, from what its arguments step
draws (tasks/: `…_arguments`); tests/test_toolserver_schemas.py draws each tool's arguments and
checks every draw against its schema, and that the names are the same both ways. Every tool also
takes an optional `op_id`: the call's identity, for a client that can send it no other way
(toolserver.identity).
"""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Any, Literal

from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from pydantic import ConfigDict, Field, create_model

__all__ = ["DESCRIPTIONS", "OP_ID_ARGUMENT", "OUTPUT_SCHEMA", "arguments_model"]

OP_ID_ARGUMENT = "op_id"

_ACCOUNT = (int, Field(ge=1, description="an account's id (the run's accounts are numbered from 1)"))
_AMOUNT = (int, Field(ge=1, description="credits, a positive whole number"))
_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_TEAM = (int, Field(ge=1, description="a team's id, from 1"))
_VERSION = (int, Field(ge=0, description="the version the agent read"))
_READ_AT = (int, Field(ge=0, description="when the agent read it: ms since the epoch on the server's clock, as the"
                                         " read said (0: not known)"))
_GUARDED = (bool, Field(description="refused if the data changed since the read; else written whatever changed"))

# By tool: a one-line description, and each argument as (type, pydantic Field).
_TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "deduct_credits": ("Take `amount` credits from `account`, optimistically (the version read is the version"
                       " written); refused when the account cannot pay",
                       {"account": _ACCOUNT, "amount": _AMOUNT}),
    "transfer_credits": ("Move `amount` credits from `payer` to `payee`, locking both rows in the order given",
                         {"payer": _ACCOUNT, "payee": _ACCOUNT, "amount": _AMOUNT}),
    "increment_counter": ("Read a counter, work, write it back plus one: a lost update below repeatable read",
                          {"counter": (int, Field(ge=1, description="a counter's id, from 1"))}),
    "reserve_slot": ("Take one of a pair of on-call agents off duty if the other stays (the server deals the"
                     " pair): write skew below serializable", {}),
    "summarize_accounts": ("The accounts, their total balance and the credits deducted, read in one snapshot"
                           " while the transaction holds its connection", {}),
    "enqueue_job": ("Queue a job (its id: the call's op id) at a priority, refused when the bounded queue is full",
                    {"level": (Literal[1, 2, 3], Field(description="the job's priority: 1 high, 2 normal, 3 low"))}),
    "dequeue_job": ("Take the next job by priority, work on it, acknowledge it (the consumer: the call's op id)",
                    {}),
    "charge_usage": ("Charge `amount` to `account` in PostgreSQL and to the calling agent's usage in Redis"
                     " (an outbox row, relayed if the Redis half fails)",
                     {"account": _ACCOUNT, "amount": _AMOUNT}),
    "update_plan": ("Add the call's step to a team's plan in Redis and bump its version (WATCH, MULTI/EXEC)",
                    {"team": _TEAM}),
    "read_balance": ("Read an account's balance and version, and when", {"account": _ACCOUNT}),
    "deduct_from_read": ("Write the balance read less `amount` to `account` (blind, or guarded by the version read)",
                         {"account": _ACCOUNT, "amount": _AMOUNT,
                          "balance": (int, Field(ge=0, description="the balance the agent read")),
                          "version": _VERSION, "read_at": _READ_AT, "guarded": _GUARDED}),
    "read_plan": ("Read a team's plan in Redis: its version, its steps, and when", {"team": _TEAM}),
    "write_plan_step": ("Write a team's plan's next step, counted from the steps read (blind, or guarded by the"
                        " version read)",
                        {"team": _TEAM, "version": _VERSION,
                         "step": (int, Field(ge=0, description="the steps the agent read in the plan")),
                         "read_at": _READ_AT, "guarded": _GUARDED}),
    "read_queue": ("Read the job at the queue's head, its level, and when", {}),
    "take_job": ("Take the job read and acknowledge it (blind, or guarded: only if still the queue's next)",
                 {"job": (str, Field(pattern=_UUID, description="the job the agent read at the queue's head (its id,"
                                                                " a UUID)")),
                  "level": (Literal[1, 2, 3], Field(description="its level, as read: 1 high, 2 normal, 3 low")),
                  "read_at": _READ_AT, "guarded": _GUARDED}),
    "list_append": ("One transaction of Elle's list-append workload: each micro-operation appends an element unique"
                    " to the attempt to a key slot's current list, or reads the list whole",
                    {"txn": (list[Annotated[list[Literal["append", "r"] | int], Field(min_length=2, max_length=2)]],
                             Field(min_length=1, max_length=4, description="the micro-operations in order, each"
                                   " [\"append\" or \"r\", a key slot from 0]"))}),
}

DESCRIPTIONS = {name: description for name, (description, _) in _TOOLS.items()}


class _Arguments(ArgModelBase):
    """A call's arguments: an unknown one is refused rather than ignored (a misspelt argument
    would otherwise run the tool without it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


@functools.cache  # a pydantic model is built in about 0.3 ms: a trace checks each of its calls with one
def arguments_model(name: str) -> type[ArgModelBase]:
    """The model of built-in tool `name`'s arguments, `op_id` included; KeyError for another name."""
    _, fields = _TOOLS[name]
    definitions: dict[str, Any] = {**fields, OP_ID_ARGUMENT: (
        uuid.UUID | None, Field(None, description="the call's operation id (a UUID), when neither the request's"
                                " _meta nor an Idempotency-Key header carries it"))}
    return create_model(f"{name}_arguments", __base__=_Arguments, **definitions)


# Every tool's structuredContent when it succeeded (isError false). A failed call's (isError
# true) is described in docs/mcp.md; MCP validates structuredContent against the outputSchema
# only when the call succeeded.
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "value": {"description": "what the tool returned: what it read or wrote"},
        "op_id": {"type": "string", "format": "uuid", "description": "the call's operation id"},
        "op_id_from": {"enum": ["meta", "header", "argument", "server"],
                       "description": "where the op id came from: the server made it when the call named none"},
        "attempts": {"type": "integer", "minimum": 1, "description": "the server's attempts, retries included"},
        "failures": {"type": "array", "items": {"type": "string"},
                     "description": "the kind of each failed attempt, in order (db.errors.Failure)"},
    },
    "required": ["value", "op_id", "op_id_from", "attempts", "failures"],
}
