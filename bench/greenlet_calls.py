"""The CPU a call costs this process (gevent-patched) when greenlets call at once: the benches
that measure one path's own cost, without Locust's loop or the other processes of a run."""

from __future__ import annotations

import resource
from collections.abc import Callable

import gevent

__all__ = ["cpu_per_call", "cpu_s"]


def cpu_s() -> float:
    """The CPU seconds (user + system) this process has spent so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_per_call(call: Callable[[int], object], agents: int, seconds: float) -> tuple[float, float]:
    """(CPU µs a call, calls/s) of `agents` greenlets calling `call(index)` for `seconds`, after
    half a second for every one to start and its connections to warm."""
    calls = 0
    stopping = False

    def agent(index: int) -> None:
        nonlocal calls
        while not stopping:
            call(index)
            calls += 1
            gevent.sleep(0)  # Locust's wait between tasks (constant(0)) yields as well

    greenlets = [gevent.spawn(agent, index) for index in range(agents)]
    gevent.sleep(0.5)
    cpu_before, calls_before = cpu_s(), calls
    gevent.sleep(seconds)
    cpu_after, calls_after = cpu_s(), calls
    stopping = True
    gevent.joinall(greenlets, raise_error=True)
    return (cpu_after - cpu_before) / (calls_after - calls_before) * 1e6, (calls_after - calls_before) / seconds
