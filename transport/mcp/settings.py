"""How the agents reach an MCP tool server: its URL, the protocol era, credentials, TLS, time
limits and connections; and the protocol's names this client uses.

Two eras of the Model Context Protocol's Streamable HTTP transport are spoken. The session era
(2025-03-26 to 2025-11-25): an `initialize` handshake opens a session, named by the
`Mcp-Session-Id` header on every later request, and closed by DELETE. The stateless era
(2026-07-28): no handshake and no session, every request carries its protocol version and the
client's capabilities in `params._meta`, mirrored in headers. `auto` asks the server, as the
specification's backward compatibility says (transport.mcp.client).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from db.connect import redacted_url

__all__ = ["AGENT_ID_META_KEY", "CLIENT_INFO", "ERAS", "LANE_META_KEY", "OP_ID_META_KEY", "SESSION_ERA_VERSION",
           "SESSION_ERA_VERSIONS", "STATELESS_ERA_VERSION", "McpSettings"]

ERAS = ("auto", "session", "stateless")
# Offered in `initialize`; the server may answer with any of SESSION_ERA_VERSIONS, which differ in
# nothing a tool call uses (2025-03-26 had no MCP-Protocol-Version header, which it ignores).
SESSION_ERA_VERSION = "2025-11-25"
SESSION_ERA_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
STATELESS_ERA_VERSION = "2026-07-28"

# Where a tools/call carries the call's op id in `params._meta`. A prefix of toolclash's own: the
# specification reserves those whose second label is `modelcontextprotocol` or `mcp`.
OP_ID_META_KEY = "io.toolclash/op_id"
# Who the call is made for (the agent's id: what the tools write as `agent_id`), beside it.
AGENT_ID_META_KEY = "io.toolclash/agent_id"
# And its lane: whose calls follow one another (db.tool.Transaction.lane), the agent's own or a
# slot of its turns, whose calls run at once.
LANE_META_KEY = "io.toolclash/lane"
CLIENT_INFO = {"name": "toolclash", "version": "0.1.0"}


@dataclass(frozen=True)
class McpSettings:
    """`url`: the server's MCP endpoint (http or https). `era`: one of ERAS. `token`: sent as
    `Authorization: Bearer …` when given (never shown). `tls_verify`: check the server's
    certificate and name (against `ca_file` when given, else the system's authorities).
    `timeout_s`: how long a request waits for its reply, streamed or not: past it the reply
    never came. `connect_timeout_s`: how long to open a connection. `connections`: the process's
    requests in flight to the server at most, one connection each (a request waits for one);
    answered event streams being read to their end may hold as many again, for an instant."""

    url: str
    era: str = "auto"
    token: str | None = field(default=None, repr=False)
    tls_verify: bool = True
    ca_file: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    connections: int = 100

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"MCP server URL {self.redacted_url!r}: an http:// or https:// URL with a host")
        if self.era not in ERAS:
            raise ValueError(f"MCP protocol era {self.era!r}: one of {', '.join(ERAS)}")
        if not (0 < self.connect_timeout_s < self.timeout_s):
            raise ValueError(f"MCP timeouts: connecting ({self.connect_timeout_s:g} s) must take more than 0 s"
                             f" and less than a request's reply ({self.timeout_s:g} s)")
        if self.connections < 1:
            raise ValueError(f"MCP connections: at least 1, not {self.connections}")

    @property
    def redacted_url(self) -> str:
        return redacted_url(self.url)
