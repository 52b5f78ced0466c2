"""A real MCP tool server for the MCP client's tests (tests/test_mcp_client.py), on the official
SDK (`MCPServer`, Streamable HTTP under uvicorn), its tools writing to the real PostgreSQL: the
client is tested against the protocol as an independent implementation speaks it, not against
toolclash's own reference server.

    python -m tests.mcp_test_server --port P --pg-dsn DSN --schema S [--json] [--legacy-only] ...

The SDK serves both eras on one endpoint (a request with `MCP-Protocol-Version: 2026-07-28` is
served statelessly; `initialize` opens a session). `--legacy-only` makes it a session-era server:
the stateless era's version header is dropped before the SDK sees it, so such a request is one
without a session, answered 400 as a 2025-11-25 server answers it. Every tool call is written to
`requests` (the op id as `_meta`, the `Idempotency-Key` header and the `op_id` argument carried
it), so a test can see what the server received; `writes` holds what the tools wrote, once per op
id. Not monkey-patched: the SDK is asyncio; the tools run in its thread pool.

`book_seat` is a user's own tool, as a team's server has it (tests/test_mcp_own_server.py): it
writes a booking to `bookings` in the toolclash run's schema (`--run-schema`, which the run's tools
module creates), storing the call's op id there in the same transaction, as docs/mcp.md's recipe
says; with `--forget-op-ids` it stores none, as a server never told to. Every fourth seat meets a
real serialization failure the first time its op id is sent, rolled back, for the client to retry.
"""

from __future__ import annotations

import argparse
import threading
from typing import Annotated, Any

import psycopg
import uvicorn
from mcp.server import _streamable_http_modern
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent
from mcp_types import Tool as MCPTool
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import Field

from db.errors import classify

OP_ID_META_KEY = "io.toolclash/op_id"


class InFlight:
    """The tool calls running now, and the most that ever ran at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self) -> InFlight:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


class WithABadlyMarkedTool(MCPServer):
    """Lists one more tool, whose `x-mcp-header` mark breaks the specification (on a number): a
    client must leave it out. The SDK refuses to define such a tool, so it is only listed."""

    async def list_tools(self) -> list[MCPTool]:
        badly_marked = MCPTool(name="badly_marked", input_schema={
            "type": "object", "properties": {"ratio": {"type": "number", "x-mcp-header": "Ratio"}}})
        return [*await super().list_tools(), badly_marked]


def prepare(conn: psycopg.Connection, schema: str) -> None:
    """The server's tables. Several servers starting at once on one schema would race to create
    them (CREATE … IF NOT EXISTS is not safe against itself): their tests prepare it first."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.requests (tool text, op_id text, meta_op_id text,"
                         " idempotency_key text, at timestamptz DEFAULT clock_timestamp())")
                 .format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.writes (op_id text PRIMARY KEY, note text)")
                 .format(sql.Identifier(schema)))


def serve(args: argparse.Namespace) -> None:
    pool = ConnectionPool(args.pg_dsn, min_size=2, max_size=60, open=True,
                          kwargs={"options": f"-c search_path={args.schema}"})
    with pool.connection() as conn:
        prepare(conn, args.schema)
    in_flight = InFlight()
    mcp = WithABadlyMarkedTool("toolclash-test-server")

    def seen(ctx: Context, tool: str, op_id: str | None) -> int:
        """Write what the call carried; how many calls with this op id the server has seen."""
        meta = ctx.request_context.meta
        meta_op_id = dict(meta).get(OP_ID_META_KEY) if meta is not None else None
        key = (ctx.headers or {}).get("idempotency-key")
        with pool.connection() as conn:
            conn.execute("INSERT INTO requests (tool, op_id, meta_op_id, idempotency_key) VALUES (%s, %s, %s, %s)",
                         (tool, op_id, meta_op_id, key))
            row = conn.execute("SELECT count(*) FROM requests WHERE meta_op_id = %s", (meta_op_id,)).fetchone()
        return row[0] if row else 0

    def succeeded(value: Any, op_id: str | None, attempts: int = 1, failures: tuple[str, ...] = ()) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="ok")], is_error=False,
                              structured_content={"value": value, "op_id": op_id, "attempts": attempts,
                                                  "failures": list(failures)})

    def failed(said: dict[str, Any], text: str) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True, structured_content=said)

    @mcp.tool()
    def write(op_id: str, note: str, ctx: Context) -> CallToolResult:
        """Write `note` under the op id, once however often it is sent."""
        seen(ctx, "write", op_id)
        with pool.connection() as conn:
            conn.execute("INSERT INTO writes (op_id, note) VALUES (%s, %s) ON CONFLICT (op_id) DO NOTHING",
                         (op_id, note))
        # As if the server had met a deadlock and tried again: what it says of its own attempts
        # is reported apart from the client's.
        return succeeded({"note": note}, op_id, attempts=2, failures=("deadlocks",))

    @mcp.tool()
    def conflict(op_id: str, fails: int, sqlstate: str, ctx: Context, say_kind: bool = True,
                 rolled_back: bool | None = True) -> CallToolResult:
        """Fail with a real error of SQLSTATE `sqlstate` raised by PostgreSQL the first `fails`
        times this op id is sent, then write it."""
        if seen(ctx, "conflict", op_id) <= fails:
            try:
                with pool.connection() as conn:
                    conn.execute(sql.SQL("DO $$ BEGIN RAISE EXCEPTION 'provoked' USING ERRCODE = {}; END $$")
                                 .format(sql.Literal(sqlstate)))
            except psycopg.Error as exc:
                kind = classify(exc).value
                said: dict[str, Any] = {"sqlstate": exc.sqlstate, "refused": False, "op_id": op_id, "attempts": 1,
                                        "failures": [kind]}
                if say_kind:
                    said["kind"] = kind
                if rolled_back is not None:
                    said["rolled_back"] = rolled_back
                return failed(said, f"{kind}: {exc.sqlstate}")
        with pool.connection() as conn:
            conn.execute("INSERT INTO writes (op_id, note) VALUES (%s, 'conflict') ON CONFLICT DO NOTHING", (op_id,))
        return succeeded("written", op_id)

    @mcp.tool()
    def refuse(op_id: str, ctx: Context) -> CallToolResult:
        seen(ctx, "refuse", op_id)
        return failed({"kind": "refusals", "refused": True, "rolled_back": True, "op_id": op_id, "attempts": 1,
                       "failures": []}, "the account cannot pay")

    @mcp.tool()
    def boom(ctx: Context) -> str:
        seen(ctx, "boom", None)
        raise RuntimeError("boom")

    @mcp.tool()
    def invalid(op_id: str, ctx: Context) -> str:
        """Answer with a JSON-RPC error (invalid params), not a tool result."""
        seen(ctx, "invalid", op_id)
        raise MCPError(INVALID_PARAMS, "no such account")

    @mcp.tool()
    def sleepy(op_id: str, seconds: float, ctx: Context) -> CallToolResult:
        """Take `seconds` in PostgreSQL, then write the op id."""
        seen(ctx, "sleepy", op_id)
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(%s)", (seconds,))
            conn.execute("INSERT INTO writes (op_id, note) VALUES (%s, 'slept') ON CONFLICT DO NOTHING", (op_id,))
        return succeeded(seconds, op_id)

    @mcp.tool()
    def hold(seconds: float) -> CallToolResult:
        """Hold a PostgreSQL session `seconds`; the most calls the server ran at once."""
        with in_flight, pool.connection() as conn:
            conn.execute("SELECT pg_sleep(%s)", (seconds,))
            return succeeded(in_flight.most, None)

    @mcp.tool()
    async def chatty(ctx: Context) -> str:
        """Log before it answers: in an event stream, notifications come before the reply."""
        await ctx.info("working")
        await ctx.report_progress(1, 2)
        return "done"

    @mcp.tool()
    def region(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], ctx: Context) -> str:
        """The value of the Mcp-Param-Region header the call came with."""
        return (ctx.headers or {}).get("mcp-param-region", "")

    @mcp.tool()
    def book_seat(seat: int, ctx: Context) -> CallToolResult:
        """Book `seat`: one row of the run's `bookings`, with the call's op id unless told to forget it."""
        meta = dict(ctx.request_context.meta or {})
        op_id = meta.get(OP_ID_META_KEY) or (ctx.headers or {}).get("idempotency-key")
        conflict = seen(ctx, "book_seat", None) == 1 and seat % 4 == 0
        bookings = sql.Identifier(args.run_schema or args.schema, "bookings")
        try:
            with pool.connection() as conn:  # one transaction: the booking and its op id, or neither
                if conflict:
                    conn.execute("DO $$ BEGIN RAISE EXCEPTION 'provoked' USING ERRCODE = '40001'; END $$")
                if args.forget_op_ids:
                    conn.execute(sql.SQL("INSERT INTO {} (seat) VALUES (%s)").format(bookings), (seat,))
                else:
                    conn.execute(sql.SQL("INSERT INTO {} (op_id, seat) VALUES (%s, %s)").format(bookings),
                                 (op_id, seat))
        except psycopg.Error as exc:
            kind = classify(exc).value
            return failed({"kind": kind, "sqlstate": exc.sqlstate, "rolled_back": True, "refused": False,
                           "op_id": op_id, "attempts": 1, "failures": [kind]}, f"{kind}: {exc.sqlstate}")
        return succeeded({"seat": seat}, op_id)

    app = mcp.streamable_http_app(json_response=args.json, session_idle_timeout=args.session_idle_timeout)
    if args.modern_sse_after is not None:
        # How long the SDK's stateless era holds a silent reply before it commits to an event
        # stream (and its keep-alive comments): 15 s in the SDK, too long for a test.
        _streamable_http_modern._SSE_PING_INTERVAL = args.modern_sse_after
    asgi: Any = app
    if args.legacy_only:
        asgi = _legacy_only(asgi)
    if args.token:
        asgi = _bearer(asgi, args.token)
    uvicorn.run(asgi, host="127.0.0.1", port=args.port, log_level="warning", ssl_certfile=args.certfile,
                ssl_keyfile=args.keyfile, timeout_graceful_shutdown=1)


def _legacy_only(app: Any) -> Any:
    async def without_the_stateless_era(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                          if not (k == b"mcp-protocol-version" and v.startswith(b"2026"))]}
        await app(scope, receive, send)

    return without_the_stateless_era


def _bearer(app: Any, token: str) -> Any:
    expected = f"Bearer {token}".encode()

    async def authorized(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return authorized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pg-dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--json", action="store_true", help="reply with JSON, never an event stream")
    parser.add_argument("--legacy-only", action="store_true", help="a session-era server")
    parser.add_argument("--session-idle-timeout", type=float, default=None)
    parser.add_argument("--modern-sse-after", type=float, default=None)
    parser.add_argument("--run-schema", help="the toolclash run's schema, where book_seat writes its bookings")
    parser.add_argument("--forget-op-ids", action="store_true", help="book_seat stores no op id")
    parser.add_argument("--token")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
