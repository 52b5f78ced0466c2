"""A tool as the adapter sees it, and the transaction it is handed."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import gevent
import psycopg
import redis

__all__ = ["Tool", "Transaction"]


class Transaction:
    """What a tool function gets: one attempt's open transaction, plus who is calling.

    `rng` is seeded the same on every attempt of one call, so a retried call repeats the same
    operation (same accounts, same amounts) rather than drawing a new one.
    """

    __slots__ = ("op_id", "agent_id", "rng", "conn", "redis", "statement_started", "_work_s")

    def __init__(
        self,
        op_id: uuid.UUID,
        agent_id: str,
        seed: int,
        conn: psycopg.Connection,
        redis_client: redis.Redis | None,
        work_s: float = 0.0,
    ) -> None:
        self.op_id = op_id
        self.agent_id = agent_id
        self.rng = random.Random(seed)
        self.conn = conn
        self.redis = redis_client
        self.statement_started = 0.0
        self._work_s = work_s

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor:
        """Run one statement, remembering when it started (a deadlock's detection time is
        measured from the start of the statement the server chose as victim)."""
        self.statement_started = perf_counter()
        return self.conn.execute(query, params)

    def work(self) -> None:
        """The tool's own work between two statements (an API or model call, a computation),
        during which its transaction holds what it has locked so far (--tool-work)."""
        if self._work_s:
            gevent.sleep(self._work_s)


@dataclass(frozen=True)
class Tool:
    """A named plain function run as one transaction; `backend` is Locust's request_type."""

    name: str
    run: Callable[[Transaction], None]
    backend: str = "pg"
