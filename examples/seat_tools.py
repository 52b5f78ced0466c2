"""An example of user-written tools: agents booking seats for their users.

Run it:  make run ARGS="--tools-module examples/seat_tools.py"
"""

from psycopg import sql

from db.audits import Check
from db.tool import tool

SEATS = 40


def setup(conn):
    """Run at the start of each run, on the harness's schema."""
    conn.execute("CREATE TABLE IF NOT EXISTS seats (id int PRIMARY KEY, booked_by uuid)")
    conn.execute("TRUNCATE seats")
    conn.execute("INSERT INTO seats (id) SELECT generate_series(1, %s)", (SEATS,))


@tool(weight=3)
def book_seat(tx):
    """Take a free seat; when all are taken, free a random one first (the booking expires)."""
    row = tx.execute("SELECT id FROM seats WHERE booked_by IS NULL ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
    if row is None:
        row = tx.execute("SELECT id FROM seats WHERE id = %s FOR UPDATE", (tx.rng.randint(1, SEATS),)).fetchone()
    tx.work()
    tx.execute("UPDATE seats SET booked_by = %s WHERE id = %s", (tx.op_id, row[0]))


def count_free_seats(tx):
    tx.execute("SELECT count(*) FROM seats WHERE booked_by IS NULL")


def audit(ctx):
    seats = sql.Identifier(ctx.schema, "seats")
    booked = ctx.conn.execute(sql.SQL("SELECT count(DISTINCT booked_by), count(booked_by) FROM {}").format(seats)).fetchone()
    return [
        Check("one_booking_per_seat", booked[0] == booked[1], booked[1], booked[0],
              "no booking id holds two seats"),
        {"name": "bookings_acknowledged", "ok": booked[1] <= len(ctx.acknowledged_of(["book_seat"]).succeeded),
         "expected": "<= acknowledged bookings", "observed": booked[1], "detail": "every seat's booking was acknowledged"},
    ]
