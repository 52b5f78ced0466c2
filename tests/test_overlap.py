"""Greenlets really overlap: psycopg waits cooperatively under gevent, as in the locust process.

Run in a subprocess that patches with gevent before psycopg is imported, exactly as `locust`
does, so the proof does not depend on how pytest itself was started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support import ROOT

AGENTS = 50
SLEEP_S = 0.5

_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import json, sys, time
    import gevent, psycopg
    from transport.in_process import ToolAdapter
    from transport.hooks import Hook
    from db.pool import SessionSettings, open_pool, load_application_name
    from transport.retry import RetryPolicy
    from db.tool import Tool
    from db.durations import NO_TIME

    dsn, agents, sleep_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    session = SessionSettings("public")
    pool = open_pool(dsn, session, size=agents, timeout_s=30)
    adapter = ToolAdapter(pool, None, RetryPolicy(), NO_TIME, Hook())
    sleeping_seen = []

    def watch():
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                sleeping_seen.append(conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'",
                    (load_application_name("public"),)).fetchone()[0])
                gevent.sleep(0.05)

    def nap(tx):
        tx.execute("SELECT pg_sleep(%s)", (sleep_s,))

    watcher = gevent.spawn(watch)
    gevent.sleep(0.1)
    started = time.perf_counter()
    calls = [gevent.spawn(adapter.call, Tool("nap", nap), f"a{i}", i) for i in range(agents)]
    gevent.joinall(calls, raise_error=True)
    elapsed = time.perf_counter() - started
    watcher.kill()
    pool.close()
    print(json.dumps({"elapsed": elapsed, "max_sleeping": max(sleeping_seen),
                      "succeeded": sum(g.value.outcome.value == "succeeded" for g in calls)}))
    """
)


def test_fifty_agents_sleeping_in_the_server_overlap(servers):
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, servers.pg_dsn, str(AGENTS), str(SLEEP_S)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["succeeded"] == AGENTS
    # What the server saw: (nearly) all agents inside pg_sleep at the same moment.
    assert result["max_sleeping"] >= AGENTS * 0.8, result
    # Run one after the other they would need AGENTS * SLEEP_S = 25 s.
    assert result["elapsed"] < AGENTS * SLEEP_S / 2, result
