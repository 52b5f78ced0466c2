"""Reaching the user's servers: one clear line when they cannot be reached, never a fallback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import redis
import redis.exceptions
from psycopg.conninfo import conninfo_to_dict

from db.rows import one_row

__all__ = ["CONNECT_TIMEOUT_S", "ServiceUnreachable", "ServerInfo", "probe_postgres", "probe_redis", "postgres_target",
           "redact", "redacted_url"]

# Both probes together stay well inside the 10 s a user waits for a bad DSN to be reported.
CONNECT_TIMEOUT_S = 4


class ServiceUnreachable(Exception):
    """A server named by the user (or started by the harness) does not answer; the message is one line."""


@dataclass(frozen=True)
class ServerInfo:
    kind: str
    version: str
    where: str  # host:port/database or the socket, never a password
    origin: str  # "--pg-dsn", "embedded", ...

    def describe(self) -> str:
        return f"{self.kind} {self.version} at {self.where} ({self.origin})"


def postgres_target(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages; raises ServiceUnreachable if it does not parse."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the DSN it could not parse, password and all.
        raise ServiceUnreachable(f"invalid PostgreSQL DSN: {redact(_first_line(exc))}") from None
    host = str(params.get("host") or params.get("hostaddr") or "the default socket")
    database = params.get("dbname") or params.get("user") or ""
    if host.startswith("/"):
        return f"socket {host}/.s.PGSQL.{params.get('port') or 5432}, database {database}"
    return f"{host}:{params.get('port') or 5432}/{database}"


def probe_postgres(dsn: str, origin: str) -> ServerInfo:
    target = postgres_target(dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            version = one_row(conn.execute("SHOW server_version"))[0]
    except psycopg.Error as exc:
        raise ServiceUnreachable(
            f"cannot connect to PostgreSQL at {target} (from {origin}): {_first_line(exc)}"
        ) from None
    return ServerInfo("PostgreSQL", version, target, origin)


def probe_redis(url: str, origin: str) -> ServerInfo:
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
        )
    except ValueError as exc:
        raise ServiceUnreachable(
            f"invalid Redis URL {redact(url)!r} (from {origin}): {redact(_first_line(exc))}") from None
    kwargs = client.connection_pool.connection_kwargs
    target = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    target += f"/{kwargs.get('db', 0)}"
    try:
        with client:
            version = client.info("server")["redis_version"]
    except redis.exceptions.RedisError as exc:
        raise ServiceUnreachable(f"cannot connect to Redis at {target} (from {origin}): {_first_line(exc)}") from None
    return ServerInfo("Redis", version, target, origin)


# user:password@ in a URI, and password=… in a key=value DSN.
_URI_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"']*:)[^\s@\"']*@")
_KEYWORD_PASSWORD = re.compile(r"(?P<keep>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s\"']+)", re.IGNORECASE)
# An http(s) URL in a message: redacted whole by redacted_url.
_HTTP_URL = re.compile(r"\bhttps?://[^\s\"']+", re.IGNORECASE)
_AFTER_SCHEME = re.compile(r"(?<=://).*", re.DOTALL)


def redacted_url(url: str) -> str:
    """`url` as messages show it: its user information and every query value (where credentials
    ride: a token may be the user information alone) replaced by ***. A URL that does not parse
    (an unclosed IPv6 bracket) shows nothing after its scheme: never an exception, never a secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _AFTER_SCHEME.sub("***", url) if "://" in url else "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(key, "***") for key, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """`text` with every password of a DSN or URL in it replaced by ***, for messages; of an
    http(s) URL (an MCP server's), its user information and every query value."""
    text = _HTTP_URL.sub(lambda m: redacted_url(m[0]), text)
    text = _URI_PASSWORD.sub(lambda m: m["keep"] + "***@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["keep"] + "***", text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
