"""The official MCP SDK's client, run as a process of its own: the SDK is asyncio, and the tests run
under gevent's monkey-patching (conftest.py). Imports nothing of this project: it speaks MCP as any
other client would.

    python tests/mcp_client.py URL < plan.json > results.json

The plan: {"era": "legacy" (the session era: initialize, Mcp-Session-Id) or "2026-07-28" (the
stateless era), "list": whether to ask `tools/list` first, "agents": [[call, ...], ...]}, each call
{"tool", "arguments", "meta"}. Each agent is a client of its own, its calls one after the other;
the agents run at once. Prints {"protocol_version", "tools": the first agent's listing, if asked,
"results": [[result, ...], ...]}, each result the CallToolResult as on the wire, or {"error":
{"code", "message"}} when the server answered a JSON-RPC error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from mcp import Client
from mcp.shared.exceptions import MCPError


async def _agent(url: str, era: str, calls: list[dict[str, Any]], listing: dict[str, Any] | None,
                 list_tools: bool) -> list[Any]:
    async with Client(url, mode=era) as client:
        if listing is not None:
            listing["protocol_version"] = client.protocol_version
            if list_tools:
                listing["tools"] = [tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                                    for tool in (await client.list_tools()).tools]
        results = []
        for call in calls:
            try:
                result = await client.call_tool(call["tool"], call.get("arguments") or {}, meta=call.get("meta"))
                results.append(result.model_dump(mode="json", by_alias=True, exclude_none=True))
            except MCPError as exc:
                results.append({"error": {"code": exc.code, "message": exc.error.message}})
        return results


async def _main(url: str, plan: dict[str, Any]) -> dict[str, Any]:
    listing: dict[str, Any] = {}
    agents = plan["agents"] or [[]]
    results = await asyncio.gather(*(_agent(url, plan["era"], calls, listing if index == 0 else None, plan["list"])
                                     for index, calls in enumerate(agents)))
    return {**listing, "results": list(results)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(sys.argv[1], json.load(sys.stdin)))))
