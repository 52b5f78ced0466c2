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

__all__ = ["Tool", "Transaction", "tool"]


class Transaction:
    """What a tool function gets: one attempt's open transaction (`conn`, None for a Redis-only
    tool), the Redis client, and who is calling.

    `rng` is seeded the same on every attempt of one call, so a retried call repeats the same
    operation (same accounts, same amounts) rather than drawing a new one.
    """

    __slots__ = ("op_id", "agent_id", "rng", "conn", "redis", "statement_started", "committed_at", "after_commit",
                 "observations", "_work_s")

    def __init__(
        self,
        op_id: uuid.UUID,
        agent_id: str,
        seed: int,
        conn: psycopg.Connection | None,
        redis_client: redis.Redis | None,
        work_s: float = 0.0,
    ) -> None:
        self.op_id = op_id
        self.agent_id = agent_id
        self.rng = random.Random(seed)
        self.conn = conn
        self.redis = redis_client
        # Set again by execute(); a tool that runs statements on `conn` directly gets deadlock
        # detection times measured from the start of its transaction (an upper bound).
        self.statement_started = perf_counter()
        self.committed_at: float | None = None  # perf_counter() when COMMIT returned
        # Run once the transaction has committed (e.g. the Redis half of a cross-service
        # operation). The call is recorded as succeeded before they run, and stays so if the
        # agent is stopped during one; they must not raise (that would be a harness bug).
        self.after_commit: list[Callable[[], None]] = []
        self.observations: list[tuple[str, float]] = []
        self._work_s = work_s

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor:
        """Run one statement, remembering when it started (a deadlock's detection time is
        measured from the start of the statement the server chose as victim)."""
        if self.conn is None:
            raise RuntimeError("execute() of a Redis-only tool (backend 'redis'): it has no PostgreSQL transaction")
        self.statement_started = perf_counter()
        return self.conn.execute(query, params)

    def observe(self, name: str, seconds: float) -> None:
        """A timing of the tool's own (e.g. how long a job waited in its queue); reported as
        latency_ms.<name> when the call succeeds."""
        self.observations.append((name, seconds))

    def work(self) -> None:
        """The tool's own work between two statements (an API or model call, a computation),
        during which its transaction holds what it has locked so far (--tool-work)."""
        if self._work_s:
            gevent.sleep(self._work_s)


@dataclass(frozen=True)
class Tool:
    """A named plain function run as one transaction; `backend` is Locust's request_type:
    "pg" (the adapter opens a PostgreSQL transaction) or "redis" (Redis only, no connection
    borrowed from the pool).

    What the function returns is the call's value: what the agent is handed (a balance read, the
    job taken, what was written), JSON-able. It is kept with the call's outcome, written to
    `--history` and given to the audits, which compare it with what the servers hold."""

    name: str
    run: Callable[[Transaction], Any]
    backend: str = "pg"

    @property
    def uses_postgres(self) -> bool:
        return self.backend != "redis"


def tool(*, weight: int = 1,
         backend: str = "pg") -> Callable[[Callable[[Transaction], Any]], Callable[[Transaction], Any]]:
    """Optional marks on a user-written tool function: how often agents pick it, and whether it
    needs a PostgreSQL transaction ("pg") or only Redis ("redis")."""
    if weight < 0 or backend not in ("pg", "redis"):
        raise ValueError(f"tool(weight={weight!r}, backend={backend!r}): weight >= 0, backend 'pg' or 'redis'")

    def mark(function: Callable[[Transaction], Any]) -> Callable[[Transaction], Any]:
        # Read back with getattr (tasks.user_tools); a function's attributes are not in its type.
        setattr(function, "toolclash_weight", weight)
        setattr(function, "toolclash_backend", backend)
        return function

    return mark
