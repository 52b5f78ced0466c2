"""Who makes a call, and which operation it is: the op id the server writes in the tool's own
transaction (the ledger's, counter_ops', … `op_id`), so that the audits compare the calls the
agents were told succeeded with what the servers hold, by identity.

A call may carry its op id three ways, all read: in the request's `params._meta` under
`io.toolclash/op_id`, in an `Idempotency-Key` HTTP header, and as the tool's `op_id` argument. Those
it carries must agree (else the request is refused, and nothing runs); a call that carries none
gets a fresh one, and its result says so (`op_id_from` "server"). The agent is `_meta`'s
`io.toolclash/agent_id`, else the MCP session's id, else one name for every anonymous caller:
what the tools write as `agent_id`. Its lane, whose calls follow one another, is `_meta`'s
`io.toolclash/lane`, else the agent's: the tools that guard a resent call by its sender's last
step key the guard by lane (update_plan, the queue's), so callers that call at once should each
name theirs (docs/mcp.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AGENT_ID_META_KEY", "ANONYMOUS_AGENT", "IDEMPOTENCY_KEY_HEADER", "LANE_META_KEY", "OP_ID_META_KEY",
           "Identity", "IdentityRefused", "identity_of"]

# _meta keys take a prefix in reverse DNS notation; `io.toolclash/` is not one MCP reserves (its
# second label is neither `modelcontextprotocol` nor `mcp`).
OP_ID_META_KEY = "io.toolclash/op_id"
AGENT_ID_META_KEY = "io.toolclash/agent_id"
LANE_META_KEY = "io.toolclash/lane"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
_SESSION_HEADER = "mcp-session-id"
ANONYMOUS_AGENT = "mcp-client"


class IdentityRefused(ValueError):
    """The call names its op id wrongly: not a UUID, or two different ones. One line."""


@dataclass(frozen=True)
class Identity:
    op_id: uuid.UUID
    op_id_from: str  # "meta", "header", "argument", or "server" (the call named none)
    agent_id: str
    lane: str  # whose calls follow one another: the agent's, unless the call names its own


def identity_of(meta: Mapping[str, Any] | None, headers: Mapping[str, str] | None,
                argument: uuid.UUID | None) -> Identity:
    """The call's identity from its request's `_meta`, its HTTP headers and its `op_id` argument."""
    meta, headers = meta or {}, headers or {}
    named: dict[str, uuid.UUID] = {}
    if OP_ID_META_KEY in meta:
        named["meta"] = _uuid(meta[OP_ID_META_KEY], f"_meta {OP_ID_META_KEY!r}")
    if IDEMPOTENCY_KEY_HEADER in headers:
        named["header"] = _uuid(headers[IDEMPOTENCY_KEY_HEADER], "the Idempotency-Key header")
    if argument is not None:
        named["argument"] = argument
    if len(set(named.values())) > 1:
        raise IdentityRefused("the call names different op ids: "
                              + ", ".join(f"{value} ({source})" for source, value in named.items()))
    op_id_from, op_id = next(iter(named.items()), ("server", uuid.uuid4()))
    agent, lane = meta.get(AGENT_ID_META_KEY), meta.get(LANE_META_KEY)
    for key, value in ((AGENT_ID_META_KEY, agent), (LANE_META_KEY, lane)):
        if value is not None and not (isinstance(value, str) and value):
            raise IdentityRefused(f"_meta {key!r} must be a non-empty string, not {value!r}")
    agent = agent or headers.get(_SESSION_HEADER) or ANONYMOUS_AGENT
    return Identity(op_id, op_id_from, agent, lane or agent)


def _uuid(value: object, where: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise IdentityRefused(f"{where} is no op id: {value!r} is not a UUID")
