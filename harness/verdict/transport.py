"""The report's `transport` section: how the agents' calls reached their tools. In process, nothing
more to say; over MCP, the server and the protocol the agents spoke with it, what the MCP layer
counted (sessions, replies, isError replies, re-issues, the client's attempts beside the server's
own), and what this transport cannot observe, which SLA rules then fail on
(harness.config.sla.not_measurable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from db.connect import redacted_url
from harness.config import sla
from harness.report_shape import NotMeasurable, Transport
from harness.watch.metrics import Metrics

__all__ = ["McpFacts", "transport_section"]


@dataclass(frozen=True)
class McpFacts:
    """What the judging side knows of a test's MCP server: which it is (`server`: builtin,
    careless or user), where, and what its probe before the load found."""

    server: str
    url: str = field(repr=False)
    era: str
    protocol_version: str
    server_info: dict[str, Any] = field(default_factory=dict)
    # How the server's PostgreSQL sessions are named, when toolclash started it (the audits wait
    # for them to end); None for a user's server, whose sessions are its own.
    sessions_prefix: str | None = None


_ALWAYS: list[NotMeasurable] = [
    {"figure": sla.POOL, "why": "the tool server's connection pool is its own: its waits, its samples and its"
                                " state at rest do not cross MCP (pool_connections_returned and"
                                " no_session_idle_in_transaction are not checked)"},
    {"figure": sla.DEADLOCK_TIMINGS, "why": "the tool server retries deadlocks itself: when each was detected and"
                                            " resolved does not cross MCP (how many, its replies say)"},
]


def transport_section(metrics: Metrics, mcp: McpFacts | None) -> Transport:
    if mcp is None:
        return {"kind": "in_process"}
    counts = metrics.transport
    reported = counts["calls_server_reported"]
    server_failures: dict[str, int] = {}
    for stats in metrics.tools.values():
        for kind, count in stats.server_failures.items():
            server_failures[kind] = server_failures.get(kind, 0) + count
    unobserved = list(_ALWAYS)
    if not reported:
        unobserved.append({"figure": sla.SERVER_ATTEMPTS,
                           "why": "the server's replies said nothing of its own attempts (structuredContent's"
                                  " attempts and failures): the conflicts it absorbed are seen from PostgreSQL's"
                                  " side only (server_counters)"})
    if mcp.sessions_prefix is None:
        unobserved.append({"figure": sla.LOAD_SESSIONS,
                           "why": "the MCP server's PostgreSQL sessions are its own: whether a call it still ran"
                                  " when the audits read the data committed after is not known"})
    return {"kind": "mcp", "mcp": {
        "url": redacted_url(mcp.url),
        "server": "user" if mcp.server == "user" else "careless" if mcp.server == "careless" else "builtin",
        "era": mcp.era,
        "protocol_version": mcp.protocol_version,
        "server_info": mcp.server_info,
        "sessions": {"opened": counts["sessions_opened"], "renewed": counts["sessions_renewed"],
                     "closed": counts["sessions_closed"]},
        "replies": {"json": counts["json_replies"], "event_stream": counts["event_stream_replies"]},
        "is_error_replies": counts["is_error_replies"],
        "reissues": counts["reissues"],
        "attempts": {"client": sum(stats.attempts for stats in metrics.tools.values()),
                     "server": sum(stats.server_attempts for stats in metrics.tools.values()) if reported else None},
        "calls_server_reported": reported,
        "server_failures": server_failures,
        "not_measurable": unobserved,
    }}
