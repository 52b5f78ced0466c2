"""What went wrong in one attempt of a tool call.

Classified from the exception's class (psycopg maps each SQLSTATE to a class), never from
its message text, which changes with the server's version and locale.
"""

from __future__ import annotations

import enum

import psycopg
import redis.exceptions
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

__all__ = ["Failure", "QueueFull", "Refused", "VersionConflict", "classify", "classify_sqlstate"]


class VersionConflict(Exception):
    """Raised by a tool whose optimistic check found that someone else changed the row first."""


class Refused(Exception):
    """Raised by a tool that says a business "no" (the account cannot pay): the platform worked
    and answered, so the call is counted as refused, never retried, and is no failure of the
    platform. Anything a tool raises that is neither this nor a known conflict is an error: a
    bug, which keeps the run from being evidence."""


class QueueFull(Refused):
    """Raised by a tool whose bounded queue refused a job: overflow, not retried (the agent is
    told at once, as a producer would be)."""


class Failure(enum.Enum):
    """Why one attempt failed. The value is the report's counter name."""

    DEADLOCK = "deadlocks"  # 40P01
    SERIALIZATION_FAILURE = "serialization_failures"  # 40001
    VERSION_CONFLICT = "version_conflicts"  # the tool's own optimistic check
    LOCK_TIMEOUT = "lock_timeouts"  # 55P03, lock_timeout or NOWAIT
    POOL_TIMEOUT = "pool_timeouts"  # no connection within --pool-timeout
    QUEUE_REJECTED = "queue_rejections"  # a bounded queue was full
    # redis-py's WatchError: a WATCHed key changed before EXEC (nothing applied), or the
    # connection dropped while watching (possibly after the server ran EXEC). See _BY_CLASS.
    REDIS_WATCH_CONFLICT = "redis_watch_conflicts"
    CONNECTION_LOST = "connection_errors"
    REFUSED = "refusals"  # the tool's own business "no" (Refused), other than a full queue
    ERROR = "errors"  # anything else: a bug or a constraint, never retried

    @property
    def retryable(self) -> bool:
        # A pool timeout has already waited --pool-timeout; retrying would only multiply the
        # wait the user asked to bound.
        return self in _RETRYABLE

    @property
    def counted_as_conflict(self) -> bool:
        """Counted in the report's conflicts (a full queue too: contention for its room); a
        refusal and an error are counted apart."""
        return self not in (Failure.ERROR, Failure.REFUSED)

    @property
    def refusal(self) -> bool:
        """The tool answered "no" (Refused): the call is over, and the platform did its job."""
        return self in (Failure.QUEUE_REJECTED, Failure.REFUSED)


_RETRYABLE = frozenset(
    {
        Failure.DEADLOCK,
        Failure.SERIALIZATION_FAILURE,
        Failure.VERSION_CONFLICT,
        Failure.LOCK_TIMEOUT,
        Failure.REDIS_WATCH_CONFLICT,
        Failure.CONNECTION_LOST,
    }
)

# Most specific first: LockNotAvailable is an OperationalError too.
_BY_CLASS: tuple[tuple[type[BaseException], Failure], ...] = (
    (pg_errors.DeadlockDetected, Failure.DEADLOCK),
    (pg_errors.SerializationFailure, Failure.SERIALIZATION_FAILURE),
    (VersionConflict, Failure.VERSION_CONFLICT),
    (pg_errors.LockNotAvailable, Failure.LOCK_TIMEOUT),
    (PoolTimeout, Failure.POOL_TIMEOUT),
    (QueueFull, Failure.QUEUE_REJECTED),
    (Refused, Failure.REFUSED),
    # WatchError has two meanings, told apart by no class: a WATCHed key changed before EXEC
    # (EXEC aborted, nothing applied), or the connection dropped while watching, which redis-py
    # reports as WatchError too (Pipeline._disconnect_raise_on_watching), even when EXEC had
    # reached the server and was applied. Both are retried as a conflict, so a Redis tool that
    # uses WATCH must be idempotent under its op_id (tasks/agent_state.py: update_plan).
    (redis.exceptions.WatchError, Failure.REDIS_WATCH_CONFLICT),
    (redis.exceptions.ConnectionError, Failure.CONNECTION_LOST),
    (redis.exceptions.TimeoutError, Failure.CONNECTION_LOST),
)


def classify(exc: BaseException, connection: psycopg.Connection | None = None) -> Failure:
    """The kind of failure `exc` is; `connection` is the one the attempt ran on, if any.

    An OperationalError counts as a lost connection only when psycopg marked the connection
    broken: a query cancelled by statement_timeout is an OperationalError on a healthy one.
    """
    for cls, failure in _BY_CLASS:
        if isinstance(exc, cls):
            return failure
    if isinstance(exc, psycopg.OperationalError) and (connection is None or connection.broken):
        return Failure.CONNECTION_LOST
    return Failure.ERROR


# A connection exception (class 08) or the server shutting the session down (57P01 admin_shutdown,
# 57P02 crash_shutdown, 57P03 cannot_connect_now): the session was lost, whatever it was doing.
_CONNECTION_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def classify_sqlstate(sqlstate: str) -> Failure:
    """The kind of failure a SQLSTATE names when someone else met it and reports only its code (a
    tool server's reply): the same table as `classify`, through the class psycopg maps that code
    to. An unknown code is an error."""
    try:
        cls = pg_errors.lookup(sqlstate)
    except KeyError:
        return Failure.ERROR
    for known, failure in _BY_CLASS:
        if issubclass(cls, known):
            return failure
    return Failure.CONNECTION_LOST if sqlstate.startswith(_CONNECTION_LOST_SQLSTATES) else Failure.ERROR
