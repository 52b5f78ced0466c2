"""The options a worker must share with its master, checked at each test start before any load.

Locust copies the master's options into every worker with each spawn message, and the per-run
ones are read from there (harness.config.run_settings). A few cannot simply be copied: a worker connects
to the servers itself, finds the schema's Redis keys by the schema's name, and reads the tools
module from a file on its own host. The master tells its workers these at each test start
(CHECK_MESSAGE, before it spawns any agent); a worker uses the master's, unless it was started
with a value of its own, which must then be the master's. Each worker answers (CHECKED_MESSAGE)
with None or one line naming the option and both values; the master starts the test only when
every worker answered None.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gevent
from locust.runners import STATE_MISSING, MasterRunner

from db.connect import redact
from harness.config.declared import DEFAULT_SCHEMA
from harness.config.settings import file_digest
from tasks.user_tools import BadToolsModule, load_tools_module

__all__ = ["CHECK_TIMEOUT_S", "Shared", "WorkerChecks", "refusal"]

# A worker answers at once; one that says nothing this long is not running toolclash's locustfile.
CHECK_TIMEOUT_S = 30.0
_POLL_S = 0.02


@dataclass(frozen=True)
class Shared:
    """What the master runs with (as sent in CHECK_MESSAGE), or what a worker was started with
    (None: not given, the master's is taken)."""

    pg_dsn: str | None
    redis_url: str | None
    schema: str | None
    tools_module: str | None = None
    tools_digest: str | None = None

    @classmethod
    def given_to_worker(cls, options: Any) -> Shared:
        """A worker's own values, read when it starts (Locust overwrites its parsed_options with
        the master's later). A --schema equal to the default is taken as not given."""
        schema = options.schema if options.schema != DEFAULT_SCHEMA else None
        return cls(options.pg_dsn or None, options.redis_url or None, schema, options.tools_module or None)

    def as_message(self) -> dict[str, Any]:
        return asdict(self)


def refusal(own: Shared, master: Shared) -> str | None:
    """Why this worker cannot run the master's test (one line), or None. `own`: the worker's
    values; `master`: the master's, from CHECK_MESSAGE."""
    for flag, mine, theirs in (("--pg-dsn", own.pg_dsn, master.pg_dsn), ("--redis-url", own.redis_url,
                                                                          master.redis_url),
                               ("--schema", own.schema, master.schema)):
        if mine is not None and mine != theirs:
            return (f"{flag}: this worker was started with {redact(mine)} but the master runs {redact(theirs)}:"
                    f" start workers without {flag} (they take the master's) or with the master's value")
    return _tools_refusal(own.tools_module, master)


def _tools_refusal(own_path: str | None, master: Shared) -> str | None:
    if master.tools_module is None:
        if own_path is not None:
            return (f"--tools-module: this worker was started with {own_path} but the master runs none:"
                    " start workers without --tools-module")
        return None
    theirs = f"{master.tools_module} (sha256 {master.tools_digest[:12]})"
    path = own_path or master.tools_module
    try:
        digest = file_digest(path)
    except OSError as exc:
        return (f"--tools-module: the master runs {theirs} but this worker cannot read {path}"
                f" ({exc.strerror or exc}): copy the file to the same path, or give workers --tools-module")
    if digest != master.tools_digest or Path(path).name != Path(master.tools_module).name:
        return (f"--tools-module: this worker has {path} (sha256 {digest[:12]}) but the master runs {theirs}:"
                " every process must run the same file")
    try:
        load_tools_module(path)
    except BadToolsModule as exc:
        return f"{exc} (on this worker)"
    return None


def _connected(runner: MasterRunner, worker: str) -> bool:
    node = runner.clients.get(worker)
    return node is not None and node.state != STATE_MISSING


class WorkerChecks:
    """The master's side: the answers of one test's check."""

    def __init__(self) -> None:
        self._test = 0
        self._answers: dict[str, str | None] = {}

    def answer(self, worker: str, data: dict[str, Any]) -> None:
        """CHECKED_MESSAGE from a worker."""
        if data["test"] == self._test:
            self._answers[worker] = data["refusal"]

    def wait(self, runner: MasterRunner, test: int, send: Any) -> list[str]:
        """Ask every connected worker (`send()` sends the check) and wait for their answers; the
        refusals, one line each naming the worker."""
        self._test, self._answers = test, {}
        expected = {worker for worker in runner.clients if _connected(runner, worker)}
        send()
        deadline = time.monotonic() + CHECK_TIMEOUT_S
        while not expected <= self._answers.keys() and time.monotonic() < deadline:
            expected = {w for w in expected if _connected(runner, w)}
            gevent.sleep(_POLL_S)
        lines = [f"worker {w}: {r}" for w, r in sorted(self._answers.items()) if r is not None and w in expected]
        lines += [f"worker {w}: did not answer the master's check of the options within {CHECK_TIMEOUT_S:g} s"
                  " (is it running toolclash's locustfile?)" for w in sorted(expected - self._answers.keys())]
        return lines
