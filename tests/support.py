"""Helpers shared by the tests: a prepared schema, an adapter on it, the `locust` command."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import psycopg
from locust.event import EventHook

from db import schema as run_schema
from db.adapter import ToolAdapter
from db.audits import Acknowledged, AuditContext
from db.redis_keys import RedisKeys
from db.pool import SessionSettings, open_pool
from db.retry import RetryPolicy
from harness.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))


def prepared_schema(admin: psycopg.Connection, schema: str, accounts: int = 10, balance: int = 1000) -> None:
    run_schema.prepare(admin, schema, reset=False)
    run_schema.begin_run(admin, schema, "test", accounts=accounts, initial_balance=balance, counters=4)


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


def own_master_port() -> list[str]:
    """Options giving a distributed run a master port of its own: other test runs on this machine
    may hold Locust's default 5557, and workers must not join another run's master."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    return ["--master-bind-port", port, "--master-port", port]


def run_locust(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `locust` command, from the project's directory (so locust.conf applies); a run
    with --processes gets a master port of its own."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "TOOLCLASH_"))}
    full_env.update(env or {})
    if "--processes" in args and "--master-bind-port" not in args:
        args = (*args, *own_master_port())
    return subprocess.run(
        [LOCUST, "--headless", "--only-summary", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def settings_from(*args: str):
    """toolclash Settings parsed from command-line words, as the locust process parses them."""
    from locust.argument_parser import get_parser

    from harness.options import Settings, add_arguments

    parser = get_parser()
    add_arguments(parser)
    return Settings.from_options(parser.parse_args(list(args)))


def context_for(conn: psycopg.Connection, schema: str, acknowledged_of, redis_client=None, findings=(),
                metrics: Metrics | None = None) -> AuditContext:
    """An audit's context on the test's own session; what the audit observes goes to `metrics`."""
    return AuditContext(conn, schema, redis_client, RedisKeys(schema), acknowledged_of,
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
