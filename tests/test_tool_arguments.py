"""Tools in two steps: each call's arguments drawn once from its seed, then executed, the same on
every attempt. Every built-in tool against the real servers; a user's tool with and without an
arguments step."""

from __future__ import annotations

import json
import random
import uuid
from contextlib import closing
from dataclasses import replace

import gevent
import pytest
import redis

from db.durations import NO_TIME, constant
from db.errors import Failure, VersionConflict
from db.pool import SessionSettings, open_pool
from db.redis_keys import RedisKeys
from db.tool import Tool, no_arguments, tool
from tasks.scenarios import SCENARIOS, ScenarioParams, built_in_tools
from tasks.user_tools import load_tools_module
from tests.support import (
    PREPARED,
    QUICK_RETRIES,
    Recorder,
    adapter_on,
    built_in_tool,
    holds_what_was_told,
    prepared_schema,
    row_of,
    what_the_servers_hold,
)
from transport.call_record import Outcome
from transport.in_process import ToolAdapter

TOOLS = sorted(built_in_tools(ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys("any"))))
# The tools whose execution takes nothing from the agent: the servers deal their pair, or job.
TAKING_NONE = {"reserve_slot", "summarize_accounts", "dequeue_job", "read_queue"}


def test_every_built_in_tool_is_in_a_scenario():
    params = ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys("any"))
    assert sorted({w.tool.name for s in SCENARIOS.values() for w in s.tools(params)}) == TOOLS


@pytest.mark.parametrize("name", TOOLS)
def test_a_built_in_tools_arguments_are_json_and_the_same_for_the_same_seed(name):
    tool_ = built_in_tools(ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys("any")))[name]
    assert tool_.arguments is not None, "every built-in tool declares its arguments step"
    drawn = [tool_.draw_arguments(seed) for seed in range(200)]
    assert drawn == [tool_.draw_arguments(seed) for seed in range(200)]
    assert json.loads(json.dumps(drawn)) == drawn, "JSON-able: they travel as a tools/call's arguments"
    distinct = {json.dumps(arguments, sort_keys=True) for arguments in drawn}
    assert (distinct == {"{}"}) if name in TAKING_NONE else len(distinct) > 1


def test_each_built_in_tool_executes_the_arguments_drawn_for_its_call(servers, admin, schema):
    prepared_schema(admin, schema)
    recorder = Recorder()
    pool = open_pool(servers.pg_dsn, SessionSettings(schema), size=2, timeout_s=5)
    with pool, redis.Redis.from_url(servers.redis_url) as client:
        adapter = ToolAdapter(pool, client, QUICK_RETRIES, NO_TIME, recorder.call_finished)
        # enqueue_job before dequeue_job: the consumer takes that job.
        for seed, name in enumerate(sorted(TOOLS, key=lambda n: n != "enqueue_job"), 100):
            tool_ = built_in_tool(name, schema, hold_s=0)
            record = adapter.call(tool_, "agent-1", seed)
            assert record.outcome is Outcome.SUCCEEDED, (name, record.exception)
            assert record.arguments == tool_.draw_arguments(seed), name
            held = what_the_servers_hold(name, record.op_id, admin, schema, client)
            assert holds_what_was_told(held, name, record.arguments), (name, held, record.arguments)


def test_a_deadlocked_call_retries_with_the_arguments_it_drew_once(servers, admin, schema):
    """Two transfers between accounts 1 and 2 in opposite directions, each holding its payer
    while it works: one is the deadlock's victim, and its retry moves the same amount again."""
    prepared_schema(admin, schema, accounts=2)
    transfer = built_in_tool("transfer_credits", schema, accounts=2)
    by_payer = {transfer.draw_arguments(seed)["payer"]: seed for seed in range(20)}
    draws, attempts = [], []

    def draw(rng: random.Random) -> dict:
        draws.append(transfer.arguments(rng))
        return draws[-1]

    def run(tx, **arguments):
        attempts.append((tx.op_id, arguments))
        return transfer.run(tx, **arguments)

    watched = replace(transfer, arguments=draw, run=run)
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema, deadlock_timeout_ms=50), recorder,
                               tool_work_s=0.2)
    with closing(pool):
        calls = [gevent.spawn(adapter.call, watched, f"agent-{payer}", by_payer[payer]) for payer in (1, 2)]
        gevent.joinall(calls, timeout=20, raise_error=True)
    records = [call.value for call in calls]
    assert all(r.outcome is Outcome.SUCCEEDED for r in records)
    assert any(Failure.DEADLOCK in r.failures for r in records), "a real deadlock was provoked"
    assert len(draws) == 2, "drawn once per call, not per attempt"
    for record in records:
        mine = [arguments for op_id, arguments in attempts if op_id == record.op_id]
        assert len(mine) == record.attempts and all(arguments == record.arguments for arguments in mine)
        ledger = row_of(admin, schema, "SELECT debit_account, credit_account, amount FROM {schema}.ledger"
                                     " WHERE op_id = %s", record.op_id)
        assert dict(zip(("payer", "payee", "amount"), ledger)) == record.arguments


def _conflicting_once(function):
    """A Redis-backed tool (no connection borrowed; it touches no server) whose first attempt
    conflicts after `function(tx)`: what each attempt computed."""
    computed = []

    def run(tx, **arguments):
        computed.append(function(tx, **arguments))
        if len(computed) == 1:
            raise VersionConflict("someone else was first")
        return computed[-1]

    return run, computed


def test_a_users_plain_tool_without_arguments_still_draws_from_tx_rng():
    run, computed = _conflicting_once(lambda tx: tx.rng.randint(1, 10**9))
    recorder = Recorder()
    record = ToolAdapter(None, None, QUICK_RETRIES, NO_TIME, recorder.call_finished).call(
        Tool("pick", run, backend="redis"), "agent-1", seed=11)
    assert record.outcome is Outcome.SUCCEEDED and record.attempts == 2
    assert record.arguments is None
    assert computed == [random.Random(11).randint(1, 10**9)] * 2, "the same draws on every attempt"


def test_a_tool_that_declares_arguments_executes_from_them_alone():
    recorder = Recorder()
    adapter = ToolAdapter(None, None, QUICK_RETRIES, NO_TIME, recorder.call_finished)
    record = adapter.call(Tool("peeks", lambda tx: tx.rng.random(), "redis", no_arguments), "agent-1", 1)
    assert record.outcome is Outcome.FAILED and record.failures == [Failure.ERROR]
    assert "declares its arguments" in str(record.exception)


def test_a_call_given_its_arguments_and_op_id_executes_them_on_every_attempt_and_waits_as_told():
    """A tool server's call: what the agent drew and named, executed as given (its arguments step
    never runs), every wait (backoff, the tool's work) through the sleep the adapter was given."""
    seen, slept = [], []

    def flaky(tx, *, n):
        seen.append((tx.op_id, n))
        tx.work()
        if len(seen) < 3:
            raise VersionConflict("someone else was first")
        return {"n": n}

    recorder = Recorder()
    adapter = ToolAdapter(None, None, QUICK_RETRIES, constant(0.25), recorder.call_finished, sleep=slept.append)
    op_id = uuid.uuid4()
    record = adapter.call_with(Tool("flaky", flaky, "redis", lambda rng: 1 / 0), "agent-7", {"n": 5}, op_id)
    assert (record.outcome, record.attempts, record.value) == (Outcome.SUCCEEDED, 3, {"n": 5})
    assert (record.op_id, record.agent_id, record.arguments) == (op_id, "agent-7", {"n": 5})
    assert seen == [(op_id, 5)] * 3
    assert slept.count(0.25) == 3 and len(slept) == 5, "the tool's work on each attempt, a backoff between two"
    assert recorder.records == [record]


def test_an_arguments_step_that_raises_is_the_tools_error_and_runs_nothing():
    ran = []
    recorder = Recorder()
    adapter = ToolAdapter(None, None, QUICK_RETRIES, NO_TIME, recorder.call_finished)
    record = adapter.call(Tool("broken", lambda tx: ran.append(tx), "redis", lambda rng: {"n": 1 / 0}), "agent-1", 1)
    assert (record.outcome, record.attempts, record.failures) == (Outcome.FAILED, 1, [Failure.ERROR])
    assert isinstance(record.exception, ZeroDivisionError) and not ran
    assert recorder.records == [record]


def test_a_tools_module_declares_arguments_with_the_decorator(tmp_path):
    module = tmp_path / "echoes.py"
    module.write_text(
        "from db.tool import tool\n\n"
        "@tool(backend='redis', arguments=lambda rng: {'n': rng.randint(1, 10**6)})\n"
        "def echo(tx, *, n):\n"
        "    return {'n': n}\n\n"
        "@tool(backend='redis')\n"
        "def plain(tx):\n"
        "    return tx.rng.randint(1, 10**6)\n")
    tools = {w.tool.name: w.tool for w in load_tools_module(str(module)).tools(None)}
    recorder = Recorder()
    adapter = ToolAdapter(None, None, QUICK_RETRIES, NO_TIME, recorder.call_finished)
    echoed = adapter.call(tools["echo"], "agent-1", 5)
    assert echoed.arguments == {"n": random.Random(5).randint(1, 10**6)} == echoed.value
    plain = adapter.call(tools["plain"], "agent-1", 5)
    assert plain.arguments is None and plain.value == random.Random(5).randint(1, 10**6)


def test_the_decorator_refuses_arguments_that_are_not_a_function():
    with pytest.raises(ValueError, match="arguments a function of a random.Random"):
        tool(arguments={"n": 1})
