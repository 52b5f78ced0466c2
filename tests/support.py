"""Helpers shared by the tests: a prepared schema, an adapter on it, the `locust` command."""

from __future__ import annotations

import contextlib
from contextlib import suppress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.event
import psutil
import psycopg
import psycopg.conninfo
import redis
from gevent.server import StreamServer
from psycopg import sql
from locust.event import EventHook

from db import schema as run_schema
from db.adapter import ToolAdapter
from db.audits import Acknowledged, AuditContext, Baseline
from db.redis_keys import RedisKeys
from db.pool import SessionSettings, open_pool
from db.retry import RetryPolicy
from db.session import SEND_ONCE
from harness.metrics import Metrics
from tasks.queue import QueueKeys

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))


def prepared_schema(admin: psycopg.Connection, schema: str, accounts: int = 10, balance: int = 1000) -> None:
    """The run's tables seeded as a run of PREPARED's baseline (`accounts` and `balance` unless told)."""
    run_schema.prepare(admin, schema, reset=False)
    run_schema.begin_run(admin, schema, "test", accounts=accounts, initial_balance=balance, counters=PREPARED.counters)


class Recorder:
    """Listens to the adapter's events."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.records: list[Any] = []
        self.request = EventHook()
        self.request.add_listener(lambda **kw: self.requests.append(kw))
        self.call_finished = EventHook()
        self.call_finished.add_listener(lambda record: self.records.append(record))
        self.call_started = EventHook()


QUICK_RETRIES = RetryPolicy(max_tries=5, base_s=0.001, cap_s=0.01)


def adapter_on(dsn: str, session: SessionSettings, recorder: Recorder, *, size: int = 2,
               policy: RetryPolicy = QUICK_RETRIES, tool_work_s: float = 0.0):
    pool = open_pool(dsn, session, size=size, timeout_s=5)
    return pool, ToolAdapter(pool, None, policy, tool_work_s, recorder.request, recorder.call_finished,
                             recorder.call_started)


def free_port() -> int:
    """A TCP port nothing listens on now: other test runs on this machine may hold Locust's
    defaults (5557, 8089)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def own_master_port() -> list[str]:
    """Options giving a distributed run a master port of its own: workers must not join another
    run's master."""
    port = str(free_port())
    return ["--master-bind-port", port, "--master-port", port]


def _locust_env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "TOOLCLASH_"))}
    full_env.update(env or {})
    return full_env


def _locust_command(args: tuple[str, ...]) -> list[str]:
    """The `locust` command line; a run with --processes gets a master port of its own."""
    if "--processes" in args and "--master-bind-port" not in args:
        args = (*args, *own_master_port())
    return [LOCUST, "--headless", "--only-summary", *args]


def run_locust(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `locust` command, from the project's directory (so locust.conf applies)."""
    return subprocess.run(
        _locust_command(args),
        cwd=ROOT, env=_locust_env(env), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


class LocustInBackground:
    """The real `locust` command running while the test does something else; its output goes to
    files (a pipe nobody reads could fill up and stall it)."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str] | None) -> None:
        self._out = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._err = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.process = subprocess.Popen(
            _locust_command(args), cwd=ROOT, env=_locust_env(env),
            stdout=self._out, stderr=self._err, text=True, stdin=subprocess.DEVNULL,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """Wait for the run to end on its own; what it printed."""
        returncode = self.process.wait(timeout=timeout)
        self._out.seek(0), self._err.seek(0)
        return subprocess.CompletedProcess(self.process.args, returncode, self._out.read(), self._err.read())

    def close(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait(timeout=30)
        self._out.close(), self._err.close()


@contextlib.contextmanager
def locust_in_background(*args: str, env: dict[str, str] | None = None) -> Iterator[LocustInBackground]:
    """Start `locust`; a run the test did not wait for is killed when the block ends."""
    run = LocustInBackground(args, env)
    try:
        yield run
    finally:
        run.close()


T = TypeVar("T")


def wait_until(measure: Callable[[], T], what: str, *, timeout: float = 60,
               still: Callable[[], bool] = lambda: True, every: float = 0.05) -> T:
    """Poll `measure` every `every` seconds until it returns something true, and return that;
    fail naming `what` after `timeout` seconds, or as soon as `still()` turns false (e.g. the
    run it waits on has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        value = measure()
        if value:
            return value
        if not still():
            raise AssertionError(f"gave up waiting for {what}: what it waited on has ended")
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(every)


def rows_in(conn: psycopg.Connection, schema: str, table: str) -> int:
    """The rows of one of the run's tables now; 0 while the run has not created it yet."""
    if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{table}',)).fetchone()[0] is None:
        return 0
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def settings_from(*args: str):
    """toolclash Settings parsed from command-line words, as the locust process parses them."""
    from locust.argument_parser import get_parser

    from harness.options import Settings, add_arguments

    parser = get_parser()
    add_arguments(parser)
    return Settings.from_options(parser.parse_args(list(args)))


# What prepared_schema seeds (and the scenarios' defaults for the rest).
PREPARED = Baseline(accounts=10, initial_balance=1000, counters=4, teams=4, queue_capacity=50)


def context_for(conn: psycopg.Connection, schema: str, acknowledged_of, redis_client=None, findings=(),
                metrics: Metrics | None = None, baseline: Baseline = PREPARED) -> AuditContext:
    """An audit's context on the test's own session; what the audit observes goes to `metrics`."""
    return AuditContext(conn, schema, redis_client, RedisKeys(schema), acknowledged_of, baseline,
                        (metrics or Metrics()).observe, list(findings))


def acknowledged_from(records) -> Acknowledged:
    """What the harness tells the audits about these calls, through the same Metrics a run uses."""
    metrics = Metrics()
    for record in records:
        metrics.record(record)
    return metrics.acknowledged({record.tool for record in records})


def embedded_pgdata() -> set[str]:
    """The data directories of the embedded PostgreSQL servers running now."""
    return {arg for p in psutil.process_iter(["cmdline"]) for arg in (p.info["cmdline"] or [])
            if re.search(r"toolclash-[^/]+/pg$", arg)}


class _Proxy:
    """A TCP proxy in front of a real server, with a hook on what passes each way."""

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self._upstream = upstream  # (host, port), or a Unix socket's path
        self._server = StreamServer(("127.0.0.1", 0), self._relay)

    @property
    def port(self) -> int:
        return self._server.server_port

    def __enter__(self):
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def _request(self, data: bytes, connection: dict) -> None:
        """Sees what the client sends, before the server gets it. `connection`: this
        connection's own state."""

    def _reply(self, data: bytes, connection: dict) -> bool:
        """Sees what the server answers, before the client gets it; False cuts the connection
        instead of passing it on."""
        return True

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, str):
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self._upstream)
            return upstream
        return socket.create_connection(self._upstream)

    def _relay(self, client: socket.socket, _address: object) -> None:
        upstream = self._connect_upstream()
        connection: dict = {}

        def cut() -> None:
            for end in (client, upstream):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

        def to_server() -> None:
            with suppress(OSError):
                while data := client.recv(65536):
                    self._request(data, connection)
                    upstream.sendall(data)
            cut()

        requests = gevent.spawn(to_server)
        try:
            with suppress(OSError):
                while data := upstream.recv(65536):
                    if not self._reply(data, connection):
                        break
                    client.sendall(data)
        finally:
            cut()
            requests.join()
            upstream.close()


class ReplyLosingProxy(_Proxy):
    """A proxy in front of the real Redis. For the first `losses` commands that carry one of
    `markers` (the text of a script), it forwards the command, waits for the server's reply, and
    cuts the connection instead of passing the reply on: the server ran the script, the client
    only sees its connection drop."""

    def __init__(self, redis_url: str, markers: tuple[bytes, ...], losses: int) -> None:
        kwargs = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
        super().__init__(kwargs["path"] if "path" in kwargs else (kwargs.get("host", "localhost"), kwargs.get("port", 6379)))
        self._upstream_kwargs = kwargs
        self._markers = markers
        self._to_lose = losses
        self.lost = 0

    def client(self) -> redis.Redis:
        auth = {k: self._upstream_kwargs[k] for k in ("db", "username", "password") if k in self._upstream_kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, retry=SEND_ONCE, **auth)

    def _request(self, data: bytes, connection: dict) -> None:
        if self._to_lose and any(marker in data for marker in self._markers):
            self._to_lose -= 1
            connection["reply_to_lose"] = True  # before the server can answer

    def _reply(self, data: bytes, connection: dict) -> bool:
        if connection.get("reply_to_lose"):  # the server has answered: it ran the script
            self.lost += 1
            return False
        return True


class ReplyHoldingProxy(_Proxy):
    """A proxy in front of the real PostgreSQL. After `hold_next_reply()`, the next answer the
    server sends is kept from the client (which waits for it, as on a slow network) until
    `release()`; `holding` is set when it arrives."""

    def __init__(self, pg_dsn: str) -> None:
        params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
        host, port = params.get("host") or "/tmp", int(params.get("port") or 5432)
        super().__init__(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
        self._pg_dsn = pg_dsn
        self.holding = gevent.event.Event()
        self._released = gevent.event.Event()
        self._hold = False

    @property
    def dsn(self) -> str:
        return psycopg.conninfo.make_conninfo(self._pg_dsn, host="127.0.0.1", port=self.port)

    def hold_next_reply(self) -> None:
        self.holding.clear()
        self._released.clear()
        self._hold = True

    def release(self) -> None:
        self._released.set()

    def _reply(self, data: bytes, connection: dict) -> bool:
        if self._hold:
            self._hold = False
            self.holding.set()
            self._released.wait()
        return True


# Redis failing over to a replica that lacks its last two writes, when those were one consumer's
# dequeue and acknowledgement of a job (KEYS: the queue's three levels, high first, and its log):
# the log loses both entries and the job is back at the head of its level, as the replica holds
# them. The job's time of enqueue is in no log entry: its dequeue's stands in for it.
_LOSE_LAST_DEQUEUE_AND_ACK = """
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 2)
if #last < 2 then
  return false
end
local function fields(entry)
  local named = {}
  for i = 1, #entry[2], 2 do
    named[entry[2][i]] = entry[2][i + 1]
  end
  return named
end
local ack, dequeue = fields(last[1]), fields(last[2])
if ack.event ~= 'ack' or dequeue.event ~= 'dequeue' or ack.consumer ~= dequeue.consumer then
  return false
end
redis.call('XDEL', KEYS[4], last[1][1], last[2][1])
redis.call('LPUSH', KEYS[tonumber(dequeue.level)], dequeue.job .. '|' .. string.match(last[2][1], '^%d+') .. '000')
return dequeue.job
"""


def lose_last_dequeue_and_ack(client: redis.Redis, keys: RedisKeys) -> str | None:
    """The job whose dequeue and acknowledgement a failover lost (see above), or None when the
    queue's last two writes were not those."""
    queue = QueueKeys(keys)
    job = client.eval(_LOSE_LAST_DEQUEUE_AND_ACK, 4, *queue.levels, queue.log)
    return job.decode() if job else None
