"""The servers' sections: what they are, what they counted, the load's pool, the time series."""

from typing_extensions import NotRequired, TypedDict

__all__ = [
    "DeadlockTimeout", "Pool", "PoolAtRest", "PoolSample", "ServerCounters", "ServerDescription", "TimeseriesRow",
]


class ServerDescription(TypedDict):
    kind: str  # PostgreSQL, Redis
    version: str
    where: str
    origin: str  # the option that named it, or embedded
    description: str  # the line the summary prints


class DeadlockTimeout(TypedDict):
    requested_ms: int | None
    applied: bool
    effective: str  # as PostgreSQL shows it, e.g. "1s"
    note: str


class ServerCounters(TypedDict):
    """What the servers counted over the run: pg_stat_database's deltas, and the samples' peaks."""

    deadlocks: int
    xact_commit: int
    xact_rollback: int
    conflicts: int
    deadlock_timeout: DeadlockTimeout
    load_sessions_left: int | None  # None: not the harness's to see (a user's MCP server's sessions)
    peak_lock_waiters: int
    longest_lock_wait_ms: float
    longest_blocking_chain: int
    peak_redis_clients: int
    peak_redis_ops_per_sec: int
    redis_rejected_connections: int
    samples: int


class PoolSample(TypedDict):
    t: float
    process: int
    size: int
    available: int
    waiting: int


class PoolAtRest(TypedDict):
    """One load process's pool when its load stopped."""

    process: int
    size: int
    connections: int
    available: int
    idle_in_transaction: int | None  # None: no connection could ask
    calls_in_flight: int


class Pool(TypedDict):
    peak_waiting: int | None  # None: no pool sample (over MCP the pool is the tool server's)
    min_available: int | None
    at_rest: list[PoolAtRest]
    samples: list[PoolSample]


class TimeseriesRow(TypedDict):
    """One sample of the servers (harness.watch.sampler), counters since the run's start."""

    t_s: float
    agents: int
    pg_deadlocks: int
    pg_xact_commit: int
    pg_xact_rollback: int
    pg_conflicts: int
    pg_lock_waiters: int
    pg_longest_lock_wait_ms: float
    pg_longest_blocking_chain: int
    redis_connected_clients: int
    redis_ops_per_sec: int
    redis_rejected_connections: int
    sampler_late_s: float
    queue_depth: NotRequired[int]  # the queue scenario's
    outbox_relayed: NotRequired[int]  # the cross_service scenario's
