"""One process of toolclash's reference tool server (`python -m toolserver`), as a run starts it
(harness.run.mcp_server): the servers it writes to handed through its environment
(TOOLCLASH_PG_DSN, TOOLCLASH_REDIS_URL, which the server reads), never its command line, which
every user of the machine can read (`ps`): a DSN or URL may hold a password. Its every other
option is on its command line: the shell's TOOLCLASH_* variables, which the server would read
too (TOOLCLASH_TOOLSERVER_CARELESS…), are not handed on.

A process may start as a standby (--chaos mcp-kill): it does its half second of Python imports
at once, then waits, neither listening nor connected, until it is told to serve: the server
killed on purpose is replaced by one that needs only to listen and open its connections, so the
fault is the calls and sessions the kill cut, not an outage of Python's start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import gevent

from db.connect import redact

__all__ = ["ServerDidNotStart", "ToolServerProcess"]

_ROOT = Path(__file__).resolve().parents[2]
# `python -m toolserver`, in a session of its own (a Ctrl-C at the terminal stops the run, which
# stops the server after its load, not before), and ended with the run's process all the same: on
# Linux the kernel sends it SIGTERM when the process that started it dies (PR_SET_PDEATHSIG),
# however it died. A standby imports the server, then waits for a line on its stdin (none: the run
# no longer needs it).
_LAUNCH = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
except (AttributeError, OSError):
    pass
if os.getppid() != int(os.environ["TOOLCLASH_RUN_PID"]):
    sys.exit(2)
from toolserver.__main__ import main
if os.environ.get("TOOLCLASH_STANDBY"):
    import toolserver.serve
    if not sys.stdin.readline():
        sys.exit(0)
sys.exit(main(sys.argv[1:]))
"""
_STARTUP_PREFIX = "toolserver: MCP at "
_START_TIMEOUT_S = 30.0
_POLL_S = 0.01


class ServerDidNotStart(Exception):
    """The process did not come to serve: why, in one line (passwords redacted)."""


class ToolServerProcess:
    """`python -m toolserver *args`, started at once (a standby: imported, waiting for `serve`)."""

    def __init__(self, args: Sequence[str], pg_dsn: str, redis_url: str, *, standby: bool = False) -> None:
        self._output = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]  # noqa: SIM115 (closed by stop())
        shell = {name: value for name, value in os.environ.items() if not name.startswith("TOOLCLASH_")}
        env: Mapping[str, str] = {**shell, "TOOLCLASH_PG_DSN": pg_dsn, "TOOLCLASH_REDIS_URL": redis_url,
                                  "TOOLCLASH_RUN_PID": str(os.getpid()), "TOOLCLASH_STANDBY": "1" if standby else ""}
        self._process = subprocess.Popen([sys.executable, "-c", _LAUNCH, *args], cwd=_ROOT, env=env,
                                         stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                                         stdout=self._output[0], stderr=self._output[1], start_new_session=True)

    @property
    def ended(self) -> bool:
        return self._process.poll() is not None

    @property
    def exit_code(self) -> int | None:
        return self._process.poll()

    def serve(self) -> None:
        """A standby: listen and serve now."""
        stdin = self._process.stdin
        if stdin is not None:
            try:
                stdin.write(b"serve\n")
                stdin.close()
            except OSError:  # it has ended: waiting for it to serve will say why
                pass

    def wait_until_serving(self) -> str:
        """Its MCP URL, once it has said where it listens and answers GET /info (it serves
        requests, not only accepts connections); raises ServerDidNotStart."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not (line := self.startup_line()).startswith(_STARTUP_PREFIX):
            if self.ended:
                raise ServerDidNotStart(self.why())
            if time.monotonic() >= deadline:
                raise ServerDidNotStart(f"no word of serving within {_START_TIMEOUT_S:g} s: {self.why()}")
            gevent.sleep(_POLL_S)
        url = line[len(_STARTUP_PREFIX):].split()[0]
        info = url.removesuffix("/mcp") + "/info"
        while True:
            try:
                with urllib.request.urlopen(info, timeout=1.0) as reply:
                    reply.read()
                    return url
            except (OSError, urllib.error.URLError) as exc:
                if self.ended or time.monotonic() >= deadline:
                    raise ServerDidNotStart(f"it listens at {url} but does not answer GET /info: {self.why() or exc}"
                                           ) from None
            gevent.sleep(_POLL_S)

    def startup_line(self) -> str:
        return _read(self._output[0]).partition("\n")[0]

    def why(self) -> str:
        """Its last line on stderr (its one-line refusal), or how it ended."""
        lines = [line for line in _read(self._output[1]).splitlines() if line.strip()]
        if lines:
            return redact(lines[-1].removeprefix("toolserver: "))
        code = self.exit_code
        return f"it exited with code {code}" if code is not None else "no word from it"

    def kill(self) -> None:
        """kill -9: it ends at once, its calls under way cut wherever they are."""
        self._process.kill()
        self._process.wait()

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM: it stops accepting connections and lets the calls under way end; killed if it
        has not exited within `timeout_s`. Whether it had to be killed."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return True
        return False

    def close(self) -> None:
        """Its output files closed; after it ended."""
        for file in self._output:
            file.close()
        if self._process.stdin is not None:
            self._process.stdin.close()


def _read(file: IO[bytes]) -> str:
    """A file the child writes to, read whole without moving the offset it shares."""
    return os.pread(file.fileno(), os.fstat(file.fileno()).st_size, 0).decode("utf-8", errors="replace")
