"""update_plan against the real Redis when a connection dies at the worst moment: the server
applied EXEC, the agent never heard of it, and redis-py reports a WatchError that is retried."""

from __future__ import annotations

from functools import partial

import gevent
import redis

from db.adapter import ToolAdapter
from db.call_record import Outcome
from db.errors import Failure
from db.redis_keys import RedisKeys
from db.retry import RetryPolicy
from db.tool import Tool
from tasks.agent_state import audit_agent_state, update_plan
from tests.support import Recorder, ReplyLosingProxy, acknowledged_from, context_for

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
        for team in range(1, teams + 1):
            version = int(direct.hget(keys("plan", team), "version") or 0)
            assert version == direct.scard(keys("plan", team, "steps")), f"team {team}"
        applied = direct.smismember(keys("plan", "all_steps"), [str(r.op_id) for r in records])
        assert all(applied) and direct.scard(keys("plan", "all_steps")) == len(records)

        acknowledged = acknowledged_from(records)
        checks = audit_agent_state(context_for(admin, schema, lambda tools: acknowledged, direct), teams=teams)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
