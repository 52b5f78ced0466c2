"""An example of tools that call your own MCP server: agents booking seats through its `book_seat`.

Run it against your server, which writes to the same PostgreSQL:
    make run ARGS="--tools-module examples/mcp_seat_tools.py --mcp-url http://127.0.0.1:8000/mcp"

Each call of `book_seat` here is one `tools/call` of the server's tool `book_seat`, carrying the
call's op id (in `_meta["io.toolclash/op_id"]` and the `Idempotency-Key` header). The server writes
the booking and that op id in one transaction, in `bookings.op_id`: so `ctx.check_writes` compares
the bookings with the calls, one by one. A server that stores no op id there is not audited by
identity, and the report says so (docs/mcp.md, your own server).
"""

from db.tool import tool

SEATS = 40


def setup(conn):
    """Run at the start of each run, on the harness's schema, where your server writes."""
    conn.execute("CREATE TABLE IF NOT EXISTS bookings (op_id uuid UNIQUE, seat int NOT NULL)")
    conn.execute("TRUNCATE bookings")


@tool(backend="mcp", arguments=lambda rng: {"seat": rng.randint(1, SEATS)})
def book_seat(tx, *, seat):
    # A result with isError raises, the failure of the kind it names: a conflict the server rolled
    # back is retried (the same op id), a refusal is one.
    return tx.mcp.call("book_seat", {"seat": seat}).value


def audit(ctx):
    return ctx.check_writes("bookings", ["book_seat"], columns={"seat": "seat"})
