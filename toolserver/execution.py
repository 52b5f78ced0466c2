"""Where the tool server's calls run: a pool of `--threads` plain threads (the process is not
monkey-patched: psycopg and redis-py block the thread that waits, and only that one), each call
through the same adapter as the load's in-process calls (transport.in_process: retries by policy,
every failure classified) on a psycopg_pool of `--pool-size` connections and one Redis client.

The tools that wait through gevent themselves (summarize_accounts' hold, dequeue_job's consumer
greenlet) run on their thread's own gevent hub, which gevent makes per thread: they block their
thread only.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import redis
from psycopg_pool import ConnectionPool, PoolTimeout

from db.connect import ServiceUnreachable, postgres_target
from db.redis_keys import RedisKeys
from db.session import SEND_ONCE
from db.tool import Arguments, Tool
from tasks.scenarios import ScenarioParams, built_in_tools
from toolserver.careless import careless_tools
from toolserver.identity import Identity
from toolserver.options import ServerOptions
from transport.call_record import CallRecord
from transport.hooks import Hook
from transport.in_process import ToolAdapter

__all__ = ["Execution", "served_tools"]

_OPEN_TIMEOUT_S = 15.0


def served_tools(options: ServerOptions) -> dict[str, Tool]:
    """Every built-in tool (its careless version with --careless), bound to what shapes its
    execution. The counts that shape only the arguments (accounts, counters, teams) are the
    agents' to draw with: the server never draws."""
    params = ScenarioParams(accounts=0, keys=RedisKeys(options.schema), queue_capacity=options.queue_capacity,
                            hold_s=options.hold_s, isolation=options.isolation)
    return careless_tools(params) if options.careless else built_in_tools(params)


class Execution:
    """The threads, the connections and the adapter of one server process."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._threads = ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="toolserver-call")
        self._pool: ConnectionPool[psycopg.Connection] = ConnectionPool(
            options.pg_dsn, min_size=options.pool_size, max_size=options.pool_size, timeout=options.pool_timeout_s,
            kwargs={"application_name": options.application_name}, configure=options.session.configure,
            open=False, name=options.application_name)
        # update_plan holds a pipeline's connection while it asks again on another one: two a thread.
        self._redis = redis.Redis.from_url(options.redis_url, max_connections=2 * options.threads, retry=SEND_ONCE,
                                           client_name=options.application_name)
        self._adapter = ToolAdapter(self._pool, self._redis, options.retry, options.tool_work, Hook(),
                                    sleep=time.sleep)

    def open(self) -> None:
        """Every connection of the pool ready before the first call; ServiceUnreachable (one
        line) when PostgreSQL would not give them all."""
        self._pool.open()
        try:
            self._pool.wait(timeout=_OPEN_TIMEOUT_S)
        except PoolTimeout:
            self.close()
            raise ServiceUnreachable(f"PostgreSQL at {postgres_target(self.options.pg_dsn)} gave the tool server fewer"
                                     f" than its {self.options.pool_size} connections (--pool-size) in"
                                     f" {_OPEN_TIMEOUT_S:g} s") from None

    async def run(self, tool: Tool, arguments: Arguments, identity: Identity) -> CallRecord:
        """The call, run to its end on one of the threads; the event loop serves other requests
        meanwhile. A request cancelled meanwhile (its client gone) leaves the call to finish."""
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._adapter.call_with, tool, identity.agent_id, arguments, identity.op_id, identity.lane)

    def close(self) -> None:
        """After the calls under way have ended."""
        self._threads.shutdown(wait=True)
        self._pool.close()
        self._redis.close()
