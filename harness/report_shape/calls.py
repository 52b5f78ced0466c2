"""What the agents' calls recorded: each tool's figures, failed attempts by cause, latency
distributions."""

from typing import Literal

from typing_extensions import TypedDict

__all__ = ["ConflictCounter", "Conflicts", "Distribution", "ToolFigures"]


class ToolFigures(TypedDict):
    calls: int
    succeeded: int
    failed: int
    refused: int
    indeterminate: int  # the platform left the outcome unknown: a connection or a reply lost
    cut_off: int  # the run's own stop left it unknown: in no success rate
    interrupted: int
    attempts: int
    retries: int
    failures: dict[str, int]  # failed attempts by kind (db.errors.Failure's values)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # Over MCP, the tool server's own attempts and failed attempts by kind, as its replies said;
    # None when the calls ran in process.
    server_attempts: int | None
    server_failures: dict[str, int] | None


# Conflicts' keys, for code that picks one by name (harness.watch.metrics.CONFLICT_COUNTERS).
ConflictCounter = Literal[
    "deadlocks", "serialization_failures", "version_conflicts", "lock_timeouts", "pool_timeouts", "queue_rejections",
    "redis_watch_conflicts", "connection_errors", "indeterminate",
]


class Conflicts(TypedDict):
    """Failed attempts by cause; `indeterminate` counts calls."""

    deadlocks: int
    serialization_failures: int
    version_conflicts: int
    lock_timeouts: int
    pool_timeouts: int
    queue_rejections: int
    redis_watch_conflicts: int
    connection_errors: int
    indeterminate: int


class Distribution(TypedDict):
    """One of `latency_ms`, in milliseconds; None when nothing was recorded."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    count: int
