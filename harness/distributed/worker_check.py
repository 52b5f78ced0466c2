"""The options a worker must share with its master, checked at each test start before any load.

Locust copies the master's options into every worker with each spawn message, and the per-run
ones are read from there (harness.config.run_settings). A few cannot simply be copied: a worker connects
to the servers itself, finds the schema's Redis keys by the schema's name, reads the tools
module from a file on its own host, reads --trace at the master's path on its own host (the same
bytes, by their SHA-256), and over MCP calls the master's MCP server (--mcp-url, or the
one the master starts for --mcp-server, whose URL it tells at each test start), in the same era,
with the same token (--mcp-ca-file is a path on the worker's own host, which it may give). The
master tells its workers these at each test start (Message.CHECK, before it spawns any agent); a
worker uses the master's, unless it was started with a value of its own, which must then be the
master's (a token is compared, never shown). Each worker answers (Message.CHECKED)
with None or one line naming the option and both values; the master starts the test only when
every worker answered None.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
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
    """What the master runs with (as sent in Message.CHECK), or what a worker was started with
    (None: not given, the master's is taken)."""

    pg_dsn: str | None
    redis_url: str | None
    schema: str | None
    tools_module: str | None = None
    tools_digest: str | None = None
    mcp_url: str | None = None
    mcp_server: str | None = None
    mcp_era: str | None = None
    mcp_token: str | None = field(default=None, repr=False)
    mcp_ca_file: str | None = None
    mcp_insecure: bool | None = None
    # --trace, the master's: a worker replays the file at the master's path, which must be the same file.
    trace: str | None = None
    trace_digest: str | None = None

    @classmethod
    def given_to_worker(cls, options: Any) -> Shared:
        """A worker's own values, read when it starts (Locust overwrites its parsed_options with
        the master's later). A --schema or --mcp-era equal to the default is taken as not given."""
        schema = options.schema if options.schema != DEFAULT_SCHEMA else None
        return cls(options.pg_dsn or None, options.redis_url or None, schema, options.tools_module or None,
                   mcp_url=options.mcp_url or None, mcp_server=options.mcp_server or None,
                   mcp_era=options.mcp_era if options.mcp_era != "auto" else None, mcp_token=options.mcp_token or None,
                   mcp_ca_file=options.mcp_ca_file or None, mcp_insecure=options.mcp_insecure or None)

    @classmethod
    def of_master(cls, pg_dsn: str, redis_url: str, schema: str, tools_module: str | None,
                  tools_digest: str | None, fixed: dict[str, Any], trace: str | None = None,
                  trace_digest: str | None = None) -> Shared:
        """What a master sends: its servers, schema, tools module and trace, and its MCP options as given."""
        return cls(pg_dsn, redis_url, schema, tools_module, tools_digest,
                   **{dest: fixed[dest] for dest in _MCP_OPTIONS}, trace=trace, trace_digest=trace_digest)

    def as_message(self) -> dict[str, Any]:
        return asdict(self)

    def mcp_options(self, master: Shared) -> dict[str, Any]:
        """The MCP options a worker runs with (self: its own): the master's, but for the CA file
        it was given (a path on its own host)."""
        options = {dest: getattr(master, dest) for dest in _MCP_OPTIONS}
        if self.mcp_ca_file is not None:
            options["mcp_ca_file"] = self.mcp_ca_file
        return options


# The MCP options a worker takes from its master (harness.config.declared).
_MCP_OPTIONS = ("mcp_url", "mcp_server", "mcp_era", "mcp_token", "mcp_ca_file", "mcp_insecure")


def refusal(own: Shared, master: Shared) -> str | None:
    """Why this worker cannot run the master's test (one line), or None. `own`: the worker's
    values; `master`: the master's, from Message.CHECK."""
    for flag, mine, theirs in (("--pg-dsn", own.pg_dsn, master.pg_dsn), ("--redis-url", own.redis_url,
                                                                          master.redis_url),
                               ("--schema", own.schema, master.schema)):
        if mine is not None and mine != theirs:
            return (f"{flag}: this worker was started with {redact(mine)} but the master runs {redact(theirs)}:"
                    f" start workers without {flag} (they take the master's) or with the master's value")
    return _mcp_refusal(own, master) or _tools_refusal(own.tools_module, master) or _trace_refusal(master)


def _mcp_refusal(own: Shared, master: Shared) -> str | None:
    for flag, mine, theirs in (("--mcp-url", own.mcp_url, master.mcp_url),
                               ("--mcp-server", own.mcp_server, master.mcp_server),
                               ("--mcp-era", own.mcp_era, master.mcp_era),
                               ("--mcp-insecure", own.mcp_insecure, master.mcp_insecure or None)):
        if mine is not None and mine != theirs:
            return (f"{flag}: this worker was started with {redact(str(mine))} but the master runs"
                    f" {redact(str(theirs)) if theirs is not None else 'none'}: start workers without {flag} (they"
                    " take the master's) or with the master's value")
    if own.mcp_token is not None and own.mcp_token != master.mcp_token:
        return ("--mcp-token: this worker was started with another token than the master's (neither is shown):"
                " start workers without --mcp-token (they take the master's) or with the master's")
    return None


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


def _trace_refusal(master: Shared) -> str | None:
    if master.trace is None:
        return None
    theirs = f"{master.trace} (sha256 {master.trace_digest[:12]})"
    try:
        digest = file_digest(master.trace)
    except OSError as exc:
        return (f"--trace: the master replays {theirs} but this worker cannot read {master.trace}"
                f" ({exc.strerror or exc}): copy the file to the same path on this worker's host")
    if digest != master.trace_digest:
        return (f"--trace: this worker's {master.trace} has sha256 {digest[:12]} but the master replays {theirs}:"
                " every process must replay the same file")
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
        """Message.CHECKED from a worker."""
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
