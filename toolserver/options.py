"""The tool server's command line and environment, checked into one `ServerOptions`: bad input
is one line (BadOption), and the process exits 2 (toolserver.__main__).

The options that shape the tools and their retries are named, and counted in the units, of
toolclash's own (docs/options.md): a server started for a run is given that run's values.

Each option may be given by an environment variable instead, the command line winning: the
servers above all, since a DSN may hold a password and a command line is anyone's to read (`ps`,
/proc/*/cmdline). What the server and the load must agree on has toolclash's own variable, so that
one value serves both (as under docker compose): the servers, the schema, and the two settings
the audits judge the server's work by (the anomalies an isolation level allows, the jobs the queue
may hold). Every other option's is TOOLCLASH_TOOLSERVER_<OPTION>: the server's own.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import configargparse  # type: ignore[import-untyped]

from db.durations import BadDuration, Duration, parse_duration
from db.pool import ISOLATION_LEVELS, SessionSettings
from transport.retry import RetryPolicy

__all__ = ["BadOption", "ServerOptions", "environment_variables", "parse_options"]

# PostgreSQL truncates an application_name past 63 bytes, and the sessions would no longer be
# found by it.
_APPLICATION_NAME = "toolclash-toolserver:{schema}"
# The options whose variable is toolclash's (harness/config/declared.py names them the same way).
_SHARED_WITH_TOOLCLASH = ("pg_dsn", "redis_url", "schema", "isolation", "queue_capacity")
_REQUIRED = ("pg_dsn", "redis_url", "schema")


class BadOption(ValueError):
    """An option the server refuses; the message is one line."""


@dataclass(frozen=True)
class ServerOptions:
    pg_dsn: str
    redis_url: str
    schema: str
    host: str
    port: int
    threads: int
    pool_size: int
    pool_timeout_s: float
    processes: int
    stateless: bool
    json_response: bool
    isolation: str
    deadlock_timeout_ms: int | None
    lock_timeout_ms: int
    retry: RetryPolicy
    tool_work: Duration
    hold_s: float
    queue_capacity: int
    careless: bool  # each tool's careless version (toolserver.careless)
    # The options given by their environment variable rather than on the command line.
    from_environment: frozenset[str] = frozenset()

    def origin(self, dest: str) -> str:
        """Where an option was given, for messages: its variable, or its flag."""
        return _variable(dest) if dest in self.from_environment else _flag(dest)

    @property
    def application_name(self) -> str:
        """What the server's sessions are named, in pg_stat_activity and in Redis's CLIENT LIST."""
        return _APPLICATION_NAME.format(schema=self.schema)

    @property
    def session(self) -> SessionSettings:
        return SessionSettings(self.schema, self.isolation, self.deadlock_timeout_ms, self.lock_timeout_ms)


# Locust's own parser, which reads toolclash's TOOLCLASH_* variables the same way: the command
# line wins, a switch's variable is true/false (yes/no, on/off, 1/0).
class _Parser(configargparse.ArgumentParser):  # type: ignore[misc]
    def error(self, message: str) -> NoReturn:
        raise BadOption(message)


def _parser() -> _Parser:
    parser = _Parser(prog="python -m toolserver", description="toolclash's reference MCP tool server: the built-in"
                     " tools over Streamable HTTP, on the official MCP SDK (docs/mcp.md)", add_help=True,
                     epilog="Each option may be given by its environment variable instead; the command line"
                     " wins. Give the servers that way: a command line is anyone's to read (ps). A switch's"
                     " variable is true or false.")
    servers = parser.add_argument_group("servers")
    servers.add_argument("--pg-dsn", help="required: the PostgreSQL the tools run on")
    servers.add_argument("--redis-url", help="required: the Redis the tools run on (redis:// or unix://)")
    servers.add_argument("--schema", help="required: the run's schema (toolclash --schema): its tables and keys")
    http = parser.add_argument_group("MCP over Streamable HTTP")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    http.add_argument("--port", type=int, default=8000, help="port to listen on; MCP is at /mcp (default: 8000)")
    http.add_argument("--stateless", action="store_true",
                      help="no MCP sessions in the session era (no Mcp-Session-Id): every request stands alone")
    http.add_argument("--json-response", action="store_true",
                      help="answer session-era requests with one JSON body rather than an SSE stream")
    http.add_argument("--processes", type=int, default=1,
                      help="server processes sharing the port (default: 1); more than one needs --stateless")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--threads", type=int, default=20,
                           help="threads running tool calls, per process (default: 20)")
    execution.add_argument("--pool-size", type=int, default=None,
                           help="PostgreSQL connections per process (default: one per thread)")
    execution.add_argument("--pool-timeout", type=float, default=5.0,
                           help="seconds a call waits for a connection before it fails as a pool timeout (default: 5)")
    execution.add_argument("--isolation", default="read_committed", choices=sorted(ISOLATION_LEVELS),
                           help="isolation level of every tool transaction (default: read_committed)")
    execution.add_argument("--deadlock-timeout", type=int, default=None,
                           help="ms: PostgreSQL deadlock_timeout, when the role may set it (default: the server's)")
    execution.add_argument("--lock-timeout", type=int, default=0, help="ms: PostgreSQL lock_timeout (default: 0, none)")
    execution.add_argument("--max-tries", type=int, default=5,
                           help="attempts per call, retries included, for retryable failures (default: 5)")
    execution.add_argument("--backoff-base", type=float, default=10.0,
                           help="ms: backoff ceiling after the first failure, doubled per retry (default: 10)")
    execution.add_argument("--backoff-max", type=float, default=500.0, help="ms: the backoff ceiling (default: 500)")
    tools = parser.add_argument_group("tools")
    tools.add_argument("--tool-work", type=_duration, default=parse_duration("5"),
                       help="ms of work a tool does between its statements, or a distribution drawn at each"
                       " tx.work(), as toolclash's --tool-work (default: 5)")
    tools.add_argument("--hold-time", type=float, default=50.0,
                       help="pool_exhaustion: ms summarize_accounts keeps its connection (default: 50)")
    tools.add_argument("--queue-capacity", type=int, default=50,
                       help="queue: jobs the bounded queue holds before it refuses more (default: 50)")
    tools.add_argument("--careless", action="store_true",
                       help="serve each tool's careless version, for the audits to catch (docs/mcp.md: Careless mode)")
    for action in _options(parser):
        setattr(action, "env_var", _variable(action.dest))  # what configargparse reads it from  # noqa: B010
    return parser


def _duration(text: str) -> Duration:
    """--tool-work's value; argparse shows the refusal's own words (not 'invalid value')."""
    try:
        return parse_duration(text)
    except BadDuration as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings and action.dest != "help"]


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _variable(dest: str) -> str:
    return f"TOOLCLASH_{'' if dest in _SHARED_WITH_TOOLCLASH else 'TOOLSERVER_'}{dest.upper()}"


def environment_variables() -> dict[str, str]:
    """Every option's environment variable, by flag."""
    return {_flag(action.dest): _variable(action.dest) for action in _options(_parser())}


def _given(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[dict[str, Any], frozenset[str]]:
    """Each option's value, from the command line, else its variable, else its default; and
    which came from their variables. An empty variable is an unset one."""
    parser = _parser()
    variables = {name: value for name, value in environ.items() if name.startswith("TOOLCLASH_") and value.strip()}
    values = vars(parser.parse_args(list(argv), env_vars=variables))
    from_environment = frozenset(
        action.dest for action, _ in parser.get_source_to_settings_dict().get("environment_variables", {}).values())
    missing = [f"{_flag(dest)} (or {_variable(dest)})" for dest in _REQUIRED if values[dest] is None]
    if missing:
        raise BadOption(f"give {', '.join(missing)}: on the command line or in the environment")
    return values, from_environment


def parse_options(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ServerOptions:
    """The options in `argv`, else in `environ` (default: this process's environment); BadOption
    (one line) for anything the server refuses."""
    values, from_environment = _given(argv, os.environ if environ is None else environ)
    given = argparse.Namespace(**values)

    def named(dest: str, value: Any) -> str:  # an option and its value, as it was given
        return f"{_variable(dest)}={value}" if dest in from_environment else f"{_flag(dest)} {value}"

    for dest, least in (("port", 0), ("threads", 1), ("processes", 1), ("pool_size", 1), ("pool_timeout", 0),
                        ("lock_timeout", 0), ("deadlock_timeout", 1), ("max_tries", 1), ("backoff_base", 0),
                        ("backoff_max", 0), ("hold_time", 0), ("queue_capacity", 1)):
        if values[dest] is not None and values[dest] < least:
            raise BadOption(f"{named(dest, format(values[dest], 'g'))} is below its least value, {least}")
    if given.port > 65535:
        raise BadOption(f"{named('port', given.port)} is no TCP port")
    if given.processes > 1 and not given.stateless:
        raise BadOption(f"{named('processes', given.processes)} needs --stateless: an MCP session lives in the process"
                        " that opened it, and a request of it that reaches another process is refused")
    if len(_APPLICATION_NAME.format(schema=given.schema).encode()) > 63:
        raise BadOption(f"{named('schema', repr(given.schema))} is too long to name the server's sessions by")
    return ServerOptions(
        pg_dsn=given.pg_dsn, redis_url=given.redis_url, schema=given.schema, host=given.host, port=given.port,
        threads=given.threads, pool_size=given.pool_size or given.threads, pool_timeout_s=given.pool_timeout,
        processes=given.processes, stateless=given.stateless, json_response=given.json_response,
        isolation=given.isolation, deadlock_timeout_ms=given.deadlock_timeout, lock_timeout_ms=given.lock_timeout,
        retry=RetryPolicy(given.max_tries, given.backoff_base / 1000.0, given.backoff_max / 1000.0),
        tool_work=given.tool_work, hold_s=given.hold_time / 1000.0, queue_capacity=given.queue_capacity,
        careless=given.careless, from_environment=from_environment,
    )
