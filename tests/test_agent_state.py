"""update_plan against the real Redis when a connection dies at the worst moment (the server
applied EXEC, the agent never heard of it), and its audit when another session changes the
plans behind the agents' backs."""

from __future__ import annotations

import uuid

import gevent
import pytest
import redis
from psycopg import sql

from db.audits import Check
from db.durations import NO_TIME
from db.errors import Failure
from db.redis_keys import RedisKeys
from db.tool import Transaction
from tasks.agent_state import audit_agent_state, drain_plan_log, update_plan
from tests.support import Recorder, ReplyLosingProxy, acknowledged_from, built_in_tool, context_for, prepared_schema
from transport.call_record import Outcome
from transport.in_process import ToolAdapter
from transport.retry import RetryPolicy

_EXEC = b"$4\r\nEXEC\r\n"  # how the EXEC of a MULTI block goes over the wire
ONE_ATTEMPT = RetryPolicy(max_tries=1)
QUICK = RetryPolicy(max_tries=20, base_s=0.001, cap_s=0.01)


class _GoneAfterALostReply(ReplyLosingProxy):
    """Loses the reply of the first EXEC, then every reply after it: Redis is unreachable from
    the moment it applied that EXEC."""

    def _reply(self, data: bytes, connection: dict) -> bool:
        return not self.lost and super()._reply(data, connection)


def _plan_changes(client: redis.Redis, schema: str, policy: RetryPolicy, *, agents: int, calls_each: int,
                  teams: int, recorder: Recorder) -> None:
    """`agents` agents make `calls_each` update_plan calls each through the adapter, on `client`."""
    plan_change = built_in_tool("update_plan", schema, teams=teams)
    # A Redis tool borrows no PostgreSQL connection: no pool.
    adapter = ToolAdapter(None, client, policy, NO_TIME, recorder.call_finished)

    def agent(number: int) -> None:
        for call in range(calls_each):
            adapter.call(plan_change, f"agent-{number}", seed=number * 1000 + call)

    gevent.joinall([gevent.spawn(agent, n) for n in range(agents)], timeout=30, raise_error=True)


def _log(client: redis.Redis, schema: str) -> list[tuple[str, int]]:
    """The plans' log in Redis: (step, team) in stream order."""
    return [(fields[b"step"].decode(), int(fields[b"team"]))
            for _, fields in client.xrange(RedisKeys(schema)("plan", "log"))]


def test_a_lost_exec_reply_is_settled_from_the_server_even_on_the_last_attempt(servers, admin, schema):
    """Before: the last attempt's lost EXEC reply was a WatchError, the call reported failed
    although its change was in the plan (failed_but_applied). Now the agent's applied_by key
    says it was applied: the call succeeded, with the version it wrote."""
    teams, agents, calls_each, losses = 2, 4, 10, 3
    recorder = Recorder()
    with ReplyLosingProxy(servers.redis_url, (_EXEC,), losses) as proxy, proxy.client() as client:
        _plan_changes(client, schema, ONE_ATTEMPT, agents=agents, calls_each=calls_each, teams=teams,
                      recorder=recorder)
    assert proxy.lost == losses
    records = recorder.records
    assert len(records) == agents * calls_each
    succeeded = [r for r in records if r.outcome is Outcome.SUCCEEDED]
    # A call failed only on a real conflict, which applied nothing.
    assert all(r.outcome is Outcome.FAILED and r.failures == [Failure.REDIS_WATCH_CONFLICT]
               for r in records if r not in succeeded), [(r.outcome, r.failures) for r in records]

    with redis.Redis.from_url(servers.redis_url) as direct:
        log = _log(direct, schema)
        # Exactly the succeeded calls' steps, each once, and each at the version it was told.
        assert sorted(step for step, _ in log) == sorted(str(r.op_id) for r in succeeded)
        for team in range(1, teams + 1):
            steps = [step for step, t in log if t == team]
            told = {str(r.op_id): r.value["version"] for r in succeeded if r.value["team"] == team}
            assert [told[step] for step in steps] == list(range(1, len(steps) + 1)), f"team {team}"
        prepared_schema(admin, schema)
        checks = audit_agent_state(context_for(admin, schema, lambda tools: acknowledged_from(records), direct),
                                   teams=teams)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_a_lost_exec_reply_whose_settling_read_fails_too_is_indeterminate(servers, admin, schema):
    recorder = Recorder()
    with _GoneAfterALostReply(servers.redis_url, (_EXEC,), 1) as proxy, proxy.client() as client:
        _plan_changes(client, schema, QUICK, agents=1, calls_each=1, teams=1, recorder=recorder)
    [record] = recorder.records
    assert record.outcome is Outcome.INDETERMINATE and record.failures == [Failure.CONNECTION_LOST], record
    assert isinstance(record.exception, redis.ConnectionError)
    with redis.Redis.from_url(servers.redis_url) as direct:
        assert _log(direct, schema) == [(str(record.op_id), 1)], "the server had applied it"
        prepared_schema(admin, schema)
        checks = audit_agent_state(context_for(admin, schema, lambda tools: acknowledged_from([record]), direct),
                                   teams=1)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_an_attempt_finding_its_call_applied_returns_the_version_that_call_wrote(servers, schema):
    """An earlier attempt's EXEC that reached the server after the settling read: the next
    attempt finds the step under its WATCH and writes nothing."""
    keys, op_id = RedisKeys(schema), uuid.uuid4()
    with redis.Redis.from_url(servers.redis_url) as client:
        client.set(keys("plan", "applied_by", "agent-1"), f"{op_id} 7")
        client.hset(keys("plan", 1), "version", 7)
        value = update_plan(Transaction(op_id, "agent-1", None, None, client), team=1, keys=keys)
        assert value == {"team": 1, "version": 7}
        assert client.hget(keys("plan", 1), "version") == b"7" and client.xlen(keys("plan", "log")) == 0


class _HalfDrained:
    """Plans changed by agents, drained so far into plan_log, changed again: the audit sees
    changes in PostgreSQL and in Redis."""

    def __init__(self, admin, schema: str, client: redis.Redis) -> None:
        self.client, self.keys, self.recorder = client, RedisKeys(schema), Recorder()
        self._admin, self._schema = admin, schema

    def changes(self, calls_each: int = 10) -> None:
        _plan_changes(self.client, self._schema, QUICK, agents=4, calls_each=calls_each, teams=2,
                      recorder=self.recorder)

    def context(self):
        return context_for(self._admin, self._schema, lambda tools: acknowledged_from(self.recorder.records),
                           self.client)

    def failed(self) -> dict[str, Check]:
        return {c.name: c for c in audit_agent_state(self.context(), teams=2) if not c.ok}


@pytest.fixture
def plans_half_drained(servers, admin, schema):
    prepared_schema(admin, schema)
    with redis.Redis.from_url(servers.redis_url) as client:
        plans = _HalfDrained(admin, schema, client)
        plans.changes()
        assert drain_plan_log(plans.context()) == 40 and client.xlen(plans.keys("plan", "log")) == 0
        plans.changes()
        assert client.xlen(plans.keys("plan", "log")) == 40
        assert plans.failed() == {}
        yield plans


def test_a_step_of_no_call_logged_before_a_drain_is_caught(plans_half_drained):
    """Consistent in every way but its identity: the step in the log and the plan's version raised."""
    plans, ghost = plans_half_drained, str(uuid.uuid4())
    plans.client.xadd(plans.keys("plan", "log"), {"step": ghost, "team": 1})
    plans.client.hincrby(plans.keys("plan", 1), "version", 1)
    plans.changes()  # the next changes take the versions after the ghost's
    failed = plans.failed()
    assert set(failed) == {"plan_steps_within_acknowledged"}
    invented = failed["plan_steps_within_acknowledged"]
    assert invented.observed == 1 and ghost in invented.detail


def test_a_step_deleted_from_plan_log_after_its_drain_is_lost(plans_half_drained, admin, schema):
    """The first change of a team deleted: every later change of that team is one place earlier
    in the log than the version it was told."""
    plans = plans_half_drained
    lost, team = admin.execute(sql.SQL("DELETE FROM {} WHERE (stream_ms, stream_seq) = (SELECT stream_ms, stream_seq"
                                       " FROM {} ORDER BY stream_ms, stream_seq LIMIT 1) RETURNING op_id, team").format(
        sql.Identifier(schema, "plan_log"), sql.Identifier(schema, "plan_log"))).fetchone()
    failed = plans.failed()
    assert set(failed) == {"plan_steps_not_lost", "plan_version_counts_changes", "plan_versions_in_log_order"}
    assert failed["plan_steps_not_lost"].anomaly == "lost_updates" and failed["plan_steps_not_lost"].anomaly_count == 1
    assert str(lost) in failed["plan_steps_not_lost"].detail
    assert f"team {team} at version" in failed["plan_version_counts_changes"].detail
    of_team = [r for r in plans.recorder.records if r.outcome is Outcome.SUCCEEDED and r.value["team"] == team]
    assert failed["plan_versions_in_log_order"].observed == len(of_team)  # the lost one, and each after it
    assert f"call {lost} wrote team {team}'s version 1, not in plan_log" in failed["plan_versions_in_log_order"].detail


def test_a_plan_version_set_back_is_reused_by_every_change_after_it(plans_half_drained):
    """As after a failover to a replica that missed the last HSET but not the log's entry: the
    next writer is given the version of the change before it again."""
    plans = plans_half_drained
    before = len(plans.recorder.records)
    plans.client.hincrby(plans.keys("plan", 1), "version", -1)
    plans.changes()
    failed = plans.failed()
    assert set(failed) == {"plan_versions_in_log_order", "plan_version_counts_changes"}
    after = [r for r in plans.recorder.records[before:] if r.outcome is Outcome.SUCCEEDED and r.value["team"] == 1]
    assert after and failed["plan_versions_in_log_order"].observed == len(after)
    assert failed["plan_version_counts_changes"].detail.startswith("team 1 at version")


def test_two_calls_at_once_of_one_agent_keep_their_resend_guards_apart(servers, schema):
    """A turn's two update_plan calls of one agent run at once, in two lanes: each settles a send
    again from its own lane's last step. Under one key per agent the second overwrote the first's,
    and the first, sent again after a lost reply, was applied a second time."""
    keys, first, second = RedisKeys(schema), uuid.uuid4(), uuid.uuid4()
    with redis.Redis.from_url(servers.redis_url) as client:
        def send(op_id: uuid.UUID, lane: str) -> dict:
            return update_plan(Transaction(op_id, "agent-1", None, None, client, lane=lane), team=1, keys=keys)

        applied = send(first, "agent-1/0")
        send(second, "agent-1/1")
        assert send(first, "agent-1/0") == applied, "answered the version it wrote, not applied again"
        assert client.xlen(keys("plan", "log")) == 2 and client.hget(keys("plan", 1), "version") == b"2"
