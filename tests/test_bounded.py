"""What a run leaves on Redis stays bounded: through the real `locust` command, a run long
enough for many drains is watched from another session while it runs. The logs and the set
of applied charges never hold more than a few drains' worth, however many calls were made; the
audits, reading what the drains moved into PostgreSQL, still pass with every call counted."""

from __future__ import annotations

import time
from typing import Any

import redis
from psycopg import sql

from db.redis_keys import RedisKeys
from tests.support import read_report, rows_in, wait_until

AGENTS, TEAMS = 20, 4
RUN = ("--users", str(AGENTS), "--spawn-rate", str(AGENTS), "--run-time", "10s", "--pool-size", "10",
       "--scenario", "queue,cross_service,agent_state", "--teams", str(TEAMS), "--sample-interval", "1")
# What each growing key held at most, against what the run moved through it: with a drain every
# second of a 10 s run, a few drains' worth at most (the old code kept all of it: a ratio of 1).
MOST_OF_THE_WHOLE = 0.25
# The run's keys: the queue's three levels, processing and log; usage and its guard set; the
# plans, their log; and, per agent, the last step it applied, the last charge the relay applied
# for it, and the last job it queued and acknowledged (a call sent again applies once).
MOST_KEYS = 3 + 2 + 2 + TEAMS + 1 + 4 * AGENTS


def _sizes(client: redis.Redis, keys: RedisKeys) -> dict[str, int]:
    """Every key of the run and how many entries, members or fields it holds now."""
    size_of = {b"stream": client.xlen, b"set": client.scard, b"hash": client.hlen, b"list": client.llen,
               b"string": lambda key: 1}
    sizes = {}
    for key in client.scan_iter(match=keys.prefix + "*", count=1000):
        kind = client.type(key)
        if kind in size_of:
            sizes[key.decode().removeprefix(keys.prefix)] = size_of[kind](key)
    return sizes


def test_redis_stays_bounded_and_the_audits_count_every_call(servers, admin, schema, tmp_path, locust):
    keys, path = RedisKeys(schema), tmp_path / "report.json"
    largest: dict[str, int] = {}  # per key, the most it held while the run went on
    most_keys = samples = 0
    with redis.Redis.from_url(servers.redis_url) as watcher, locust.background(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema, *RUN,
        "--report-json", str(path),
    ) as run:
        wait_until(lambda: watcher.exists(keys("queue", "log")), "the first calls", still=run.running)
        while run.running():
            sizes = _sizes(watcher, keys)
            most_keys = max(most_keys, len(sizes))
            for key, size in sizes.items():
                largest[key] = max(largest.get(key, 0), size)
            samples += 1
            time.sleep(0.1)
        done = run.finish()
        left = _sizes(watcher, keys)
    report = read_report(path)
    assert done.returncode == report["exit_code"] == 0 and report["verdict"] == "pass", done.stdout[-3000:]
    assert samples > 50, "the run must have been watched while it went on"

    moved = {table: rows_in(admin, schema, table) for table in ("queue_log", "plan_log", "usage_applied")}
    assert min(moved.values()) > 1000, moved  # enough calls that keeping them all would show
    for key, table in (("queue:log", "queue_log"), ("plan:log", "plan_log"), ("usage:applied", "usage_applied")):
        assert 0 < largest[key] < MOST_OF_THE_WHOLE * moved[table], (key, largest[key], moved[table])
    # Nothing else grows with the calls: no key holds more than the agents, the queue or the
    # fields of a plan, and there are no more keys than those the run's design allows.
    growing = {key: size for key, size in largest.items() if key not in ("queue:log", "plan:log", "usage:applied")
               and size > max(AGENTS, 50)}
    assert growing == {}, growing
    assert most_keys <= MOST_KEYS, sorted(largest)
    # The audits drained to the end: the logs and the guard set are empty.
    assert {key: left.get(key, 0) for key in ("queue:log", "plan:log", "usage:applied")} == dict.fromkeys(
        ("queue:log", "plan:log", "usage:applied"), 0)

    _every_call_counted(report, admin, schema, moved)


def _every_call_counted(report: dict[str, Any], admin, schema: str, moved: dict[str, int]) -> None:
    checks = {c["name"]: c for c in report["audit"]["checks"]}
    tools = report["tools"]

    def logged(event: str) -> int:
        return admin.execute(sql.SQL("SELECT count(*) FROM {} WHERE event = %s").format(
            sql.Identifier(schema, "queue_log")), (event,)).fetchone()[0]

    def between(figure: int, tool: str) -> bool:
        """Every succeeded call's, and maybe some of the indeterminate and cut-off ones'."""
        figures = tools[tool]
        return figures["succeeded"] <= figure <= figures["succeeded"] + figures["indeterminate"] + figures["cut_off"]

    enqueued = logged("enqueue")
    assert checks["acknowledged_jobs_enqueued"]["expected"] == checks["acknowledged_jobs_enqueued"]["observed"] \
        == tools["enqueue_job"]["succeeded"]
    assert checks["jobs_accounted_for"]["expected"] == enqueued and between(enqueued, "enqueue_job")
    assert logged("dequeue") == logged("ack") > 0
    assert checks["plan_steps_not_lost"]["observed"] == tools["update_plan"]["succeeded"]
    assert between(moved["plan_log"], "update_plan")
    assert checks["usage_applied_by_identity"]["expected"] == checks["usage_applied_by_identity"]["observed"] \
        == moved["usage_applied"] == rows_in(admin, schema, "usage_outbox")
    assert between(moved["usage_applied"], "charge_usage")
    assert checks["charges_in_outbox"]["observed"] == tools["charge_usage"]["succeeded"]
