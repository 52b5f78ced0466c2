"""How the agents' calls reached their tools, and what the MCP client counted of them."""

from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

__all__ = ["McpAttempts", "McpReplies", "McpSessions", "McpTransport", "NotMeasurable", "Transport"]


class McpSessions(TypedDict):
    opened: int
    renewed: int  # a request found its session ended (404), and it was opened again
    closed: int  # DELETEd


class McpReplies(TypedDict):
    json: int
    event_stream: int


class McpAttempts(TypedDict):
    client: int  # the tools/call requests the agents sent
    server: int | None  # the server's own attempts, as its replies said; None: they said none


class NotMeasurable(TypedDict):
    """A figure this transport cannot observe; SLA rules that read it fail (harness.config.sla)."""

    figure: str
    why: str


class McpTransport(TypedDict):
    url: str  # its user information and query values as ***
    server: Literal["builtin", "careless", "user"]  # started by toolclash (--mcp-server), or --mcp-url
    era: str  # session or stateless
    protocol_version: str
    server_info: dict[str, Any]  # the server's serverInfo (name, version, …)
    sessions: McpSessions
    replies: McpReplies
    is_error_replies: int
    reissues: int  # requests sent again with the same op id after a lost reply or an ended session
    attempts: McpAttempts
    calls_server_reported: int  # calls whose replies said the server's attempts
    server_failures: dict[str, int]  # the server's failed attempts by kind, as its replies said
    not_measurable: list[NotMeasurable]


class Transport(TypedDict):
    """How the agents' calls reached their tools: in their own processes, or over MCP."""

    kind: Literal["in_process", "mcp"]
    mcp: NotRequired[McpTransport]  # over MCP
