"""Faults: the harness's own sessions outlive them, and --chaos injects them on purpose. A healthy
server still passes the audit; only a server that stays unreachable ends the run with exit 2."""

from __future__ import annotations

import time

import gevent
import psycopg
import pytest
import redis

from db.session import Session, SessionLost
from harness.config.option import BadOption
from harness.verdict.coordinator import Coordinator
from tests.support import read_report, settings_from, wait_until

SHORT_RUN = ("--users", "20", "--spawn-rate", "20", "--run-time", "8s")


def _sessions_killed(admin) -> int:
    """The server's own count of sessions of this database terminated by another session."""
    admin.execute("SELECT pg_stat_clear_snapshot()")
    return admin.execute("SELECT sessions_killed FROM pg_stat_database WHERE datname = current_database()"
                         ).fetchone()[0]


def _backend_of(admin, application_name: str) -> int:
    return admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                         (application_name,)).fetchone()[0]


def test_a_chaos_run_passes_the_audit_of_a_healthy_server(servers, admin, schema, tmp_path, locust):
    path = tmp_path / "report.json"
    killed_before = _sessions_killed(admin)
    done = locust.run(*servers.args(schema), *SHORT_RUN, "--chaos", "pg-kill:1s,redis-kill:1s:100%",
                      "--report-json", str(path))
    report = read_report(path)
    assert done.returncode == report["exit_code"] == 0, (done.stdout[-3000:], done.stderr[-2000:])
    assert report["audit"]["ok"], "; ".join(f"{c['name']}: expected {c['expected']}, observed {c['observed']}"
                                            f" ({c['detail']})" for c in report["audit"]["checks"] if not c["ok"])
    assert report["verdict"] == "pass"

    kinds = {fault["kind"] for fault in report["faults"]}
    assert kinds == {"pg-kill", "redis-kill"}
    assert all(0 <= f["hit"] <= f["targets"] and 0 < f["at_s"] <= 9 for f in report["faults"])
    ended = sum(f["hit"] for f in report["faults"] if f["kind"] == "pg-kill")
    assert ended > 0 and sum(f["hit"] for f in report["faults"] if f["kind"] == "redis-kill") > 0
    # The server counted the terminations itself (sessions_killed); nothing the harness did not.
    assert _sessions_killed(admin) - killed_before >= ended
    assert report["conflicts"]["connection_errors"] > 0, "agents met the terminated backends"
    assert "faults: pg-kill x" in done.stdout and "connection_errors=" in done.stdout


def test_the_builtin_tool_server_killed_and_started_again_passes_by_identity(servers, admin, schema, tmp_path,
                                                                             locust):
    """--chaos mcp-kill in the session era: every kill ends the agents' sessions (renewed on the
    404) and cuts the calls in flight, which are sent again with their op ids; the audits still
    hold every acknowledged call by identity, and the verdict is PASS."""
    path = tmp_path / "report.json"
    done = locust.run(*servers.args(schema), *SHORT_RUN, "--mcp-server", "builtin", "--mcp-era", "session",
                      "--chaos", "mcp-kill:2s", "--sla", "sla/without_latency.toml", "--report-json", str(path))
    report = read_report(path)
    assert done.returncode == report["exit_code"] == 0 and report["verdict"] == "pass", (
        done.stdout[-3000:], done.stderr[-2000:])
    assert report["audit"]["ok"] and report["evidence"]["problems"] == [] and report["errors"] == 0
    assert {"acknowledged_in_ledger", "ledger_within_acknowledged", "dequeues_in_log"} <= {
        check["name"] for check in report["audit"]["checks"]}, "judged by identity"
    kills = report["faults"]
    assert len(kills) >= 2 and all((f["kind"], f["targets"], f["hit"]) == ("mcp-kill", 1, 1) for f in kills)
    assert all(0 < f["down_s"] < 5 for f in kills)
    mcp = report["transport"]["mcp"]
    assert mcp["sessions"]["renewed"] > 0, "the killed server's sessions were unknown to the new one"
    # Requests sent again beyond the sessions renewed: calls whose replies the kills cut.
    assert mcp["reissues"] > mcp["sessions"]["renewed"] and report["conflicts"]["connection_errors"] > 0
    assert report["server_counters"]["load_sessions_left"] == 0
    assert "faults: mcp-kill x" in done.stdout and "tool servers killed" in done.stdout


def test_a_run_whose_every_session_is_killed_again_and_again_ends_with_a_verdict(servers, schema, tmp_path, locust):
    """Another session terminates all the run's backends, the coordinator's, the sampler's and
    the drain's too, and kills all its Redis clients, every 2 s, until the run is over: its
    sessions reconnect, its drains and audits run again."""
    hit: set[str] = set()
    redis_hit: set[str] = set()
    running = True

    def kill_the_run_every_2_s() -> None:
        with psycopg.connect(servers.pg_dsn, autocommit=True) as conn, redis.Redis.from_url(servers.redis_url) as r:
            while running:
                gevent.sleep(2)
                for client in r.client_list(_type="normal"):
                    if client["name"].startswith("toolclash-") and client["name"].split(":")[1] == schema:
                        redis_hit.add(client["name"].split(":")[0])
                        r.client_kill_filter(_id=client["id"])
                # Materialized: the run's backends are chosen before any is terminated.
                rows = conn.execute(
                    "WITH run AS MATERIALIZED (SELECT pid, application_name FROM pg_stat_activity"
                    " WHERE application_name LIKE 'toolclash-%%' AND split_part(application_name, ':', 2) = %s)"
                    " SELECT application_name FROM run WHERE pg_terminate_backend(pid)", (schema,)
                ).fetchall()
                hit.update(name.split(":")[0] for (name,) in rows)

    killer = gevent.spawn(kill_the_run_every_2_s)
    path = tmp_path / "report.json"
    try:
        done = locust.run(*servers.args(schema), *SHORT_RUN, "--report-json", str(path))
    finally:
        running = False
        killer.join()
    assert hit >= {"toolclash-coordinator", "toolclash-sampler", "toolclash-drain", "toolclash-load"}, hit
    assert redis_hit >= {"toolclash-coordinator", "toolclash-load"}, redis_hit
    assert done.returncode != 2, done.stderr[-3000:]
    report = read_report(path)
    assert done.returncode == report["exit_code"] and report["verdict"] in ("pass", "fail")
    assert report["audit"]["ok"], "; ".join(f"{c['name']}: expected {c['expected']}, observed {c['observed']}"
                                            f" ({c['detail']})" for c in report["audit"]["checks"] if not c["ok"])
    assert "toolclash-coordinator:" + schema + ": connection lost" in done.stderr


def test_a_worker_stopped_on_purpose_is_lost_and_the_run_fails(servers, schema, tmp_path, locust):
    path = tmp_path / "report.json"
    done = locust.run(*servers.args(schema), "--users", "10", "--spawn-rate", "10", "--run-time", "10s",
                      "--processes", "2", "--chaos", "worker-stop:4s", "--report-json", str(path), timeout=180)
    report = read_report(path)
    [fault] = report["faults"]  # the last worker is never stopped
    assert fault["kind"] == "worker-stop" and fault["hit"] == 1 and fault["at_s"] >= 4
    [lost] = report["workers"]["lost"]
    assert lost["worker"] == fault["worker"] and lost["worker"] in report["workers"]["shipped"]
    # Its calls since its last shipment have unknown outcomes: no verdict may pass on that.
    assert report["verdict"] == "fail" and done.returncode == report["exit_code"] == 1, done.stderr[-2000:]
    assert "worker_lost" in {problem["kind"] for problem in report["evidence"]["problems"]}


@pytest.mark.parametrize(
    "value, says",
    [
        ("pg-kill", "kind:every[:share]"),
        ("pg-kill:fast", "seconds or milliseconds"),
        ("pg-kill:100ms", "at most one fault of a kind every 0.5 s"),
        ("redis-kill:2s:150%", "a percentage above 0"),
        ("disk-full:2s", "unknown fault 'disk-full'"),
        ("worker-stop:5s", "needs workers"),
        ("mcp-kill:2s:50%", "mcp-kill kills the one tool server each time, it takes no share"),
        ("mcp-kill:200ms", "at most one fault of a kind every 0.5 s"),
    ],
)
def test_a_bad_chaos_value_is_one_line_and_exit_2(value, says):
    """Refused by the settings parser, in one line; tests/test_bad_input.py runs a refused option
    for real (one line, exit code 2, no traceback)."""
    with pytest.raises(BadOption) as refused:
        settings_from("--users", "2", "--run-time", "2s", "--chaos", value)
    [line] = str(refused.value).splitlines()
    assert "--chaos" in line and says in line


def test_a_coordinator_session_lost_comes_back_holding_the_schema(servers, admin, schema):
    coordinator = Coordinator(settings_from("--schema", schema), servers.pg_dsn, servers.redis_url, [])
    coordinator.open()
    try:
        name = f"toolclash-coordinator:{schema}"
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_of(admin, name),))
        assert coordinator.connections_refused(2, 1) is None, "ran again on a new session"
        # The lock went with the lost session; the new one took it again.
        lock = f"toolclash:{schema}"
        assert admin.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock,)).fetchone()[0] is False

        # Lost again, and another session takes the schema meanwhile: that is the end of the run.
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_of(admin, name),))
        time.sleep(0.2)
        admin.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock,))
        with pytest.raises(SessionLost, match="another toolclash run claimed schema"):
            coordinator.connections_refused(2, 1)
    finally:
        admin.execute("SELECT pg_advisory_unlock_all()")
        coordinator.close()


def test_a_server_unreachable_past_the_limit_ends_the_work_with_one_line():
    session = Session("postgresql://postgres@127.0.0.1:1/test", "toolclash-test", limit_s=0.5)
    started = time.monotonic()
    with pytest.raises(SessionLost) as lost:
        session.run(lambda conn: conn.execute("SELECT 1"))
    assert 0.5 <= time.monotonic() - started < 5
    assert str(lost.value).startswith("PostgreSQL unreachable for 0.5 s (session toolclash-test):")
    assert "\n" not in str(lost.value)


def test_work_that_fails_on_its_own_is_not_run_again(servers):
    session = Session(servers.pg_dsn, "toolclash-test")
    tries = []

    def divide_by_zero(conn):
        tries.append(1)
        conn.execute("SELECT 1 / 0")

    with pytest.raises(psycopg.errors.DivisionByZero):
        session.run(divide_by_zero)
    session.close()
    assert len(tries) == 1


def test_the_redis_hold_gone_is_taken_again_and_only_another_runs_hold_is_lost(servers, schema):
    """Before: a hold missing after a Redis restart longer than its expiry was "lost to another
    run", and the run failed as keys_lost."""
    from db.redis_keys import RedisClaim, RedisKeys

    with redis.Redis.from_url(servers.redis_url) as client, redis.Redis.from_url(servers.redis_url) as other:
        # Renewed less often than it expires: it expires between two renewals, as in a long restart.
        claim = RedisClaim(client, RedisKeys(schema), "toolclash-coordinator:test", ttl_ms=100, renew_every_s=0.3)
        claim.claim()
        try:
            ours = client.get(claim.key)
            wait_until(lambda: other.get(claim.key) is None, "the hold to expire")
            wait_until(lambda: other.get(claim.key) == ours, "the hold to be taken again")
            other.delete(claim.key)  # wiped, as by a restart without persistence
            wait_until(lambda: other.get(claim.key) == ours, "the hold to be taken again after a wipe")
            assert not claim.lost and claim.take_claimed_again() >= 2
            other.set(claim.key, "toolclash-coordinator:another-run")
            wait_until(lambda: claim.lost, "the hold to be lost to the other run")
            assert other.get(claim.key) == b"toolclash-coordinator:another-run", "another run's hold is left alone"
        finally:
            claim.release()
            other.delete(claim.key)
