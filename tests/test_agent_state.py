"""update_plan against the real Redis when a connection dies at the worst moment: the server
applied EXEC, the agent never heard of it, and redis-py reports a WatchError that is retried."""

from __future__ import annotations

import uuid
from functools import partial

import gevent
import pytest
import redis
from psycopg import sql

from db.adapter import ToolAdapter
from db.audits import Check
from db.call_record import Outcome
from db.errors import Failure
from db.redis_keys import RedisKeys
from db.retry import RetryPolicy
from db.tool import Tool
from tasks.agent_state import audit_agent_state, drain_plan_log, update_plan
from tests.support import Recorder, ReplyLosingProxy, acknowledged_from, context_for, prepared_schema

_EXEC = b"$4\r\nEXEC\r\n"  # how the EXEC of a MULTI block goes over the wire


def test_a_lost_exec_reply_is_retried_without_applying_the_change_twice(servers, admin, schema):
    teams, agents, calls_each, losses = 2, 4, 10, 3
    keys = RedisKeys(schema)
    recorder = Recorder()
    plan_change = Tool("update_plan", partial(update_plan, keys=keys, teams=teams), backend="redis")
    with ReplyLosingProxy(servers.redis_url, (_EXEC,), losses) as proxy, proxy.client() as client:
        # A Redis tool borrows no PostgreSQL connection: no pool.
        adapter = ToolAdapter(None, client, RetryPolicy(max_tries=20, base_s=0.001, cap_s=0.01), 0.0,
                              recorder.request, recorder.call_finished)

        def agent(number: int) -> None:
            for call in range(calls_each):
                adapter.call(plan_change, f"agent-{number}", seed=number * 1000 + call)

        gevent.joinall([gevent.spawn(agent, n) for n in range(agents)], timeout=30, raise_error=True)
    assert proxy.lost == losses
    records = recorder.records
    assert len(records) == agents * calls_each
    assert all(r.outcome is Outcome.SUCCEEDED for r in records), [(r.outcome, r.failures) for r in records]
    assert sum(Failure.REDIS_WATCH_CONFLICT in r.failures for r in records) >= losses

    with redis.Redis.from_url(servers.redis_url) as direct:
        log = [fields for _, fields in direct.xrange(keys("plan", "log"))]
        for team in range(1, teams + 1):
            version = int(direct.hget(keys("plan", team), "version") or 0)
            assert version == sum(fields[b"team"] == str(team).encode() for fields in log), f"team {team}"
        # Each call's step exactly once: none lost, none applied twice by a retry.
        assert sorted(fields[b"step"].decode() for fields in log) == sorted(str(r.op_id) for r in records)

        prepared_schema(admin, schema)
        checks = audit_agent_state(context_for(admin, schema, lambda tools: acknowledged_from(records), direct),
                                   teams=teams)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


@pytest.fixture
def plans_half_drained(servers, admin, schema):
    """Agents change the plans, the coordinator's drain moves the log so far into plan_log, and
    the agents go on: the audit sees changes in PostgreSQL and in Redis. Yields
    (audit, another session's Redis client)."""
    teams, keys, recorder = 2, RedisKeys(schema), Recorder()
    prepared_schema(admin, schema)
    plan_change = Tool("update_plan", partial(update_plan, keys=keys, teams=teams), backend="redis")
    with redis.Redis.from_url(servers.redis_url) as client:
        adapter = ToolAdapter(None, client, RetryPolicy(max_tries=20, base_s=0.001, cap_s=0.01), 0.0,
                              recorder.request, recorder.call_finished)

        def agents(first_call: int) -> None:
            def agent(number: int) -> None:
                for call in range(first_call, first_call + 10):
                    adapter.call(plan_change, f"agent-{number}", seed=number * 1000 + call)
            gevent.joinall([gevent.spawn(agent, n) for n in range(4)], timeout=30, raise_error=True)

        def context():
            return context_for(admin, schema, lambda tools: acknowledged_from(recorder.records), client)

        agents(0)
        assert drain_plan_log(context()) == 40 and client.xlen(keys("plan", "log")) == 0
        agents(10)
        assert client.xlen(keys("plan", "log")) == 40

        def audit() -> dict[str, Check]:
            return {c.name: c for c in audit_agent_state(context(), teams=teams)}

        assert [c for c in audit().values() if not c.ok] == []
        yield audit, client


def test_a_step_of_no_call_logged_before_a_drain_is_caught(plans_half_drained, schema):
    """Consistent in every way but its identity: the step in the log and the plan's version raised."""
    audit, client = plans_half_drained
    keys, ghost = RedisKeys(schema), str(uuid.uuid4())
    client.xadd(keys("plan", "log"), {"step": ghost, "team": 1})
    client.hincrby(keys("plan", 1), "version", 1)
    failed = {name: c for name, c in audit().items() if not c.ok}
    assert set(failed) == {"plan_steps_within_acknowledged"}
    assert failed["plan_steps_within_acknowledged"].observed == 1 and ghost in failed["plan_steps_within_acknowledged"].detail


def test_a_step_deleted_from_plan_log_after_its_drain_is_lost(plans_half_drained, admin, schema):
    audit, _ = plans_half_drained
    lost, team = admin.execute(sql.SQL("DELETE FROM {} WHERE (stream_ms, stream_seq) = (SELECT stream_ms, stream_seq"
                                       " FROM {} ORDER BY stream_ms, stream_seq LIMIT 1) RETURNING op_id, team").format(
        sql.Identifier(schema, "plan_log"), sql.Identifier(schema, "plan_log"))).fetchone()
    failed = {name: c for name, c in audit().items() if not c.ok}
    assert set(failed) == {"plan_steps_not_lost", "plan_version_counts_changes"}
    assert failed["plan_steps_not_lost"].anomaly == "lost_updates" and failed["plan_steps_not_lost"].anomaly_count == 1
    assert str(lost) in failed["plan_steps_not_lost"].detail
    assert f"team {team} at version" in failed["plan_version_counts_changes"].detail
