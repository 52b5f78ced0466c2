"""toolclash's locustfile, unchanged, with each load process's calls counted for a bench that
measures over a window (toolclash_processes.Toolclash with `calls_dir`): one more listener of
Locust's `request` event, which toolclash fires once a call, adds one to a count, and a greenlet
writes the count to a file of the directory $TOOLCLASH_BENCH_CALLS_DIR every 0.1 s
(toolclash_processes.count_calls_into). Its cost (an increment a call, ten lines a second) is
not a hundredth of a call's.
"""

import os
import sys
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import MasterRunner

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from locustfile import Agent  # noqa: E402
from toolclash_processes import CALLS_DIR_VARIABLE, count_calls_into  # noqa: E402

__all__ = ["Agent"]

_calls = 0


@events.request.add_listener
def _count(**_: Any) -> None:
    global _calls
    _calls += 1


@events.init.add_listener
def _write_counts(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):  # a worker, or the local runner: it runs agents
        count_calls_into(Path(os.environ[CALLS_DIR_VARIABLE]) / f"{os.getpid()}.txt", lambda: _calls)
