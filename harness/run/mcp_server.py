"""The MCP server a run's agents call their tools on (--mcp-url, --mcp-server), as the judging side
sees it: the user's, or toolclash's reference tool server (`python -m toolserver`), which it starts
for each test with that test's settings, on 127.0.0.1 and a free port, and stops once the test's
load has stopped, before the audits (its calls under way end first: nothing it runs commits after
the audits read the data). Either is probed before any load: its era, protocol version and
serverInfo go to the report, and a server that cannot be used refuses the test in one line.

Under --chaos mcp-kill the started server is killed (kill -9) and started again on the same URL,
from a standby kept ready (harness.run.tool_server_process): its sessions are gone (the agents'
clients open new ones) and the calls it had in flight get no reply (indeterminate, or sent again
by the client's rules: docs/mcp_client.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gevent.lock import Semaphore

from harness.config.mcp import McpTarget
from harness.config.settings import Settings
from harness.faults.chaos import MCP_KILL, NotRestarted
from harness.run.tool_server_process import ServerDidNotStart, ToolServerProcess
from harness.verdict.transport import McpFacts
from transport.mcp.client import McpClient, McpUnavailable

__all__ = ["McpServer", "McpServerRefused"]

log = logging.getLogger("toolclash")

# It lets the calls under way end before it exits (docs/mcp.md): none runs longer than a few seconds.
_STOP_TIMEOUT_S = 30.0
# What the tool server names its PostgreSQL sessions (toolserver.options).
_SESSIONS = "toolclash-toolserver:{schema}"


class McpServerRefused(Exception):
    """The MCP server cannot serve the test: one line, passwords redacted."""


class McpServer:
    """The run's MCP server: the user's at `target.url`, or the one toolclash starts."""

    def __init__(self, target: McpTarget, pg_dsn: str, redis_url: str) -> None:
        self.target = target
        self._pg_dsn = pg_dsn
        self._redis_url = redis_url
        self._process: ToolServerProcess | None = None
        # --chaos mcp-kill: the next server, imported and waiting, and what it is started with.
        self._standby: ToolServerProcess | None = None
        self._args: list[str] = []
        self._port = 0
        self._schema = ""
        self._serving = False  # started, and not yet stopped: its end before stop() is news
        self._changing = Semaphore()  # a kill and restart, or a stop: one at a time

    @property
    def sessions_prefix(self) -> str | None:
        """How the started server's PostgreSQL sessions are named (the coordinator waits for them
        to end before the audits); None for a user's server, whose sessions are its own."""
        return _SESSIONS.format(schema=self._schema) if self.target.started_by_toolclash else None

    def start(self, settings: Settings, agents: int) -> McpFacts:
        """For a test of `agents` with `settings`: the server started if toolclash runs it, then
        probed; raises McpServerRefused."""
        url = self.target.url or self._start_builtin(settings, agents)
        client = McpClient(self.target.client_settings(url, 1))
        try:
            client.connect()
        except McpUnavailable as exc:
            self.stop()
            raise McpServerRefused(str(exc)) from None
        finally:
            client.close()
        return McpFacts(self.target.server, url, client.era or "", client.protocol_version or "",
                        dict(client.server_info), self.sessions_prefix)

    def _start_builtin(self, settings: Settings, agents: int) -> str:
        self.stop()
        self._schema = settings.schema
        given = settings.as_given
        self._args = ["--host", "127.0.0.1", "--schema", settings.schema,
                      "--threads", str(settings.tool_server_threads(agents)),
                      "--pool-size", str(settings.pool_size_for(agents)),
                      "--pool-timeout", f"{given['pool_timeout']:g}", "--isolation", settings.isolation,
                      "--lock-timeout", str(given["lock_timeout"]), "--max-tries", str(given["max_tries"]),
                      "--backoff-base", f"{given['backoff_base']:g}", "--backoff-max", f"{given['backoff_max']:g}",
                      "--tool-work", str(given["tool_work"]), "--hold-time", f"{given['hold_time']:g}",
                      "--queue-capacity", str(given["queue_capacity"])]
        if given["deadlock_timeout"] is not None:
            self._args += ["--deadlock-timeout", str(given["deadlock_timeout"])]
        if self.target.server == "careless":
            self._args.append("--careless")
        self._process = ToolServerProcess([*self._args, "--port", "0"], self._pg_dsn, self._redis_url)
        try:
            url = self._process.wait_until_serving()
        except ServerDidNotStart as exc:
            self.stop()
            raise McpServerRefused(f"the {self.target.server} MCP tool server did not start: {exc}") from None
        self._port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        self._serving = True
        if any(fault.kind == MCP_KILL for fault in settings.chaos):
            self._standby = self._next_server()
        log.info("toolclash started the %s MCP tool server: %s", self.target.server, self._process.startup_line())
        return url

    def _next_server(self) -> ToolServerProcess:
        """The standby that replaces the server killed: the same options, the same port."""
        return ToolServerProcess([*self._args, "--port", str(self._port)], self._pg_dsn, self._redis_url,
                                 standby=True)

    def kill_and_restart(self) -> dict[str, Any] | None:
        """--chaos mcp-kill: kill -9 the started server and start it again on its URL; the fault's
        `targets`, `hit` and `down_s` (from the kill until the new server answers), or None when
        no server runs. Raises NotRestarted when the new one does not come up."""
        with self._changing:
            killed = self._process
            if killed is None or not self._serving:
                return None
            standby, self._standby = self._standby or self._next_server(), None
            killed_at = time.monotonic()
            killed.kill()
            killed.close()
            self._process = standby
            standby.serve()
            try:
                standby.wait_until_serving()
            except ServerDidNotStart as exc:
                raise NotRestarted(f"the {self.target.server} MCP tool server was killed and did not start again:"
                                   f" {exc}") from None
            down_s = time.monotonic() - killed_at
            self._standby = self._next_server()
        log.warning("--chaos %s: the %s MCP tool server killed, serving again %.3f s later", MCP_KILL,
                    self.target.server, down_s)
        return {"targets": 1, "hit": 1, "down_s": round(down_s, 3)}

    def stop(self) -> None:
        """Stop the started server, if it runs: SIGTERM, and the calls under way end before it
        exits; killed if it has not within _STOP_TIMEOUT_S."""
        with self._changing:
            process, self._process = self._process, None
            standby, self._standby = self._standby, None
            serving, self._serving = self._serving, False
            if standby is not None:
                standby.stop(_STOP_TIMEOUT_S)
                standby.close()
            if process is None:
                return
            if process.ended and serving:
                log.error("toolclash: the %s MCP tool server had ended during the test (exit code %s): %s",
                          self.target.server, process.exit_code, process.why())
            elif process.stop(_STOP_TIMEOUT_S):
                log.error("toolclash: the %s MCP tool server did not stop within %g s: killed",
                          self.target.server, _STOP_TIMEOUT_S)
            process.close()
