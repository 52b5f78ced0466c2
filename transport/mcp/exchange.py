"""One HTTP exchange with an MCP server's endpoint: a JSON-RPC message POSTed, its reply read as
one JSON object or from an event stream; and what the client can know when no reply came.

On geventhttpclient directly (one connection pool per process, shared by every agent), not on
Locust's FastHttpSession, which would tell Locust of each HTTP request: the harness tells Locust
of each tool call instead, once, whatever requests it took.

When no reply came, whether the server got the request decides what the call's outcome can be:
- `NotDelivered`: provably never reached the server (the connection could not be opened: refused,
  no such host, a certificate refused, connecting timed out). Nothing was applied.
- `ReplyLost`: sent, and its reply never came: the connection closed or reset before it, the event
  stream ended without it, a 5xx status (a proxy's or the server's own: neither says what the tool
  did), or something that is no reply to it. The server may have applied it.
- `ReplyTimedOut` (a `ReplyLost`): no reply within the settings' `timeout_s`, streamed or not; the
  request may still be running.
A reply that is a JSON-RPC error, or a 4xx status, is an answer: `Reply.result()` raises `McpError`.

A connection goes back to the pool once its reply was read to its end. An event stream whose
reply came is answered, but its server ends it a moment later (up to most of a second when it is
saturated): the rest is read in a greenlet of its own, for at most `_STREAM_END_S`, so that the
connection is reused rather than closed and another opened for the next request; the reply is
returned at once, and the next request need not wait for it (the pool holds twice the
connections).
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.ssl
from gevent.lock import BoundedSemaphore
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPSocketPoolResponse

from transport.mcp.settings import McpSettings
from transport.mcp.sse import message_data

__all__ = ["HttpExchange", "McpError", "McpTransportError", "NotDelivered", "Reply", "ReplyLost", "ReplyTimedOut"]

Message = dict[str, Any]

# Raised only while a connection is being opened, before a byte of the request is sent: a socket
# timeout too, since the whole exchange's own limit (gevent.Timeout) is longer than connecting's and
# the sockets' read limit longer still (see _READ_MARGIN_S).
_NOT_DELIVERED: tuple[type[BaseException], ...] = (ConnectionRefusedError, socket.gaierror,
                                                    ssl.SSLCertVerificationError, TimeoutError)
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})
_READ_MARGIN_S = 5.0
# How long an answered event stream is read on for its end, before its connection is closed.
_STREAM_END_S = 1.0
_BLOCK_BYTES = 4096
# One encoder for every request: json.dumps with separators builds one a call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


class McpTransportError(Exception):
    """No reply came; the subclass says whether the server may have got the request."""


class NotDelivered(McpTransportError):
    pass


class ReplyLost(McpTransportError):
    pass


class ReplyTimedOut(ReplyLost):
    pass


class McpError(Exception):
    """The server answered with a JSON-RPC error (`code`, `data`), or with an HTTP error status and
    no JSON-RPC reply (`code` None). `status` is the HTTP status either way."""

    def __init__(self, message: str, *, status: int, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.data = data


@dataclass(frozen=True)
class Reply:
    """What the server answered: its HTTP status, the JSON-RPC message (None when the body held
    none, as for a notification's 202), and the session id it named, if any."""

    status: int
    message: Message | None
    session_id: str | None

    def result(self) -> Message:
        """The JSON-RPC result; McpError for an error reply or an HTTP error status."""
        message = self.message or {}
        if 200 <= self.status < 300 and isinstance(message.get("result"), dict):
            result: Message = message["result"]
            return result
        error = message.get("error")
        if isinstance(error, dict):
            raise McpError(f"JSON-RPC error {error.get('code')}: {error.get('message')}", status=self.status,
                           code=error.get("code"), data=error.get("data"))
        refused = " (the credentials were refused)" if self.status in (401, 403) else ""
        raise McpError(f"HTTP {self.status}{refused} with no JSON-RPC reply", status=self.status)


class HttpExchange:
    """The process's connections to one MCP endpoint, `settings.connections` at most."""

    def __init__(self, settings: McpSettings) -> None:
        parts = urlsplit(settings.url)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = settings.timeout_s
        headers = {"User-Agent": "toolclash", "Accept": "application/json, text/event-stream"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        tls = parts.scheme == "https"
        # Twice the connections: besides one per request in flight, the answered event streams
        # being read to their end (_finish_stream).
        self._http = HTTPClient(
            parts.hostname or "", port=parts.port, headers=headers, concurrency=2 * settings.connections,
            connection_timeout=settings.connect_timeout_s, network_timeout=settings.timeout_s + _READ_MARGIN_S,
            ssl=tls, ssl_options={"ca_certs": settings.ca_file} if tls and settings.ca_file else None,
            ssl_context_factory=_tls_context(settings.tls_verify) if tls else None, insecure=not settings.tls_verify)
        # Taken before a request is sent and given back after its reply is read, so that the
        # pool's own wait for a connection never runs inside the request's time limit: a request
        # that waited for a connection and never got one was not sent.
        self._slots = BoundedSemaphore(settings.connections)
        # Replies read, by form: one JSON object, or an event stream.
        self.json_replies = self.streamed_replies = 0

    def post(self, message: Message, headers: dict[str, str], waits: list[float] | None = None) -> Reply:
        """Send `message`; its reply. `waits` gets the time spent waiting for a connection."""
        body = _encode(message).encode("utf-8")
        return self._exchange("POST", body, {**headers, "Content-Type": "application/json"}, message.get("id"), waits)

    def delete(self, headers: dict[str, str]) -> Reply:
        return self._exchange("DELETE", b"", headers, None, None)

    def close(self) -> None:
        self._http.close()

    def _exchange(self, method: str, body: bytes, headers: dict[str, str], request_id: Any,
                  waits: list[float] | None) -> Reply:
        asked_at = perf_counter()
        with self._slots:
            if waits is not None:
                waits.append(perf_counter() - asked_at)
            limit = gevent.Timeout(self._timeout_s)
            limit.start()
            response: HTTPSocketPoolResponse | None = None
            answered = False
            try:
                response = self._http.request(method, self._target, body=body, headers=headers)
                reply = self._read(method, response, request_id)
                answered = True
                return reply
            except gevent.Timeout as exc:
                if exc is not limit:
                    raise
                raise ReplyTimedOut(f"{method}: no reply within {self._timeout_s:g} s") from None
            except OSError as exc:
                if isinstance(exc, _NOT_DELIVERED) or exc.errno in _UNREACHABLE:
                    raise NotDelivered(f"{method}: cannot connect: {_said(exc)}") from None
                raise ReplyLost(f"{method}: the connection broke before the reply: {_said(exc)}") from None
            except http.client.HTTPException as exc:  # geventhttpclient's parser: closed, or no HTTP
                raise ReplyLost(f"{method}: the connection broke before the reply: {_said(exc)}") from None
            except ValueError as exc:  # undecodable JSON or text
                raise ReplyLost(f"{method}: no readable reply: {_said(exc)}") from None
            finally:
                limit.close()
                if response is not None and answered and not response.message_complete:
                    # A bare greenlet: gevent.spawn's Greenlet would also record who spawned it
                    # and that one's stack (track_greenlet_tree), for nobody to read.
                    gevent.spawn_raw(_finish_stream, response)
                elif response is not None:
                    # Back to the pool if it was read to its end, else closed (a stream left
                    # unread: in the stateless era, closing it cancels the request).
                    response.release()

    def _read(self, method: str, response: HTTPSocketPoolResponse, request_id: Any) -> Reply:
        status = response.status_code
        session_id = _header(response, "mcp-session-id")
        if status >= 500:
            raise ReplyLost(f"{method}: HTTP {status} before the reply")
        content_type = (_header(response, "content-type") or "").partition(";")[0].strip().lower()
        if content_type == "text/event-stream" and status == 200:
            self.streamed_replies += 1
            for data in message_data(lambda: response.readline(b"\n")):
                message = json.loads(data)
                if _answers(message, request_id):
                    return Reply(status, message, session_id)
            raise ReplyLost("POST: the event stream ended before the reply")
        body = response.read()
        message = _json_object(body) if content_type == "application/json" else None
        self.json_replies += message is not None
        if 200 <= status < 300 and request_id is not None and not (message and _answers(message, request_id)):
            raise ReplyLost(f"POST: HTTP {status} without a reply to request {request_id!r}")
        return Reply(status, message, session_id)


def _finish_stream(response: HTTPSocketPoolResponse) -> None:
    """Read an answered event stream to its end, then give its connection back to the pool;
    closed instead if it has not ended within _STREAM_END_S, or broke."""
    limit = gevent.Timeout(_STREAM_END_S)
    limit.start()
    try:
        while not response.message_complete and response.read(_BLOCK_BYTES):
            pass  # what the server sends after the reply is no reply to anything of this client's
    except (OSError, http.client.HTTPException):
        pass  # closed below
    except gevent.Timeout as exc:
        if exc is not limit:
            raise
    finally:
        limit.close()
        response.release()


def _answers(message: Any, request_id: Any) -> bool:
    """Is `message` the response to request `request_id` (its result or its error)? An error
    about no request in particular (id null: the request could not be read) answers it too."""
    if not isinstance(message, dict) or "method" in message:
        return False  # a notification or a request of the server's, on the way to the reply
    return message.get("id") == request_id or (message.get("id") is None and "error" in message)


def _json_object(body: bytes) -> Message | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _header(response: HTTPSocketPoolResponse, name: str) -> str | None:
    value = response.get(name)
    return value[0] if isinstance(value, list) else value


def _said(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _tls_context(verify: bool) -> Callable[..., ssl.SSLContext]:
    """geventhttpclient's context factory. Unverified: no check of the certificate at all (its
    `insecure` alone skips only the name)."""

    def make(cafile: str | None = None) -> ssl.SSLContext:
        context = gevent.ssl.create_default_context(cafile=cafile)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    return make
