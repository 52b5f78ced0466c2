"""The tool server under uvicorn: one process (the default; this project's CI machines have two
cores, which the database and the load share), or `--processes N` sharing one listening socket,
which only the stateless era allows (an MCP session lives in the process that opened it).

The socket is bound here, before anything else is opened, so that a port already taken is one
line. Several processes are uvicorn's: each is spawned afresh and builds its own application
from the command line it is handed in the environment (`app_from_environment`), with its own
threads and connections.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from db.connect import ServerInfo
from toolserver.app import MCP_PATH, server_app
from toolserver.execution import Execution, served_tools
from toolserver.options import BadOption, ServerOptions, parse_options

__all__ = ["app_from_environment", "listening_socket", "serve", "startup_line"]

# The command line each of several processes builds its application from.
_ARGV_VARIABLE = "TOOLCLASH_TOOLSERVER_ARGV"
# Seconds a stopping server waits for its requests (an SSE stream a client keeps open) to end.
_GRACEFUL_S = 5


def listening_socket(options: ServerOptions) -> socket.socket:
    """The server's socket, bound and listening; BadOption when the address cannot be had."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of a socket that says so,
    # and without it every reply waited for its client's delayed ACK (40 ms a request, measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BadOption(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
    return sock


def startup_line(options: ServerOptions, sock: socket.socket, postgres: ServerInfo, redis: ServerInfo) -> str:
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    return (f"toolserver: MCP at http://{where}:{port}{MCP_PATH} (session era"
            f" {'without sessions' if options.stateless else 'with sessions'}, stateless era 2026-07-28),"
            f" {options.processes} process(es) of {options.threads} threads and {options.pool_size} connections"
            f"{', CARELESS tools (docs/mcp.md: Careless mode)' if options.careless else ''};"
            f" {postgres.describe()}, {redis.describe()}; GET /info")


def serve(options: ServerOptions, argv: Sequence[str], sock: socket.socket, started: str) -> None:
    """Serve until SIGINT or SIGTERM, then let the calls under way end; `started` is printed once
    the server is ready to answer."""
    # uvicorn stops gracefully on either signal, then raises it again: SIGTERM's default would
    # end the process there, before its calls and connections are wound down.
    signal.signal(signal.SIGTERM, _stop)
    if options.processes > 1:
        os.environ[_ARGV_VARIABLE] = json.dumps(list(argv))
        config = uvicorn.Config("toolserver.serve:app_from_environment", factory=True, workers=options.processes,
                                log_level="warning", timeout_graceful_shutdown=_GRACEFUL_S)
        print(started, flush=True)
        Multiprocess(config, sockets=[sock]).run()
        return
    execution = Execution(options)
    try:
        execution.open()
        app = server_app(options, served_tools(options), execution)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=_GRACEFUL_S))
        print(started, flush=True)
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        execution.close()


def app_from_environment() -> Starlette:
    """One of several processes' application (uvicorn's factory, in the spawned process)."""
    options = parse_options(json.loads(os.environ[_ARGV_VARIABLE]))
    execution = Execution(options)
    execution.open()
    return server_app(options, served_tools(options), execution)


def _stop(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)
