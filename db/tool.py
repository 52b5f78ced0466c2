"""A tool as the adapter sees it, and the transaction it is handed.

A tool is two steps. Its `arguments` function draws the call's arguments (JSON-able: they can
travel as an MCP `tools/call`'s) from the call's seeded random source, once per call; its `run`
function executes them, `run(tx, **arguments)`, in each attempt, using nothing random but what
it was given. So the same seed gives the same calls whichever side executes them: the adapter in
the load's process, or a tool server that receives the arguments and has no seed. A tool without
an `arguments` function (a user's plain `f(tx)`) draws what it needs from `tx.rng` itself, and
only the load's process, which holds the seed, can execute it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

import gevent
import psycopg
import redis

from db.durations import NO_TIME, Duration

__all__ = ["BACKENDS", "Arguments", "DrawArguments", "McpCaller", "Tool", "Transaction", "no_arguments", "tool"]

# A call's arguments: JSON-able values by name, given to the tool's run function as keywords.
Arguments = dict[str, Any]
DrawArguments = Callable[[random.Random], Arguments]

# Where a tool's call runs: a PostgreSQL transaction (and Redis), Redis alone, or the run's MCP
# server, which the tool calls itself (`tx.mcp`). Locust's request_type of the call.
BACKENDS = ("pg", "redis", "mcp")


class McpCaller(Protocol):
    """`tx.mcp` of a tool of backend "mcp" (transport.mcp.tool_calls.McpCalls): one `tools/call`
    of the run's MCP server's tool `name`, carrying the call's op id; its result."""

    def call(self, name: str, arguments: Mapping[str, Any] | None = None, *, check: bool = True) -> Any: ...


# What the tools' work is drawn from: no seed, for no call's identity (its tool, its arguments)
# depends on how long it works.
_WORK_TIMES = random.Random()


def no_arguments(rng: random.Random) -> Arguments:
    """The arguments step of a tool that takes none: it executes from the servers' data alone."""
    return {}


class Transaction:
    """What a tool function gets: one attempt's open transaction (`conn`, None for a tool of
    backend "redis" or "mcp"), the Redis client, the MCP server's tools (`mcp`, backend "mcp"
    only), and who is calling.

    `rng` is for a tool without an arguments step: seeded the same on every attempt of one call,
    so a retried call repeats the same operation (same accounts, same amounts) rather than
    drawing a new one. A tool that declares its arguments executes from them alone, and is given
    no seed (`seed` None): its `rng` raises, for whoever executes it may hold no seed.

    `attempted`: what this attempt sets out to do (JSON-able), which a tool may set before it
    runs its statements, so that an attempt that never returns still says what it tried: when the
    tool raises instead, the adapter keeps it as the call's value (transport.call_record). None:
    the tool does not say.
    """

    __slots__ = ("op_id", "agent_id", "lane", "conn", "redis", "statement_started", "committed_at", "after_commit",
                 "observations", "attempted", "_seed", "_rng", "_work", "_sleep", "_mcp")

    def __init__(
        self,
        op_id: uuid.UUID,
        agent_id: str,
        seed: int | None,
        conn: psycopg.Connection | None,
        redis_client: redis.Redis | None,
        work: Duration = NO_TIME,
        sleep: Callable[[float], None] = gevent.sleep,
        mcp: McpCaller | None = None,
        lane: str | None = None,
    ) -> None:
        self.op_id = op_id
        self.agent_id = agent_id
        # Whose calls follow one another: the agent's, or with turns one slot of its turns (a
        # turn's calls run at once). A tool that guards a resent call by who sent it (the caller's
        # last step applied) keys the guard by the lane: two calls at once of one agent would
        # overwrite each other's.
        self.lane = agent_id if lane is None else lane
        self._seed = seed
        self._rng: random.Random | None = None  # made when first asked for: most tools never do
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
        self.attempted: Any = None
        self._work = work
        self._sleep = sleep  # the hub's for the load's greenlets, time.sleep in a tool server's threads
        self._mcp = mcp

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            if self._seed is None:
                raise RuntimeError("tx.rng in a tool that declares its arguments: it executes from them alone"
                                   " (draw what is random in its arguments function)")
            self._rng = random.Random(self._seed)
        return self._rng

    @property
    def mcp(self) -> McpCaller:
        """The run's MCP server's tools, for a tool of backend "mcp": `tx.mcp.call(name, arguments)`."""
        if self._mcp is None:
            raise RuntimeError("tx.mcp in a tool that is not of backend 'mcp': mark it @tool(backend='mcp') to call"
                               " the MCP server of --mcp-url")
        return self._mcp

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor:
        """Run one statement, remembering when it started (a deadlock's detection time is
        measured from the start of the statement the server chose as victim)."""
        if self.conn is None:
            raise RuntimeError("execute() in a tool of backend 'redis' or 'mcp': it has no PostgreSQL transaction")
        self.statement_started = perf_counter()
        return self.conn.execute(query, params)

    def observe(self, name: str, seconds: float) -> None:
        """A timing of the tool's own (e.g. how long a job waited in its queue); reported as
        latency_ms.<name> when the call succeeds."""
        self.observations.append((name, seconds))

    def work(self) -> None:
        """The tool's own work between two statements (an API or model call, a computation),
        during which its transaction holds what it has locked so far (--tool-work): a duration
        drawn anew each time when it is a distribution."""
        seconds = self._work.sample(_WORK_TIMES)
        if seconds:
            self._sleep(seconds)


@dataclass(frozen=True)
class Tool:
    """A named plain function run as one transaction, `run(tx, **arguments)`; `backend` is
    Locust's request_type: "pg" (the adapter opens a PostgreSQL transaction), "redis" (Redis
    only, no connection borrowed from the pool) or "mcp" (no connection: the function calls the
    run's MCP server's tools, `tx.mcp`). `arguments` draws a call's arguments from its
    seeded random source (see the module's docstring); None for a tool that takes none and may
    draw from `tx.rng` instead.

    What the function returns is the call's value: what the agent is handed (a balance read, the
    job taken, what was written), JSON-able. It is kept with the call's outcome, written to
    `--history` and given to the audits, which compare it with what the servers hold."""

    name: str
    run: Callable[..., Any]
    backend: str = "pg"
    arguments: DrawArguments | None = None
    # The arguments that name a shared thing, each with its kind, e.g. (("payer", "account"),
    # ("payee", "account")): a later call of an agent's turn may take the same thing as an earlier
    # one by copying its value (--same-key), and two calls of a turn collide on one.
    keys: tuple[tuple[str, str], ...] = ()

    @property
    def uses_postgres(self) -> bool:
        return self.backend == "pg"

    @property
    def calls_mcp(self) -> bool:
        """Its function calls the MCP server's tools itself, in the load's process (backend "mcp")."""
        return self.backend == "mcp"

    def draw_arguments(self, seed: int) -> Arguments | None:
        """The arguments of the call seeded `seed`: the same for the same seed, wherever drawn.
        None when the tool has no arguments step."""
        return None if self.arguments is None else self.arguments(random.Random(seed))


def tool(*, weight: int = 1, backend: str = "pg", arguments: DrawArguments | None = None,
         keys: Mapping[str, str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Optional marks on a user-written tool function: how often agents pick it, whether it
    needs a PostgreSQL transaction ("pg"), only Redis ("redis"), or calls the run's MCP server's
    tools itself ("mcp": `tx.mcp`, with --mcp-url), its arguments step (a function of a
    random.Random returning the arguments by name, given to the tool as keywords), and which of
    those arguments name a shared thing, by kind (`keys={"account": "account"}`: see Tool.keys)."""
    if weight < 0 or backend not in BACKENDS or not (arguments is None or callable(arguments)) or (
            keys and (arguments is None or not all(isinstance(v, str) for v in (*keys, *keys.values())))):
        raise ValueError(f"tool(weight={weight!r}, backend={backend!r}, arguments={arguments!r}, keys={keys!r}):"
                         " weight >= 0, backend 'pg', 'redis' or 'mcp', arguments a function of a random.Random,"
                         " keys names of its arguments with their kinds (with an arguments step)")

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        # Read back with getattr (tasks.user_tools); a function's attributes are not in its type.
        setattr(function, "toolclash_weight", weight)
        setattr(function, "toolclash_backend", backend)
        setattr(function, "toolclash_arguments", arguments)
        setattr(function, "toolclash_keys", tuple((keys or {}).items()))
        return function

    return mark
