"""A coordinator's piece of background work (the server sampler, the drain of Redis, the fault
injector): one greenlet that works until asked to stop, and is given time to finish what it has
under way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

__all__ = ["Background"]

# A piece of such work takes milliseconds; still going after this long, it is waiting for a lost
# server, which whatever comes next (the audit) will meet anyway.
_FINISH_WAIT_S = 5.0


class Background:
    def __init__(self) -> None:
        # Set when asked to stop: the work waits on it between two pieces, so it wakes at once.
        self.stopping = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None

    def start(self, run: Callable[..., Any], *args: Any) -> None:
        self.stopping.clear()
        self._greenlet = gevent.spawn(run, *args)

    def stop(self) -> None:
        """Let the piece of work under way finish (for a few seconds at most), then end it."""
        if self._greenlet is not None:
            self.stopping.set()
            self._greenlet.join(timeout=_FINISH_WAIT_S)
            self._greenlet.kill()
            self._greenlet = None
