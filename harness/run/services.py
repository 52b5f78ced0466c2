"""Which PostgreSQL and Redis a run uses: the user's, or the embedded default; and over MCP, the
tool server the agents call (harness.run.mcp_server), which writes to them."""

from __future__ import annotations

import logging
from pathlib import Path

from db.connect import ServerInfo, probe_postgres, probe_redis
from db.embedded import EmbeddedPostgres, EmbeddedRedis, make_run_dir, remove_run_dir
from harness.config.mcp import McpTarget
from harness.run.mcp_server import McpServer

__all__ = ["Services"]

log = logging.getLogger(__name__)


class Services:
    """The two servers of a run. Each one the user did not name is started embedded, in a
    data directory of the run, and stopped (once) by `stop()`."""

    def __init__(self, pg_dsn: str | None, redis_url: str | None, mcp: McpTarget | None = None) -> None:
        self.pg_dsn = pg_dsn
        self.redis_url = redis_url
        self._mcp_target = mcp
        # Over MCP, once both servers are reached: the tool server, on them.
        self.mcp: McpServer | None = None
        self.infos: list[ServerInfo] = []
        self._embedded: list[EmbeddedPostgres | EmbeddedRedis] = []
        self._run_dir: Path | None = None

    def start(self) -> None:
        """Reach (or start) both servers; raises ServiceUnreachable with a one-line reason."""
        try:
            if self.pg_dsn is None:
                self.pg_dsn = self._start_embedded(EmbeddedPostgres)
                self.infos.append(probe_postgres(self.pg_dsn, "embedded, no --pg-dsn given"))
            else:
                self.infos.append(probe_postgres(self.pg_dsn, "--pg-dsn"))
            if self.redis_url is None:
                self.redis_url = self._start_embedded(EmbeddedRedis)
                self.infos.append(probe_redis(self.redis_url, "embedded, no --redis-url given"))
            else:
                self.infos.append(probe_redis(self.redis_url, "--redis-url"))
            if self._mcp_target is not None:
                self.mcp = McpServer(self._mcp_target, self.pg_dsn, self.redis_url)
        except BaseException:
            self.stop()
            raise

    def _start_embedded(self, server_class: type[EmbeddedPostgres] | type[EmbeddedRedis]) -> str:
        if self._run_dir is None:
            self._run_dir = make_run_dir()
        server = server_class(self._run_dir)
        self._embedded.append(server)
        return server.start()

    def stop(self) -> None:
        if self.mcp is not None:  # before the servers it writes to
            self.mcp.stop()
        for server in reversed(self._embedded):
            server.stop()
        self._embedded.clear()
        if self._run_dir is not None:
            remove_run_dir(self._run_dir)
            self._run_dir = None
