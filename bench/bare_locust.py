"""The same transfer from a bare Locust user with psycopg 3: the baseline toolclash's own cost
is measured against (bench/vs_pgbench.py). The database (holding bench_accounts) from BENCH_PG_DSN."""

import os
import random
import time

import psycopg
from locust import User, constant, task

ACCOUNTS = 1000


class Transfer(User):
    wait_time = constant(0)

    def on_start(self):
        self.conn = psycopg.connect(os.environ["BENCH_PG_DSN"])

    @task
    def transfer(self):
        a, b = sorted((random.randint(1, ACCOUNTS), random.randint(1, ACCOUNTS)))
        started = time.perf_counter()
        with self.conn.transaction():
            self.conn.execute("UPDATE bench_accounts SET balance = balance - 1 WHERE id = %s", (a,))
            self.conn.execute("UPDATE bench_accounts SET balance = balance + 1 WHERE id = %s", (b,))
        self.environment.events.request.fire(request_type="pg", name="transfer",
                                             response_time=(time.perf_counter() - started) * 1000,
                                             response_length=0, exception=None, context={})
