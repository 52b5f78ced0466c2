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
    holders = [row[0] for row in ctx.conn.execute(
        sql.SQL("SELECT booked_by FROM {} WHERE booked_by IS NOT NULL").format(seats))]
    told = ctx.acknowledged_of(["book_seat"])  # operation ids by outcome
    strangers = set(holders) - {*told.succeeded, *told.indeterminate}
    return [
        Check("one_booking_per_seat", len(set(holders)) == len(holders), len(holders), len(set(holders)),
              "no booking id holds two seats"),
        {"name": "bookings_acknowledged", "ok": not strangers, "expected": 0, "observed": len(strangers),
         "detail": "every seat is held by a booking that succeeded, or whose outcome is unknown"},
    ]
