"""The MCP server a run's agents call their tools on (--mcp-url, --mcp-server), as the judging side
sees it: the user's, or toolclash's reference tool server (`python -m toolserver`), which it starts
for each test with that test's settings, on 127.0.0.1 and a free port, and stops once the test's
load has stopped, before the audits (its calls under way end first: nothing it runs commits after
the audits read the data). Either is probed before any load: its era, protocol version and
serverInfo go to the report, and a server that cannot be used refuses the test in one line.

The tool server is given the servers through its environment, never its command line, which
every user of the machine can read (`ps`): a DSN or URL may hold a password.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import gevent

from db.connect import redact
from harness.config.mcp import McpTarget
from harness.config.settings import Settings
from harness.verdict.transport import McpFacts
from transport.mcp.client import McpClient, McpUnavailable

__all__ = ["McpServer", "McpServerRefused"]

log = logging.getLogger("toolclash")

_ROOT = Path(__file__).resolve().parents[2]
# `python -m toolserver` with the servers appended from its environment, in a session of its own
# (a Ctrl-C at the terminal stops the run, which stops the server after its load, not before), and
# ended with the run's process all the same: on Linux the kernel sends it SIGTERM when the process
# that started it dies (PR_SET_PDEATHSIG), however it died.
_LAUNCH = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
except (AttributeError, OSError):
    pass
if os.getppid() != int(os.environ["TOOLCLASH_RUN_PID"]):
    sys.exit(2)
from toolserver.__main__ import main
servers = ["--pg-dsn", os.environ["TOOLCLASH_PG_DSN"], "--redis-url", os.environ["TOOLCLASH_REDIS_URL"]]
sys.exit(main([*sys.argv[1:], *servers]))
"""
_STARTUP_PREFIX = "toolserver: MCP at "
_START_TIMEOUT_S = 30.0
# It lets the calls under way end before it exits (docs/mcp.md): none runs longer than a few seconds.
_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05
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
        self._process: subprocess.Popen[bytes] | None = None
        self._output: list[IO[bytes]] = []
        self._schema = ""
        self._serving = False  # started, and not yet stopped: its end before stop() is news

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
        args = ["--host", "127.0.0.1", "--port", "0", "--schema", settings.schema,
                "--threads", str(settings.tool_server_threads(agents)),
                "--pool-size", str(settings.pool_size_for(agents)),
                "--pool-timeout", f"{given['pool_timeout']:g}", "--isolation", settings.isolation,
                "--lock-timeout", str(given["lock_timeout"]), "--max-tries", str(given["max_tries"]),
                "--backoff-base", f"{given['backoff_base']:g}", "--backoff-max", f"{given['backoff_max']:g}",
                "--tool-work", f"{given['tool_work']:g}", "--hold-time", f"{given['hold_time']:g}",
                "--queue-capacity", str(given["queue_capacity"])]
        if given["deadlock_timeout"] is not None:
            args += ["--deadlock-timeout", str(given["deadlock_timeout"])]
        if self.target.server == "careless":
            args.append("--careless")
        self._output = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]  # noqa: SIM115 (closed by stop())
        env = {**os.environ, "TOOLCLASH_PG_DSN": self._pg_dsn, "TOOLCLASH_REDIS_URL": self._redis_url,
               "TOOLCLASH_RUN_PID": str(os.getpid())}
        self._process = subprocess.Popen([sys.executable, "-c", _LAUNCH, *args], cwd=_ROOT, env=env,
                                         stdin=subprocess.DEVNULL, stdout=self._output[0], stderr=self._output[1],
                                         start_new_session=True)
        try:
            url = self._wait_for_startup()
            self._wait_for_info(url)
        except McpServerRefused:
            self.stop()
            raise
        self._serving = True
        log.info("toolclash started the %s MCP tool server: %s", self.target.server, self._startup_line())
        return url

    def _wait_for_startup(self) -> str:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            line = self._startup_line()
            if line.startswith(_STARTUP_PREFIX):
                return line[len(_STARTUP_PREFIX):].split()[0]
            if self._process is None or self._process.poll() is not None:
                raise McpServerRefused(f"the {self.target.server} MCP tool server did not start: {self._why()}")
            if time.monotonic() >= deadline:
                raise McpServerRefused(f"the {self.target.server} MCP tool server did not start within"
                                       f" {_START_TIMEOUT_S:g} s: {self._why()}")
            gevent.sleep(_POLL_S)

    def _wait_for_info(self, url: str) -> None:
        """Until its GET /info answers: it serves requests, not only accepts connections."""
        info = url.removesuffix("/mcp") + "/info"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(info, timeout=_POLL_S * 20) as reply:
                    reply.read()
                    return
            except (OSError, urllib.error.URLError) as exc:
                if self._process is None or self._process.poll() is not None or time.monotonic() >= deadline:
                    raise McpServerRefused(f"the {self.target.server} MCP tool server at {url} does not answer"
                                           f" GET /info: {self._why() or exc}") from None
            gevent.sleep(_POLL_S)

    def _startup_line(self) -> str:
        return _read(self._output[0]).partition("\n")[0] if self._output else ""

    def _why(self) -> str:
        """The server's last line on stderr (its one-line refusal), or how it ended."""
        lines = [line for line in _read(self._output[1]).splitlines() if line.strip()] if self._output else []
        if lines:
            return redact(lines[-1].removeprefix("toolserver: "))
        code = self._process.poll() if self._process is not None else None
        return f"it exited with code {code}" if code is not None else "no word from it"

    def stop(self) -> None:
        """Stop the started server, if it runs: SIGTERM, and the calls under way end before it
        exits; killed if it has not within _STOP_TIMEOUT_S."""
        process, self._process = self._process, None
        serving, self._serving = self._serving, False
        if process is not None:
            if process.poll() is not None and serving:
                log.error("toolclash: the %s MCP tool server had ended during the test (exit code %s): %s",
                          self.target.server, process.returncode, self._why())
            elif process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.error("toolclash: the %s MCP tool server did not stop within %g s: killed",
                              self.target.server, _STOP_TIMEOUT_S)
                    process.kill()
                    process.wait()
        for file in self._output:
            file.close()
        self._output = []


def _read(file: IO[bytes]) -> str:
    """A file the child writes to, read whole without moving the offset it shares."""
    return os.pread(file.fileno(), os.fstat(file.fileno()).st_size, 0).decode("utf-8", errors="replace")
