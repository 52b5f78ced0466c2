"""The MCP options (--mcp-url, --mcp-server and the ones that say how to reach the server)
validated into one `McpTarget`, and what a run over MCP refuses before any load.

Over MCP the agents send each call's arguments and op id to a tool server, which runs the tool
in its own sessions. So what toolclash did to its own sessions cannot be done there, and is
refused with one line rather than silently not done:
- --chaos pg-kill and redis-kill: the sessions they would end are the server's, not the load's;
- --chaos mcp-kill but with the tool server toolclash starts: it does not kill a user's server
  (and without MCP there is no tool server to kill);
- a tool without an arguments step (a user's plain `f(tx)` drawing from `tx.rng`): only its
  arguments could travel, and the server has no seed to draw them from (a tool of backend "mcp"
  runs in the load's process, and calls the server's tools itself: it may draw from `tx.rng`);
- with the builtin server, --tools-module: it serves the built-in tools only, and a --tool-work
  drawn from a distribution: that is drawn in the load's processes only (the reference server
  takes one of its own: python -m toolserver --tool-work lognormal:...);
- with --mcp-url, the options that shape only the tools' execution (--tool-work, --hold-time,
  --pool-size, --pool-timeout, --deadlock-timeout, --lock-timeout): they are your server's to set,
  and --isolation-matrix: the server's isolation level is its own, one per run of the matrix.
--isolation and --queue-capacity stay: the audits judge by them, so with --mcp-url they must be
the server's (the report says it could not see them).
And a tool of backend "mcp" is refused without --mcp-url: it calls the tools of that server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from db.connect import redacted_url
from harness.config.declared import OPTIONS
from harness.config.option import BadOption
from harness.faults.chaos import MCP_KILL, PG_KILL, REDIS_KILL, Fault
from tasks.scenarios import Scenario, ScenarioParams
from transport.mcp.settings import McpSettings

__all__ = ["BUILTIN_SERVERS", "McpTarget", "mcp_target"]

# What --mcp-server starts: toolclash's reference tool server, careful or careless (its
# `--careless` mode, whose mistakes the audits must catch).
BUILTIN_SERVERS = ("builtin", "careless")

# Options that shape only how the tools execute: with the user's server they are its own.
_EXECUTION_ONLY = ("tool_work", "hold_time", "pool_size", "pool_timeout", "deadlock_timeout", "lock_timeout")
_DEFAULTS = {option.dest: option for option in OPTIONS}


@dataclass(frozen=True)
class McpTarget:
    """Where the agents call their tools over MCP. `server`: "user" (at `url`, --mcp-url) or one
    of BUILTIN_SERVERS (started by toolclash for each test; its URL is known once it runs).
    `token` is never shown (not in the repr, nor in any message)."""

    server: str
    url: str | None = field(default=None, repr=False)  # its user information or query may hold credentials
    era: str = "auto"
    token: str | None = field(default=None, repr=False)
    tls_verify: bool = True
    ca_file: str | None = None

    @property
    def started_by_toolclash(self) -> bool:
        return self.server in BUILTIN_SERVERS

    def client_settings(self, url: str, connections: int) -> McpSettings:
        """The MCP client's settings for the server at `url`, with `connections` at most."""
        return McpSettings(url, era=self.era, token=self.token, tls_verify=self.tls_verify, ca_file=self.ca_file,
                           connections=max(1, connections))


def mcp_target(options: Any, scenarios: Sequence[Scenario], params: ScenarioParams,
               chaos: Sequence[Fault]) -> McpTarget | None:
    """The MCP target of the options, or None (the tools run in the load's processes); raises
    BadOption, one line, for what cannot be run over MCP."""
    url, server = options.mcp_url or None, options.mcp_server or None
    token = options.mcp_token or None
    if url is None and server is None:
        given = [flag for flag, value in (("--mcp-era", options.mcp_era != "auto"), ("--mcp-token", token),
                                          ("--mcp-ca-file", options.mcp_ca_file), ("--mcp-insecure",
                                                                                   options.mcp_insecure)) if value]
        if given:
            raise BadOption(f"{given[0]} needs --mcp-url (your MCP server) or --mcp-server builtin")
        calling = _calling_mcp(scenarios, params)
        if calling:
            raise BadOption(f"tool {', '.join(calling)} calls the tools of an MCP server (@tool(backend='mcp')): name"
                            " the server with --mcp-url")
        if any(fault.kind == MCP_KILL for fault in chaos):
            raise BadOption(f"--chaos {MCP_KILL} kills the MCP tool server toolclash starts: add --mcp-server builtin"
                            " (or careless)")
        return None
    if url is not None and server is not None:
        raise BadOption(f"--mcp-url and --mcp-server {server} exclude each other: --mcp-url names your MCP server,"
                        " --mcp-server starts toolclash's")
    for fault in chaos:
        if fault.kind in (PG_KILL, REDIS_KILL):
            raise BadOption(f"--chaos {fault.kind}: over MCP the load's PostgreSQL sessions and Redis clients are the"
                            " tool server's, not toolclash's: the fault cannot be injected through MCP, and would"
                            " measure nothing (worker-stop can, and mcp-kill kills the tool server itself)")
        if fault.kind == MCP_KILL and url is not None:
            raise BadOption(f"--chaos {MCP_KILL}: toolclash does not kill your MCP server (--mcp-url), only the one it"
                            " starts (--mcp-server builtin or careless)")
    target = (_builtin(options, server, token) if server is not None
              else _user_server(options, url, token))
    _arguments_travel(scenarios, params)
    # What McpSettings refuses (an era it does not know) is refused here, before any load.
    try:
        target.client_settings(url or "http://127.0.0.1/mcp", 1)
    except ValueError as exc:
        raise BadOption(f"--mcp-era: {exc}") from None
    return target


def _calling_mcp(scenarios: Sequence[Scenario], params: ScenarioParams) -> list[str]:
    return [wt.tool.name for scenario in scenarios for wt in scenario.tools(params)
            if wt.weight > 0 and wt.tool.calls_mcp]


def _arguments_travel(scenarios: Sequence[Scenario], params: ScenarioParams) -> None:
    plain = [wt.tool.name for scenario in scenarios for wt in scenario.tools(params)
             if wt.weight > 0 and wt.tool.arguments is None and not wt.tool.calls_mcp]
    if plain:
        raise BadOption(f"tool {', '.join(plain)} has no arguments step (@tool(arguments=...)): over MCP only a"
                        " call's arguments travel, and the server has no seed to draw them from"
                        " (docs/scenarios.md, your own tools)")


def _builtin(options: Any, server: str, token: str | None) -> McpTarget:
    if options.tools_module:
        raise BadOption(f"--mcp-server {server} serves the built-in tools only: run --tools-module"
                        f" {options.tools_module} against your own MCP server (--mcp-url)")
    for flag, value in (("--mcp-token", token), ("--mcp-ca-file", options.mcp_ca_file),
                        ("--mcp-insecure", options.mcp_insecure)):
        if value:
            raise BadOption(f"{flag}: the {server} server toolclash starts serves plain HTTP on 127.0.0.1 and asks"
                            " for no token: that option is for --mcp-url")
    if not options.tool_work.is_constant:
        raise BadOption(f"--tool-work {options.tool_work}: a distribution of the tools' work is drawn in the load's"
                        f" processes only; with --mcp-server give a constant (ms), or start python -m toolserver"
                        f" --tool-work {options.tool_work} yourself and name it with --mcp-url")
    return McpTarget(server, era=options.mcp_era)


def _user_server(options: Any, url: str, token: str | None) -> McpTarget:
    try:
        McpSettings(url)
    except ValueError:
        raise BadOption(f"--mcp-url {redacted_url(url)!r}: give the MCP endpoint as an http:// or https:// URL with"
                        " a host, e.g. http://127.0.0.1:8000/mcp") from None
    https = url.lower().startswith("https://")
    ca_file, insecure = options.mcp_ca_file or None, bool(options.mcp_insecure)
    if (ca_file or insecure) and not https:
        raise BadOption(f"{'--mcp-ca-file' if ca_file else '--mcp-insecure'}: the MCP server's URL is http://,"
                        " not https://: there is no certificate to check")
    if ca_file and insecure:
        raise BadOption("--mcp-ca-file and --mcp-insecure exclude each other: check the certificate against that"
                        " file, or not at all")
    if ca_file and not os.access(ca_file, os.R_OK):
        raise BadOption(f"--mcp-ca-file {ca_file}: cannot read it")
    for dest in _EXECUTION_ONLY:
        value, option = getattr(options, dest), _DEFAULTS[dest]
        if value != option.typed(option.default):
            unit = f" {option.unit}" if option.unit else ""
            shown = f"{value:g}{unit}" if isinstance(value, int | float) else str(value)  # a duration: as given
            raise BadOption(f"{option.flag} {shown} shapes the tools' execution, which is your MCP server's"
                            f" (--mcp-url): set it on the server, not here")
    if options.isolation_matrix:
        raise BadOption("--isolation-matrix runs once per isolation level, and your MCP server's level is its own:"
                        " run the matrix with --mcp-server builtin, or one run per level of your server")
    return McpTarget("user", url, options.mcp_era, token, tls_verify=not insecure, ca_file=ca_file)
