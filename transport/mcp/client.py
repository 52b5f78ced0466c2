"""JSON-RPC with an MCP server over Streamable HTTP, in either era: the process's `McpClient`
(its connections, the era and the tools the server offers, found once by `connect`) and the
`McpSession`s it makes, one per agent.

Choosing the era (`connect`), as the 2026-07-28 specification's backward compatibility says:
`stateless` and `auto` first send `server/discover` in the stateless era's envelope. A result
naming 2026-07-28 among its versions, or an `UnsupportedProtocolVersion` error naming it, means a
stateless-era server. Under `auto`, any other answer that is no recognized modern error (an HTTP
4xx with another JSON-RPC error or none: what a session-era server answers a request without a
session) falls back to the session era, as does a discover result or an unsupported-version
error naming only session-era versions; `HeaderMismatch` and `MissingRequiredClientCapability`
are modern errors, and a refused credential (401, 403) is no answer about eras: both fail. No
reply at all fails too: an outage is no verdict on the era.

In the session era, a session opens with `initialize` and `notifications/initialized`; every
later request names it (`Mcp-Session-Id`, and `MCP-Protocol-Version`: the version the server
answered). A 404 to a request that named a session means the server ended it: the session opens
again, once, and the request is sent again (counted: `McpSession.renewals`). `close` DELETEs it.
In the stateless era, each request carries `_meta` (protocol version, client info, capabilities:
none) and the headers that mirror it (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, and
`Mcp-Param-*`: transport.mcp.headers).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from transport.mcp.exchange import HttpExchange, McpError, McpTransportError, NotDelivered, Reply
from transport.mcp.headers import InvalidToolSchema, ParamHeader, header_value, param_headers
from transport.mcp.settings import (
    AGENT_ID_META_KEY,
    CLIENT_INFO,
    LANE_META_KEY,
    OP_ID_META_KEY,
    SESSION_ERA_VERSION,
    SESSION_ERA_VERSIONS,
    STATELESS_ERA_VERSION,
    McpSettings,
)

__all__ = ["McpClient", "McpSession", "McpUnavailable", "ServerTool", "SessionNotOpened", "UnusableTool"]

log = logging.getLogger(__name__)

_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
_HEADER_MISMATCH, _MISSING_CAPABILITY, _UNSUPPORTED_VERSION = -32020, -32021, -32022
_OP_ID_ARGUMENT = "op_id"


class McpUnavailable(Exception):
    """The server cannot be used: unreachable, refusing the credentials, or speaking no era this
    client speaks. One line, its URL redacted."""


class SessionNotOpened(NotDelivered):
    """A request's session could not be opened (or opened again): the request was never sent."""


class UnusableTool(Exception):
    """The server's own definition of the tool breaks the specification: it is not called."""


@dataclass(frozen=True)
class ServerTool:
    """A tool as the server lists it: whether it takes the op id as an argument, the arguments
    it mirrors into headers, and, when its definition is invalid, why (it is then not called)."""

    name: str
    takes_op_id: bool
    param_headers: tuple[ParamHeader, ...] = ()
    invalid: str | None = None

    @classmethod
    def listed(cls, tool: dict[str, Any]) -> ServerTool:
        schema = tool.get("inputSchema")
        schema = schema if isinstance(schema, dict) else {}
        properties = schema.get("properties")
        takes_op_id = isinstance(properties, dict) and _OP_ID_ARGUMENT in properties
        try:
            return cls(tool["name"], takes_op_id, tuple(param_headers(schema)))
        except InvalidToolSchema as exc:
            log.warning("the MCP server's tool %r is left out: %s", tool["name"], exc)
            return cls(tool["name"], takes_op_id, invalid=str(exc))


class McpClient:
    def __init__(self, settings: McpSettings) -> None:
        self.settings = settings
        self._http = HttpExchange(settings)
        self._ids = itertools.count(1)
        self.era: str | None = None  # "session" or "stateless", once connected
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] = {}
        self.tools: dict[str, ServerTool] = {}
        self._open: set[McpSession] = set()
        self.sessions_opened = self.sessions_renewed = self.sessions_closed = 0

    def connect(self) -> None:
        """Find the era and the server's tools, before any load; McpUnavailable if it cannot."""
        try:
            self.era = self._era()
            session = self.session()
            try:
                self.tools = {tool.name: tool for tool in self._listed_tools(session)}
            finally:
                session.close()
        except (McpTransportError, McpError) as exc:
            raise McpUnavailable(f"MCP server {self.settings.redacted_url}: {_cause(exc)}") from None

    @property
    def replies(self) -> dict[str, int]:
        """The replies read so far, by form: one JSON object, or an event stream."""
        return {"json": self._http.json_replies, "event-stream": self._http.streamed_replies}

    def session(self) -> McpSession:
        if self.era is None:
            raise RuntimeError("McpClient.session() before connect()")
        return McpSession(self)

    def close(self) -> None:
        """Close every session still open (DELETE), then the connections."""
        for session in list(self._open):
            session.close()
        self._http.close()

    def _era(self) -> str:
        if self.settings.era == "session":
            return "session"
        try:
            result = self.send("server/discover", {}, session_id=None, era="stateless").result()
            versions = result.get("supportedVersions")
        except McpError as exc:
            if exc.status in (401, 403) or exc.code in (_HEADER_MISMATCH, _MISSING_CAPABILITY):
                raise
            versions = exc.data.get("supported") if exc.code == _UNSUPPORTED_VERSION and isinstance(
                exc.data, dict) else None
            if versions is None and self.settings.era == "auto":
                return "session"  # no modern answer: a session-era server
            if versions is None:
                raise McpUnavailable(f"MCP server {self.settings.redacted_url} does not speak the stateless era"
                                     f" ({STATELESS_ERA_VERSION}): server/discover answered {exc}") from None
        else:
            self.server_info = dict((result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo") or {})
        versions = versions if isinstance(versions, list) else []
        if STATELESS_ERA_VERSION in versions:
            self.protocol_version = STATELESS_ERA_VERSION
            return "stateless"
        if self.settings.era == "auto" and any(version in SESSION_ERA_VERSIONS for version in versions):
            return "session"
        raise McpUnavailable(f"MCP server {self.settings.redacted_url} speaks {', '.join(map(str, versions)) or 'no'}"
                             f" protocol version: this client speaks {STATELESS_ERA_VERSION}"
                             + (f" and {', '.join(SESSION_ERA_VERSIONS)}" if self.settings.era == "auto" else ""))

    def _listed_tools(self, session: McpSession) -> list[ServerTool]:
        tools: list[ServerTool] = []
        cursor: str | None = None
        while True:
            result = session.request("tools/list", {"cursor": cursor} if cursor else {})
            tools.extend(ServerTool.listed(tool) for tool in result.get("tools") or () if isinstance(tool, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                return tools

    def send(self, method: str, params: dict[str, Any], *, session_id: str | None, era: str | None = None,
             version: str | None = None, headers: dict[str, str] | None = None, notification: bool = False,
             waits: list[float] | None = None) -> Reply:
        """POST one request (or notification) in the era's envelope; its reply."""
        era = era or self.era
        sent_headers = dict(headers or {})
        if era == "stateless":
            version = STATELESS_ERA_VERSION
            params = {**params, "_meta": {_PROTOCOL_VERSION: version, _CLIENT_INFO: CLIENT_INFO,
                                          _CLIENT_CAPABILITIES: {}, **params.get("_meta", {})}}
            sent_headers["Mcp-Method"] = method
        if version is not None:
            sent_headers["MCP-Protocol-Version"] = version
        if session_id is not None:
            sent_headers["Mcp-Session-Id"] = session_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notification:
            message["id"] = next(self._ids)
        return self._http.post(message, sent_headers, waits)

    def _delete(self, session_id: str, version: str | None) -> None:
        headers = {"Mcp-Session-Id": session_id, **({"MCP-Protocol-Version": version} if version else {})}
        try:
            self._http.delete(headers)
        except McpTransportError as exc:  # the server forgets it in time anyway
            log.debug("DELETE of MCP session failed: %s", exc)


class McpSession:
    """One agent's conversation with the server. In the session era, an MCP session, opened when
    first used (or by `open`); in the stateless era, nothing to open or close."""

    def __init__(self, client: McpClient) -> None:
        self._client = client
        self._id: str | None = None
        self._version: str | None = client.protocol_version
        self._opened = client.era == "stateless"
        self.renewals = 0  # times a request found the session ended (404) and it was opened again

    @property
    def session_id(self) -> str | None:
        """The server's name for the session (the `Mcp-Session-Id` header), while it is open."""
        return self._id

    def open(self) -> None:
        if self._opened:
            return
        reply = self._client.send("initialize", {"protocolVersion": SESSION_ERA_VERSION, "capabilities": {},
                                                 "clientInfo": CLIENT_INFO}, session_id=None)
        result = reply.result()
        version = result.get("protocolVersion")
        if version not in SESSION_ERA_VERSIONS:
            raise McpError(f"initialize: the server answered protocol version {version!r}, not one of"
                           f" {', '.join(SESSION_ERA_VERSIONS)}", status=reply.status)
        self._id, self._version = reply.session_id, version
        self._client.protocol_version = self._client.protocol_version or version
        self._client.server_info = self._client.server_info or dict(result.get("serverInfo") or {})
        initialized = self._client.send("notifications/initialized", {}, session_id=self._id, version=version,
                                        notification=True)
        if not 200 <= initialized.status < 300:
            initialized.result()  # raises, naming the server's error
        self._opened = True
        self._client.sessions_opened += 1
        self._client._open.add(self)

    def close(self) -> None:
        """End the session (DELETE); the next request opens a new one."""
        if not self._opened or self._client.era == "stateless":
            return
        self._client._open.discard(self)
        self._opened = False
        self._client.sessions_closed += 1
        if self._id is not None:
            self._client._delete(self._id, self._version)
            self._id = None

    def request(self, method: str, params: dict[str, Any], headers: dict[str, str] | None = None,
                waits: list[float] | None = None) -> dict[str, Any]:
        """Send one request in this session; its result (McpError for an error reply; a
        McpTransportError when no reply came: SessionNotOpened when it was never sent)."""
        self._ensure_open()
        reply = self._send(method, params, headers, waits)
        if reply.status == 404 and self._id is not None:
            self._client.sessions_renewed += 1
            self.renewals += 1
            self._opened = False
            self._client._open.discard(self)
            self._ensure_open()
            reply = self._send(method, params, headers, waits)
        return reply.result()

    def call_tool(self, name: str, arguments: dict[str, Any], op_id: uuid.UUID, agent_id: str | None = None,
                  lane: str | None = None, waits: list[float] | None = None) -> dict[str, Any]:
        """tools/call with the op id in `_meta`, in an `Idempotency-Key` header, and as the `op_id`
        argument when the tool declares one, and the agent's id and lane (when given) in `_meta`;
        its result."""
        tool = self._client.tools.get(name)
        if tool is not None and tool.invalid:
            raise UnusableTool(f"the server's tool {name!r} is invalid: {tool.invalid}")
        op_id_text = str(op_id)
        if tool is not None and tool.takes_op_id:
            arguments = {**arguments, _OP_ID_ARGUMENT: op_id_text}
        headers = {"Idempotency-Key": op_id_text}
        if self._client.era == "stateless":
            headers["Mcp-Name"] = header_value(name)
            for param in tool.param_headers if tool is not None else ():
                value = param.value_in(arguments)
                if value is not None:
                    headers[param.header] = value
        meta = {OP_ID_META_KEY: op_id_text, **({AGENT_ID_META_KEY: agent_id} if agent_id else {}),
                **({LANE_META_KEY: lane} if lane else {})}
        params = {"name": name, "arguments": arguments, "_meta": meta}
        return self.request("tools/call", params, headers, waits)

    def _ensure_open(self) -> None:
        try:
            self.open()
        except (McpTransportError, McpError) as exc:
            raise SessionNotOpened(f"the MCP session could not be opened: {_cause(exc)}") from exc

    def _send(self, method: str, params: dict[str, Any], headers: dict[str, str] | None,
              waits: list[float] | None) -> Reply:
        return self._client.send(method, params, session_id=self._id, version=self._version, headers=headers,
                                 waits=waits)


def _cause(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
