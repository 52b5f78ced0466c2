"""The load's PostgreSQL connections, waiting for the server on gevent's hub directly.

psycopg runs each statement as a generator that says which way its socket must be ready next
(`Connection.wait` consumes it). Under gevent's monkey-patching psycopg cannot use its C wait
(it would block the hub), so it takes `wait_poll`: for every wait a gevent `select.poll`
emulation, its result objects, and a `Timeout` for the 0.1 s interval that only lets Ctrl-C
through a blocking C wait. That came to about 40 µs of CPU per transfer transaction of four
round trips here (16 greenlets of plain psycopg: 180-205 µs with wait_poll, 145-165 on the hub). gevent's own
`wait_read`/`wait_write` park the greenlet on one io watcher of the hub instead: the same
cooperation (other greenlets run while this one waits; a killed agent gets its GreenletExit
there, as in any gevent wait), for less work.
"""

from __future__ import annotations

from typing import TypeVar

import psycopg
from gevent.socket import wait_read, wait_readwrite, wait_write
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

__all__ = ["HubWaitConnection", "wait_on_hub"]

RV = TypeVar("RV")

# psycopg's own polling interval, passed on to its wait when a deadline is asked for.
_PSYCOPG_INTERVAL_S = 0.1

_WAIT_FOR = {Wait.R: wait_read, Wait.W: wait_write, Wait.RW: wait_readwrite}
# gevent does not say which of the two directions woke a read-or-write wait: both are reported,
# which is harmless, since libpq's reads and flushes of a non-blocking socket return at once when
# there is nothing to do.
_READY_AFTER = {Wait.R: Ready.R, Wait.W: Ready.W, Wait.RW: Ready.RW}


def wait_on_hub(gen: PQGen[RV], fileno: int) -> RV:
    """Run psycopg's generator `gen` on socket `fileno` to its end, this greenlet waiting on
    the hub whenever the socket is not ready."""
    try:
        waiting_for = next(gen)
        while True:
            _WAIT_FOR[waiting_for](fileno)
            waiting_for = gen.send(_READY_AFTER[waiting_for])
    except StopIteration as done:
        result: RV = done.value  # what psycopg's generator returns: PQGen[RV]
        return result


class HubWaitConnection(psycopg.Connection):
    """A psycopg connection whose waits without a deadline (every statement, COMMIT and
    ROLLBACK) are `wait_on_hub`. The rare waits with one (psycopg's `notifies()`, its cancel
    after an interrupt) stay psycopg's own, which raises its own timeout error.

    psycopg's own wait also cancels the running statement when a KeyboardInterrupt lands in it;
    here none does (under gevent, Ctrl-C reaches Locust's main greenlet, never an agent's), and
    an agent stopped in a wait gets GreenletExit, after which the adapter cancels the statement
    itself (transport/in_process.py `_cancel_running_statement`)."""

    def wait(self, gen: PQGen[RV], interval: float = _PSYCOPG_INTERVAL_S, timeout: float | None = None) -> RV:
        if timeout is not None:
            return super().wait(gen, interval, timeout)
        return wait_on_hub(gen, self.pgconn.socket)
