"""What keeping every call's operation id and value costs in memory, and what copying them into
PostgreSQL for the identity audits takes.

    .venv/bin/python bench/op_ids_memory.py [--calls 1000000] [--pg-dsn postgresql://...]

Records `--calls` calls (90 % succeeded, 9 % failed, 1 % indeterminate) into one process's
Metrics, as the adapter's hook does, each with the value a deduction returns (with --no-values,
none), and prints the memory it took per call (tracemalloc) and the size of the shipment a
worker sends. With --pg-dsn, also times one ledger-sized identity check
(`identities_in_table`) against an empty temporary table.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.audits import identities_in_table  # noqa: E402
from db.errors import Failure  # noqa: E402
from harness.watch.metrics import Metrics  # noqa: E402
from transport.call_record import CallRecord, Outcome  # noqa: E402


def _records(calls: int, values: bool):
    rng = random.Random(1)
    for n in range(calls):
        value = ({"debit": rng.randint(1, 200), "amount": rng.randint(1, 10), "version": rng.randint(0, 2000)}
                 if values else None)
        if n % 100 == 0:
            yield CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.INDETERMINATE, 1,
                             [Failure.CONNECTION_LOST], value=value)
        elif n % 100 < 10:
            yield CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.FAILED, 1, [Failure.DEADLOCK],
                             value=value)
        else:
            yield CallRecord("deduct_credits", "pg", uuid.uuid4(), Outcome.SUCCEEDED, 1, value=value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--pg-dsn")
    parser.add_argument("--no-values", action="store_true", help="calls whose tool returns nothing")
    args = parser.parse_args()

    metrics = Metrics()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for record in _records(args.calls, not args.no_values):  # each record and value freed once kept
        metrics.record(record)
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    shipped = sum(len(raw) + len(lines) for by_outcome in metrics.to_dict()["op_ids"].values()
                  for raw, lines, _shapes in by_outcome.values())
    print(f"{args.calls} calls: {kept / args.calls:.1f} bytes a call kept in memory,"
          f" {shipped / args.calls:.1f} bytes a call shipped")

    if args.pg_dsn:
        import psycopg

        acknowledged = metrics.acknowledged({"deduct_credits"})
        with psycopg.connect(args.pg_dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("CREATE TEMP TABLE bench_ledger (op_id uuid PRIMARY KEY) ON COMMIT DROP")
            started = time.perf_counter()
            checks = identities_in_table(conn, "bench_ledger", acknowledged, present="present",
                                         within="within", failed="failed")
            took = time.perf_counter() - started
        print(f"identity check of {args.calls} ids: {took:.2f} s"
              f" (present observed {checks[0].observed} of {checks[0].expected}: the table is empty on purpose)")


if __name__ == "__main__":
    main()
