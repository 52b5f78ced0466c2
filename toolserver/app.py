"""The tool server's ASGI application: one MCP tool per built-in tool on the official SDK's
`MCPServer`, served over Streamable HTTP at /mcp, and what the server is (`GET /info`).

Each tool's handler reads the call's identity (toolserver.identity), runs the call on a thread
(toolserver.execution) and answers its outcome (toolserver.results). Which protocol era a request
speaks is the SDK's to tell, by its MCP-Protocol-Version header (docs/mcp.md: the eras).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool as MCPTool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from db.tool import Tool
from toolserver.execution import Execution
from toolserver.identity import IdentityRefused, identity_of
from toolserver.options import ServerOptions
from toolserver.results import call_result
from toolserver.schemas import DESCRIPTIONS, OP_ID_ARGUMENT, OUTPUT_SCHEMA, arguments_model

__all__ = ["MCP_PATH", "describe", "server_app"]

MCP_PATH = "/mcp"
SERVER_NAME = "toolclash-toolserver"

_ToolCall = Callable[..., Coroutine[Any, Any, CallToolResult]]


def describe(options: ServerOptions, tools: list[str]) -> dict[str, Any]:
    """What the server is, as `GET /info` answers."""
    return {
        "server": SERVER_NAME,
        "pid": os.getpid(),
        "mcp_path": MCP_PATH,
        "eras": {"session": list(HANDSHAKE_PROTOCOL_VERSIONS), "stateless": list(MODERN_PROTOCOL_VERSIONS)},
        "sessions": not options.stateless,
        "json_response": options.json_response,
        "processes": options.processes,
        "threads": options.threads,
        "pool_size": options.pool_size,
        "isolation": options.isolation,
        "retry": {"max_tries": options.retry.max_tries, "backoff_base_s": options.retry.base_s,
                  "backoff_max_s": options.retry.cap_s},
        "schema": options.schema,
        "careless": options.careless,
        "tools": tools,
    }


def _handler(tool: Tool, execution: Execution) -> _ToolCall:
    async def call(context: Context, **arguments: Any) -> CallToolResult:
        request = context.request_context
        http = request.request  # the Starlette request that carried the call
        try:
            identity = identity_of(request.meta, http.headers if http is not None else None,
                                   arguments.pop(OP_ID_ARGUMENT))
        except IdentityRefused as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        return call_result(await execution.run(tool, arguments, identity), identity)

    return call


def _mcp_tool(tool: Tool, execution: Execution) -> MCPTool:
    model = arguments_model(tool.name)
    return MCPTool(fn=_handler(tool, execution), name=tool.name, title=None, description=DESCRIPTIONS[tool.name],
                   parameters=model.model_json_schema(by_alias=True),
                   fn_metadata=FuncMetadata(arg_model=model, output_schema=OUTPUT_SCHEMA),
                   is_async=True, context_kwarg="context", annotations=None)


def server_app(options: ServerOptions, tools: dict[str, Tool], execution: Execution) -> Starlette:
    """The ASGI application serving `tools` (by name), their calls run by `execution`."""
    info = describe(options, sorted(tools))
    tools_are = "the careless versions of toolclash's built-in tools" if options.careless else \
        "toolclash's built-in tools"
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME, title="toolclash's reference tool server" + (" (careless mode)" if options.careless else ""),
        description=f"{tools_are} over PostgreSQL and Redis; {options.threads} threads a process,"
                    f" {options.processes} process(es); GET /info",
        tools=[_mcp_tool(tool, execution) for tool in tools.values()], log_level="WARNING")

    @server.custom_route("/info", methods=["GET"])  # type: ignore[untyped-decorator]  # the SDK's has no annotations
    async def _info(request: Request) -> JSONResponse:
        return JSONResponse(info)

    return server.streamable_http_app(streamable_http_path=MCP_PATH, json_response=options.json_response,
                                      stateless_http=options.stateless, host=options.host)
