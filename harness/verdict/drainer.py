"""The drain of what the scenarios' tools keep appending to in Redis (a queue's log, the plans'
log, the set of applied charges), into the run's schema, every --sample-interval: Redis's
footprint then depends on the rate of calls, not on the length of the run.

It runs on the local runner or the master only (workers never drain), on one PostgreSQL session
of its own: a drain cut short by a lost connection is run again whole on a new one, which every
drain allows (see db/redis_drain.py). The audits drain to the end themselves before they read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from db.audits import AuditContext
from db.session import RedisLost, Session, SessionLost
from harness.watch.background import Background

__all__ = ["Drainer"]

log = logging.getLogger(__name__)

Drain = Callable[[AuditContext], int]


class Drainer:
    def __init__(
        self,
        pg_dsn: str,
        interval_s: float,
        context: Callable[[psycopg.Connection], AuditContext],
        drains: list[Drain],
        application_name: str,
    ) -> None:
        self._pg_dsn = pg_dsn
        self._interval_s = interval_s
        self._context = context
        self._drains = drains
        self._application_name = application_name
        self._background = Background()

    def start(self) -> None:
        """Drain every interval until stopped; nothing at all when no scenario has a drain."""
        if self._drains:
            self._background.start(self._run)

    def stop(self) -> None:
        """Finish the drain being made, then stop."""
        self._background.stop()

    def _run(self) -> None:
        session = Session(self._pg_dsn, self._application_name)
        try:
            while not self._background.stopping.wait(self._interval_s):
                for drain in self._drains:
                    session.run(lambda conn, drain=drain: drain(self._context(conn)))
        except (SessionLost, RedisLost) as exc:
            # Redis grows again until the audits, which drain to the end and meet the same server.
            log.warning("toolclash: the drain of Redis stops: %s", exc)
        finally:
            session.close()
