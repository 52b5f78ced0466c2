"""An example of user-written tools: agents booking seats for their users.

Run it:  make run ARGS="--tools-module examples/seat_tools.py"

Each booking writes a row with its call's operation id (`tx.op_id`) in the call's own
transaction, and returns what it wrote: so `ctx.check_writes` can compare the bookings the
servers hold with the calls the harness made, one by one. `count_free_seats` only reads, and
no check compares its reads: the report lists it as "not audited by identity".
"""

from psycopg import sql

from db.audits import Check
from db.tool import tool

SEATS = 40


def setup(conn):
    """Run at the start of each run, on the harness's schema."""
    conn.execute("CREATE TABLE IF NOT EXISTS seats (id int PRIMARY KEY, booked_by uuid)")
    conn.execute("CREATE TABLE IF NOT EXISTS bookings (op_id uuid PRIMARY KEY, seat int NOT NULL)")
    conn.execute("TRUNCATE seats, bookings")
    conn.execute("INSERT INTO seats (id) SELECT generate_series(1, %s)", (SEATS,))


@tool(weight=3)
def book_seat(tx):
    """Take a free seat; when all are taken, free a random one first (the booking expires)."""
    row = tx.execute(
        "SELECT id FROM seats WHERE booked_by IS NULL ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
    if row is None:
        row = tx.execute("SELECT id FROM seats WHERE id = %s FOR UPDATE", (tx.rng.randint(1, SEATS),)).fetchone()
    tx.work()
    tx.execute("UPDATE seats SET booked_by = %s WHERE id = %s", (tx.op_id, row[0]))
    tx.execute("INSERT INTO bookings (op_id, seat) VALUES (%s, %s)", (tx.op_id, row[0]))
    return {"seat": row[0]}


def count_free_seats(tx):
    return {"free": tx.execute("SELECT count(*) FROM seats WHERE booked_by IS NULL").fetchone()[0]}


def audit(ctx):
    unheld = ctx.conn.execute(sql.SQL(
        "SELECT count(*) FROM {} s LEFT JOIN {} b ON b.op_id = s.booked_by AND b.seat = s.id"
        " WHERE s.booked_by IS NOT NULL AND b.op_id IS NULL").format(
            sql.Identifier(ctx.schema, "seats"), sql.Identifier(ctx.schema, "bookings"))).fetchone()[0]
    return [
        *ctx.check_writes("bookings", ["book_seat"], columns={"seat": "seat"}),
        Check("seats_held_by_their_bookings", not unheld, 0, unheld,
              "every booked seat is held by a booking of that seat"),
    ]
