"""The pgbench-like transfer as a toolclash tool, for bench/vs_pgbench.py: two UPDATEs moving
one credit between two random accounts of 1,000, in lock order (no deadlocks, as in the other
two clients)."""

from db.tool import tool

ACCOUNTS = 1000


def setup(conn):
    conn.execute("CREATE TABLE IF NOT EXISTS bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
    conn.execute("TRUNCATE bench_accounts")
    conn.execute("INSERT INTO bench_accounts SELECT i, 0 FROM generate_series(1, %s) i", (ACCOUNTS,))


@tool(weight=1)
def transfer(tx):
    a, b = sorted((tx.rng.randint(1, ACCOUNTS), tx.rng.randint(1, ACCOUNTS)))
    tx.execute("UPDATE bench_accounts SET balance = balance - 1 WHERE id = %s", (a,))
    tx.execute("UPDATE bench_accounts SET balance = balance + 1 WHERE id = %s", (b,))
