"""Helpers shared by the tests: a prepared schema, an adapter on it, the `locust` command (the one
helper that starts it: LocustProcess, reached through the `locust` fixture), the reference MCP tool
server (through the `toolserver` fixture) and the SDK's client, wait_until."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.event
import psutil
import psycopg
import psycopg.conninfo
import pytest
import redis
from gevent.server import StreamServer
from locust.event import EventHook
from psycopg import sql

from db import schema as run_schema
from db.audits import Acknowledged, AuditContext, Baseline
from db.durations import constant
from db.pool import SessionSettings, open_pool
from db.redis_keys import RedisKeys
from db.session import SEND_ONCE
from db.tool import Tool
from harness.run.load import Load
from harness.run.locust_requests import told_to
from harness.verdict.coordinator import Coordinator
from harness.watch.metrics import Metrics
from tasks.queue import PRIORITIES, QueueKeys
from tasks.scenarios import ScenarioParams, built_in_tools
from transport.hooks import Hook
from transport.in_process import ToolAdapter
from transport.retry import RetryPolicy

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))


def prepared_schema(admin: psycopg.Connection, schema: str, accounts: int = 10, balance: int = 1000) -> None:
    """The run's tables seeded as a run of PREPARED's baseline (`accounts` and `balance` unless told)."""
    run_schema.prepare(admin, schema, reset=False)
    run_schema.begin_run(admin, schema, "test", accounts=accounts, initial_balance=balance, counters=PREPARED.counters)


class Recorder:
    """Listens to the adapter's hooks (transport.hooks) as the harness's Load does: `records`, each call's
    record as the adapter reported it; `requests`, what Locust was told of each (its `request`
    event, fired by the harness's own listener, harness.run.locust_requests, before the record is kept)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.records: list[Any] = []
        self.request = EventHook()
        self.request.add_listener(lambda **kw: self.requests.append(kw))
        self.call_finished = Hook()
        self.call_finished.add_listener(told_to(self.request))
        self.call_finished.add_listener(lambda record: self.records.append(record))
        self.call_started = Hook()


QUICK_RETRIES = RetryPolicy(max_tries=5, base_s=0.001, cap_s=0.01)


def adapter_on(dsn: str, session: SessionSettings, recorder: Recorder, *, size: int = 2,
               policy: RetryPolicy = QUICK_RETRIES, tool_work_s: float = 0.0):
    pool = open_pool(dsn, session, size=size, timeout_s=5)
    return pool, ToolAdapter(pool, None, policy, constant(tool_work_s), recorder.call_finished, recorder.call_started)


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


# The marker each of these fixtures gives every test that uses it, directly or through another
# fixture (conftest.py applies them; pyproject.toml declares them; --strict-markers refuses others).
FIXTURE_MARKERS = {
    "servers": "servers",  # the real PostgreSQL and Redis (conftest.py)
    "toolserver": "mcp",  # starts the reference MCP tool server (conftest.py)
    "mcp": "mcp",  # starts MCP servers on the official SDK (tests/test_mcp_client.py)
    "node": "mcp",  # node, for MCP servers and clients on the TypeScript SDK (tests/test_mcp_conformance.py)
    "locust": "locust",  # starts the real `locust` command (conftest.py)
    "browser": "browser",  # headless Chromium (conftest.py)
    "compose": "compose",  # docker compose or docker-compose (tests/test_compose.py)
}

# The node ids of the collected tests that carry the `locust` marker: conftest.py fills it at
# collection. None outside a pytest session run with the project's conftest.py.
LOCUST_TESTS: set[str] | None = None


def _require_the_locust_marker() -> None:
    """Fail the running test, loudly, when it does not carry the `locust` marker: a test that
    starts `locust` without it would escape `-m "not locust"` (make test-fast) and its tier."""
    if LOCUST_TESTS is None:
        return
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if current not in LOCUST_TESTS:
        pytest.fail(f"{current or 'code outside any test'} starts `locust` without the `locust` marker: take the"
                    " `locust` fixture (conftest.py) and start it through that, so that the marker follows",
                    pytrace=False)


def _locust_env(env: dict[str, str] | None) -> dict[str, str]:
    """The test process's environment without what Locust or toolclash would read, then `env`;
    the venv's bin first on PATH (a command given as words finds `locust` there)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "TOOLCLASH_"))}
    full_env["PATH"] = f"{Path(LOCUST).parent}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    return full_env


class LocustProcess:
    """One `locust` process a test started: the one way the tests start `locust`.

    `args` are `locust`'s options (from the project's directory, so locust.conf applies),
    after `--headless --only-summary` unless `headless=False`; a run with --processes gets a
    master port of its own. `web=True` gives it a web port of its own (`port`, `url`), on
    127.0.0.1. `command`: the whole command line instead (its first word found on PATH, the
    venv's bin first), e.g. the one docker-compose.yml runs. The environment is the test's
    without LOCUST_* and TOOLCLASH_* variables, then `env`.

    It runs in a session (process group) of its own: `ctrl_c()` sends SIGINT to the group as a
    terminal does, and `close()` kills the group (its --processes workers too). Its output goes
    to files, never a pipe nobody reads (it could fill up and stall it); `merge_output=True`
    sends stderr into stdout."""

    def __init__(self, args: Sequence[str] = (), *, headless: bool = True, web: bool = False,
                 command: Sequence[str] | None = None, env: dict[str, str] | None = None,
                 merge_output: bool = False) -> None:
        _require_the_locust_marker()
        self.port: int | None = None
        if command is None:
            args = tuple(args)
            if web:
                self.port = free_port()
                args = ("--web-host", "127.0.0.1", "--web-port", str(self.port), *args)
            if "--processes" in args and "--master-bind-port" not in args:
                args = (*args, *own_master_port())
            command = [LOCUST, *(("--headless", "--only-summary") if headless else ()), *args]
        self.args = list(command)
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed by release())
        self._err = None if merge_output else tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env=_locust_env(env), stdin=subprocess.DEVNULL, start_new_session=True,
            stdout=self._out, stderr=subprocess.STDOUT if self._err is None else self._err,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stdout(self) -> str:
        """What it printed so far (with stderr, when merged)."""
        return _read(self._out)

    def stderr(self) -> str:
        return "" if self._err is None else _read(self._err)

    def wait_for_web_ui(self, timeout: float = 60) -> None:
        """Until its web UI answers; fails at once if the process ends first."""

        def answers() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        try:
            wait_until(answers, "the web UI", timeout=timeout, still=self.running)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.stderr()[-3000:]}") from None

    def wait(self, timeout: float = 120) -> int:
        """Its exit code, once it ended on its own; killed, and the test failed, after `timeout` s."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(f"`locust` did not end within {timeout:g} s: {' '.join(self.args)}\n"
                        f"{self.stderr()[-3000:] or self.stdout()[-3000:]}", pytrace=False)

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """Wait for the run to end on its own; what it printed."""
        returncode = self.wait(timeout)
        return subprocess.CompletedProcess(self.args, returncode, self.stdout(), self.stderr())

    def ctrl_c(self, timeout: float = 90) -> int:
        """SIGINT to its whole process group, as a terminal's Ctrl-C sends it; its exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.wait(timeout)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the process (not its group); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        """Kill its process group if it still runs (what it printed can still be read)."""
        if self.running():
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def release(self) -> None:
        """close(), and let go of what it printed."""
        self.close()
        for file in (self._out, self._err):
            if file is not None:
                file.close()

    def __enter__(self) -> LocustProcess:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(file: Any) -> str:
    """A file the child writes to, read whole without moving the offset the child shares."""
    size = os.fstat(file.fileno()).st_size
    return os.pread(file.fileno(), size, 0).decode("utf-8", errors="replace")


def run_locust(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`locust --headless --only-summary *args`, to its end; what it printed."""
    with LocustProcess(args, env=env) as run:
        return run.finish(timeout)


@contextlib.contextmanager
def locust_in_background(*args: str, env: dict[str, str] | None = None) -> Iterator[LocustProcess]:
    """Start `locust --headless --only-summary *args`; a run the test did not wait for is killed
    when the block ends."""
    with LocustProcess(args, env=env) as run:
        yield run


class Locust:
    """The `locust` fixture (conftest.py): how a test starts `locust`, so that it carries the
    `locust` marker. Whatever it started still runs at the test's end is killed then."""

    def __init__(self) -> None:
        self._started: list[LocustProcess] = []

    def start(self, *args: str, **how: Any) -> LocustProcess:
        """A running `locust` (LocustProcess's options)."""
        self._started.append(LocustProcess(args, **how))
        return self._started[-1]

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`locust --headless --only-summary *args`, to its end; what it printed."""
        return self.start(*args, env=env).finish(timeout)

    def background(self, *args: str, env: dict[str, str] | None = None):
        """A context manager: `locust --headless --only-summary *args` running while the block
        goes on; killed at the block's end unless it ended."""
        return locust_in_background(*args, env=env)

    def close(self) -> None:
        for run in self._started:
            run.release()


class ToolServerProcess:
    """One reference MCP tool server (`python -m toolserver`) a test started, by its whole command
    (its first word found on PATH, the venv's bin first), with the test's environment without
    LOCUST_* and TOOLCLASH_* variables, then `env`: where it listens is in its startup line (`url`).
    In a session of its own (its processes, with --processes, stopped together), its stderr in a file."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, timeout: float = 30) -> None:
        self.args = list(command)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=_locust_env(env), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._err, text=True, start_new_session=True)
        with gevent.Timeout(timeout, AssertionError(f"the tool server did not start within {timeout:g} s")):
            self.startup_line = self.process.stdout.readline()
        found = re.search(r"http://\S+/mcp", self.startup_line)
        if found is None:
            self.close()
            raise AssertionError(f"the tool server did not start: {self.startup_line}{self.stderr()[-3000:]}")
        self.url = found.group(0)

    def info(self) -> dict[str, Any]:
        """What its `GET /info` answers."""
        with urllib.request.urlopen(self.url.removesuffix("/mcp") + "/info", timeout=10) as reply:
            return json.load(reply)

    def stderr(self) -> str:
        return _read(self._err)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a service manager stops it; its exit code once its calls under way ended."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        """Kill its process group if it still runs."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process.stdout.close()
        self._err.close()


class ToolServer:
    """The `toolserver` fixture (conftest.py): starts tool servers on the test's PostgreSQL and
    Redis, so that the test carries the `mcp` marker; what still runs at the test's end is killed."""

    def __init__(self, pg_dsn: str, redis_url: str) -> None:
        self._servers = ("--pg-dsn", pg_dsn, "--redis-url", redis_url)
        self._started: list[ToolServerProcess] = []

    def start(self, schema: str, *options: str) -> ToolServerProcess:
        """On a port of its own (`--port 0`), the servers and the schema on its command line."""
        return self.run([sys.executable, "-m", "toolserver", "--port", "0", *self._servers, "--schema", schema,
                         *options])

    def run(self, command: Sequence[str], env: dict[str, str] | None = None) -> ToolServerProcess:
        """`command` as it is (e.g. the one docker-compose.yml runs), with `env` (ToolServerProcess)."""
        self._started.append(ToolServerProcess(command, env))
        return self._started[-1]

    def close(self) -> None:
        for server in self._started:
            server.close()


def mcp_client(url: str, era: str, *agents: list[dict[str, Any]], list_tools: bool = False,
               timeout: float = 60) -> dict[str, Any]:
    """The official MCP SDK's client (tests/mcp_client.py, a process of its own) at `url`, in `era`
    ("legacy": the session era; "2026-07-28": the stateless one): each agent a client of its own
    making its calls ({"tool", "arguments", "meta"}) in turn, the agents at once. What it printed:
    its protocol version, the tools it listed (`list_tools`), each agent's results."""
    plan = json.dumps({"era": era, "list": list_tools, "agents": list(agents)})
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "mcp_client.py"), url], input=plan, text=True,
                          capture_output=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


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
    """toolclash Settings parsed from command-line words, as the locust process parses them; not
    from Locust's own variables, which `make` exports for `make run` (LOCUST_USERS,
    LOCUST_RUN_TIME...) and the tests' processes inherit."""
    from locust.argument_parser import get_parser

    from harness.config.declared import add_arguments
    from harness.config.settings import Settings

    parser = get_parser()
    add_arguments(parser)
    locusts = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("LOCUST_")}
    try:
        return Settings.from_options(parser.parse_args(list(args)))
    finally:
        os.environ.update(locusts)


# What prepared_schema seeds (and the scenarios' defaults for the rest).
PREPARED = Baseline(accounts=10, initial_balance=1000, counters=4, teams=4, queue_capacity=50)


def built_in_tool(name: str, schema: str, **params: Any) -> Tool:
    """The built-in tool `name` as a run on `schema` of PREPARED's baseline has it; `params`
    changes the ScenarioParams of that run (accounts=1, hold_s=0, …)."""
    return built_in_tools(dataclasses.replace(
        ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys(schema), counters=PREPARED.counters,
                       teams=PREPARED.teams, queue_capacity=PREPARED.queue_capacity,
                       initial_balance=PREPARED.initial_balance), **params))[name]


def row_of(admin: psycopg.Connection, schema: str, query: str, op_id) -> tuple | None:
    """The one row `query` (its tables as {schema}.table) finds for `op_id`, or None."""
    return admin.execute(sql.SQL(query).format(schema=sql.Identifier(schema)), (op_id,)).fetchone()


# The workflows' reads: a call of one leaves nothing on the servers (tasks/workflows.py).
READS = ("read_balance", "read_plan", "read_queue")


def holds_what_was_told(held: dict, name: str, arguments: dict) -> bool:
    """Whether what a call left (what_the_servers_hold) is what it was told: each argument found on
    the servers equal to the call's, and some found unless the tool reads or takes none."""
    if name == "list_append":  # its appends' slots: its reads leave nothing
        return held == {"appended": sorted(slot for f, slot in arguments["txn"] if f == "append")}
    return held == {key: arguments[key] for key in held} and bool(held or not arguments or name in READS)


def what_the_servers_hold(name: str, op_id, admin: psycopg.Connection, schema: str, client: redis.Redis) -> dict:
    """What call `op_id` of built-in tool `name` left on the servers, found by its op id where the
    audits look, as arguments of its tool (compared with the call's own: a workflow's write's
    others say what its agent read, and leave no trace but the write; a read leaves none)."""
    keys = RedisKeys(schema)
    ledger = row_of(admin, schema, "SELECT debit_account, credit_account, amount FROM {schema}.ledger"
                                   " WHERE op_id = %s", op_id)
    if name in ("deduct_credits", "charge_usage", "deduct_from_read"):
        debit, credit, amount = ledger
        assert credit is None
        if name == "charge_usage":
            assert row_of(admin, schema, "SELECT amount FROM {schema}.usage_outbox WHERE op_id = %s", op_id) == (
                amount,)
        return {"account": debit, "amount": amount}
    if name == "transfer_credits":
        return dict(zip(("payer", "payee", "amount"), ledger))
    if name == "increment_counter":
        (counter,) = row_of(admin, schema, "SELECT counter_id FROM {schema}.counter_ops WHERE op_id = %s", op_id)
        return {"counter": counter}
    if name == "enqueue_job":
        [level] = [n for n, priority in enumerate(PRIORITIES, 1)
                   if any(job.startswith(str(op_id).encode()) for job in client.lrange(keys("queue", priority), 0, -1))]
        return {"level": level}
    if name == "take_job":
        [(job, level)] = [(fields[b"job"].decode(), int(fields[b"level"]))
                          for _, fields in client.xrange(keys("queue", "log"))
                          if fields.get(b"consumer") == str(op_id).encode() and fields[b"event"] == b"dequeue"]
        return {"job": job, "level": level}
    if name in ("update_plan", "write_plan_step"):
        [team] = [int(fields[b"team"]) for _, fields in client.xrange(keys("plan", "log"))
                  if fields[b"step"] == str(op_id).encode()]
        assert client.hget(keys("plan", team), "last_step") == str(op_id).encode()
        return {"team": team}
    if name == "list_append":  # the key slots its elements were appended to ("<slot>.<generation>")
        rows = admin.execute(sql.SQL("SELECT key, elements FROM {}.append_lists").format(sql.Identifier(schema)))
        return {"appended": sorted(int(key.split(".")[0]) for key, elements in rows
                                   for element in elements if element.startswith(op_id.hex[:12]))}
    return {}  # the tools taking none: they succeeded, the audits check what they did


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


def embedded_postgres_dsn(pgdata: str) -> str:
    """The DSN of the embedded PostgreSQL running on `pgdata`: its Unix socket and port, as its
    postmaster.pid says (lines 4 and 5), user postgres, trust."""
    lines = (Path(pgdata) / "postmaster.pid").read_text().splitlines()
    return psycopg.conninfo.make_conninfo(host=lines[4], port=lines[3], user="postgres", dbname="postgres")


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
        where = kwargs["path"] if "path" in kwargs else (kwargs.get("host", "localhost"), kwargs.get("port", 6379))
        super().__init__(where)
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


@contextlib.contextmanager
def judged_load(servers, settings, agents: int, infos: Sequence[Any] = ()) -> Iterator[tuple[Coordinator, Load]]:
    """A test's run without `locust`: the coordinator (its servers opened, the run begun, seed 7)
    and a load of `agents` agents started on the same servers; the coordinator closed at the end."""
    coordinator = Coordinator(settings, servers.pg_dsn, servers.redis_url, list(infos))
    load = Load(settings, EventHook(), 0)
    load.pg_dsn, load.redis_url = servers.pg_dsn, servers.redis_url
    coordinator.open()
    try:
        coordinator.begin(agents, lambda: agents, seed=7)
        assert load.start(agents, seed=7) is None
        yield coordinator, load
    finally:
        coordinator.close()
