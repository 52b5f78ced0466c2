"""The reference MCP tool server for real: `python -m toolserver` started on the test's servers, the
official SDK's client (a process of its own: tests/mcp_client.py) calling it in both protocol eras.
Every tool listed with its schemas and executing what an agent drew under the op id it was given,
where the audits read it; real conflicts retried by the server and reported; the audits holding on
what the calls left; the op id's three ways, a refusal, a re-sent op id; several processes in the
stateless era; the options read from the environment; bad input refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import replace

import psycopg
import pytest
import redis
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from psycopg import sql

from db.durations import constant
from db.errors import Failure
from db.redis_keys import RedisKeys
from history_check.toolclash import call_events
from tasks.credits_audit import audit_credits
from tasks.isolation import audit_isolation
from tasks.list_append import element_of
from tasks.scenarios import ScenarioParams, built_in_tools
from tests.support import (
    PREPARED,
    ROOT,
    Recorder,
    acknowledged_from,
    built_in_tool,
    context_for,
    holds_what_was_told,
    mcp_client,
    prepared_schema,
    row_of,
    wait_until,
    what_the_servers_hold,
)
from toolserver.identity import AGENT_ID_META_KEY, OP_ID_META_KEY
from toolserver.options import environment_variables, parse_options
from toolserver.schemas import DESCRIPTIONS, OUTPUT_SCHEMA, arguments_model
from transport.call_record import CallRecord, Outcome
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient
from transport.mcp.settings import McpSettings
from transport.retry import RetryPolicy

TOOLS = sorted(built_in_tools(ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys("any"))))
STATELESS = "2026-07-28"
# This process's environment without a variable the server would read.
CLEAN_ENV = {name: value for name, value in os.environ.items() if not name.startswith("TOOLCLASH_")}


def _call(tool: str, arguments: dict, op_id: uuid.UUID | None = None, agent: str | None = None, **meta) -> dict:
    """A tools/call of the plan tests/mcp_client.py runs; its op id in _meta when given."""
    if op_id is not None:
        meta[OP_ID_META_KEY] = str(op_id)
    if agent is not None:
        meta[AGENT_ID_META_KEY] = agent
    return {"tool": tool, "arguments": arguments, "meta": meta or None}


def _succeeded(result: dict) -> dict:
    assert result.get("isError") is False, result
    return result["structuredContent"]


def test_every_built_in_tool_is_listed_with_its_schemas_in_both_eras(toolserver, schema, admin):
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--threads", "3")
    assert "1 process(es) of 3 threads and 3 connections" in server.startup_line
    info = server.info()
    assert (info["threads"], info["pool_size"], info["processes"], info["sessions"]) == (3, 3, 1, True)
    assert info["eras"] == {"session": list(HANDSHAKE_PROTOCOL_VERSIONS), "stateless": [STATELESS]}
    assert info["tools"] == TOOLS
    for era, version in (("legacy", HANDSHAKE_PROTOCOL_VERSIONS[-1]), (STATELESS, STATELESS)):
        listed = mcp_client(server.url, era, list_tools=True)
        assert listed["protocol_version"] == version
        tools = {tool["name"]: tool for tool in listed["tools"]}
        assert sorted(tools) == TOOLS
        for name, tool in tools.items():
            assert tool["description"] == DESCRIPTIONS[name]
            assert tool["inputSchema"] == arguments_model(name).model_json_schema(by_alias=True)
            assert tool["outputSchema"] == OUTPUT_SCHEMA
    assert server.stop() == 0


def test_each_tool_executes_what_the_agent_drew_under_the_op_id_it_was_given(toolserver, servers, schema, admin):
    """One agent calls every tool with arguments drawn from a seed, its op id in _meta: each call
    succeeds, and what it wrote is found by that op id where the audits look."""
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--hold-time", "0", "--tool-work", "0")
    names = sorted(TOOLS, key=lambda name: name != "enqueue_job")  # first: the consumer then takes its job
    op_ids = [uuid.uuid4() for _ in names]
    calls = [_call(name, built_in_tool(name, schema).draw_arguments(seed), op_id, "agent-1")
             for seed, (name, op_id) in enumerate(zip(names, op_ids), 100)]
    results = mcp_client(server.url, "legacy", calls)["results"][0]
    told = {}
    with redis.Redis.from_url(servers.redis_url) as client:
        for name, op_id, call, result in zip(names, op_ids, calls, results):
            told[name] = structured = _succeeded(result)
            assert (structured["op_id"], structured["op_id_from"], structured["attempts"]) == (str(op_id), "meta", 1)
            if name != "enqueue_job":  # its job was dequeued since: the queue's log has it
                held = what_the_servers_hold(name, op_id, admin, schema, client)
                assert holds_what_was_told(held, name, call["arguments"]), (name, held, call["arguments"])
        log = [fields for _, fields in client.xrange(RedisKeys(schema)("queue", "log"))]
    job, consumer, taker = (str(op_ids[names.index(name)]).encode()
                            for name in ("enqueue_job", "dequeue_job", "take_job"))
    level = str(calls[names.index("enqueue_job")]["arguments"]["level"]).encode()
    # take_job's blind write takes the job it was told it read, which no producer queued (the audit names it).
    taken = calls[names.index("take_job")]["arguments"]
    assert [(f[b"event"], f[b"job"], f.get(b"level"), f.get(b"consumer")) for f in log] == [
        (b"enqueue", job, level, None), (b"dequeue", job, level, consumer), (b"ack", job, None, consumer),
        (b"dequeue", taken["job"].encode(), str(taken["level"]).encode(), taker), (b"ack", taken["job"].encode(), None,
                                                                                   taker)]
    assert told["dequeue_job"]["value"] == {"job": job.decode()}
    reserved = told["reserve_slot"]["value"]
    assert reserved["wrote"] is True
    assert row_of(admin, schema, "SELECT pair_id, slot FROM {schema}.duty_leave WHERE op_id = %s",
                  op_ids[names.index("reserve_slot")]) == (reserved["pair"], reserved["slot"])
    assert told["summarize_accounts"]["value"]["accounts"] == PREPARED.accounts
    assert row_of(admin, schema, "SELECT agent_id FROM {schema}.ledger WHERE op_id = %s",
                  op_ids[names.index("deduct_credits")]) == ("agent-1",)
    assert server.stop() == 0


def test_conflicts_are_retried_by_the_server_reported_and_the_audits_hold_on_what_the_calls_left(
        toolserver, schema, admin):
    """Two transfers between one pair of accounts in opposite directions (a deadlock, 40P01), and
    two increments of one counter at repeatable read (a serialization failure, 40001), at once in
    the stateless era: the server retries the victims and says so; the credits and isolation
    audits, given the calls as the agents saw them, find every op id where it belongs."""
    prepared_schema(admin, schema, accounts=2)
    server = toolserver.start(schema, "--threads", "4", "--isolation", "repeatable_read", "--deadlock-timeout",
                              "20", "--tool-work", "400", "--backoff-base", "1", "--backoff-max", "5")
    agents = [[_call("transfer_credits", {"payer": 1, "payee": 2, "amount": 3}, uuid.uuid4(), "agent-1")],
              [_call("transfer_credits", {"payer": 2, "payee": 1, "amount": 4}, uuid.uuid4(), "agent-2")],
              [_call("increment_counter", {"counter": 1}, uuid.uuid4(), "agent-3")],
              [_call("increment_counter", {"counter": 1}, uuid.uuid4(), "agent-4")]]
    results = [agent[0] for agent in mcp_client(server.url, STATELESS, *agents)["results"]]
    told = [_succeeded(result) for result in results]
    transfers, increments = told[:2], told[2:]
    winner, victim = sorted(transfers, key=lambda t: t["attempts"])
    # The victim's retry may also find its rows changed since its snapshot (repeatable read): 40001.
    assert (winner["failures"], victim["failures"][0]) == ([], "deadlocks")
    assert set(victim["failures"]) <= {"deadlocks", "serialization_failures"}
    assert all(t["attempts"] == len(t["failures"]) + 1 for t in told)
    assert sorted(t["failures"] for t in increments) == [[], ["serialization_failures"]]
    assert sorted(t["value"]["read"] for t in increments) == [0, 1], "the retry read the first one's write"
    records = [CallRecord(tool=agent[0]["tool"], backend="pg", op_id=uuid.UUID(t["op_id"]), outcome=Outcome.SUCCEEDED,
                          attempts=t["attempts"], value=t["value"], arguments=agent[0]["arguments"])
               for agent, t in zip(agents, told)]
    context = context_for(admin, schema, lambda tools: acknowledged_from([r for r in records if r.tool in tools]),
                          baseline=replace(PREPARED, accounts=2))
    checks = [*audit_credits(context), *audit_isolation(context, isolation="repeatable_read")]
    assert [check for check in checks if not check.ok] == []
    assert {"acknowledged_in_ledger", "ledger_within_acknowledged", "increments_in_counter_ops"} <= {
        check.name for check in checks}
    assert server.stop() == 0


def test_a_call_that_fails_finally_says_what_each_attempt_set_out_to_do(toolserver, servers, schema, admin):
    """list_append's appends wait past the server's lock timeout (another session holds the table)
    on its two tries of each of the client's two requests: the failed results say what the last
    attempt set out to do, and the client's record has every attempt of the call, `fail`, with its
    elements."""
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--lock-timeout", "50", "--max-tries", "2", "--backoff-base", "1",
                              "--backoff-max", "2", "--tool-work", "0")
    client = McpClient(McpSettings(server.url))
    client.connect()
    adapter = McpToolAdapter(client, RetryPolicy(max_tries=2, base_s=0.001, cap_s=0.01), Recorder().call_finished)
    with psycopg.connect(servers.pg_dsn) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(schema, "append_lists")))
        record = adapter.call(built_in_tool("list_append", schema), "agent-1", 1,
                              arguments={"txn": [["r", 2], ["append", 4]]})
        holder.rollback()
    adapter.close()
    client.close()
    assert record.outcome is Outcome.FAILED and record.failures == [Failure.LOCK_TIMEOUT] * 2
    assert record.server_failures == [Failure.LOCK_TIMEOUT] * 4
    events = list(call_events(str(record.op_id), "failed", record.value))
    assert [(e["type"], e["id"]) for e in events] == [("fail", f"{record.op_id}#{n}") for n in (1, 2, 3, 4)]
    assert [[(f, v) for f, _, v in e["value"]] for e in events] == [
        [("r", None), ("append", element_of(record.op_id, n))] for n in (1, 2, 3, 4)]
    assert server.stop() == 0


def _post(url: str, body: dict, headers: dict[str, str]) -> dict:
    """One stateless-era request as it travels: its routing headers, its envelope in _meta."""
    body = {"jsonrpc": "2.0", "id": 1, **body}
    body["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": STATELESS,
                               "io.modelcontextprotocol/clientCapabilities": {}}
    request = urllib.request.Request(url, json.dumps(body).encode(), {
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": STATELESS, "Mcp-Method": body["method"], "Mcp-Name": body["params"]["name"],
        **headers})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def test_the_op_id_travels_three_ways_a_refusal_is_answered_and_a_resent_op_id_is_applied_once(
        toolserver, servers, schema, admin):
    """In the session era with JSON replies: the op id in _meta, as an argument, or none (the
    server names it); two that disagree refused; a refusal and a bad argument answered as such;
    the same op id sent again applied once (a deduction, a plan's change, a job queued, a job
    taken: as a client sends a call again whose reply was lost). Then in the stateless era, the
    op id as an Idempotency-Key header, on a request sent as it travels."""
    prepared_schema(admin, schema)
    admin.execute(sql.SQL("UPDATE {}.accounts SET balance = 0 WHERE id = 3").format(sql.Identifier(schema)))
    server = toolserver.start(schema, "--json-response")
    assert server.info()["json_response"] is True
    refused_op, given, plan_step, job, consumer = (uuid.uuid4() for _ in range(5))
    calls = [
        _call("deduct_credits", {"account": 3, "amount": 5}, refused_op),
        _call("deduct_credits", {"account": 1, "amount": 2, "op_id": str(given)}),
        _call("deduct_credits", {"account": 1, "amount": 2}, given),  # sent again: the ledger keeps the first
        _call("deduct_credits", {"account": 1, "amount": 2}),  # none given: the server names it
        _call("deduct_credits", {"account": 1, "amount": 2, "op_id": str(uuid.uuid4())}, uuid.uuid4()),
        _call("update_plan", {"team": 1}, plan_step, "agent-9"),
        _call("update_plan", {"team": 1}, plan_step, "agent-9"),  # sent again: update_plan answers the first
        _call("deduct_credits", {"account": 1, "amount": "two"}),
        _call("enqueue_job", {"level": 2}, job, "agent-9"),
        _call("enqueue_job", {"level": 2}, job, "agent-9"),  # sent again: queued once
        _call("enqueue_job", {"level": 3}, uuid.uuid4(), "agent-8"),
        _call("dequeue_job", {}, consumer, "agent-9"),
        _call("dequeue_job", {}, consumer, "agent-9"),  # sent again: the job it took, not the next
    ]
    (refused, by_argument, again, unnamed, two_names, plan, plan_again, invalid, queued, queued_again, _, took,
     took_again), = mcp_client(server.url, "legacy", calls)["results"]

    assert refused["isError"] is True
    assert refused["structuredContent"] == {
        "kind": "refusals", "sqlstate": None, "rolled_back": True, "refused": True, "op_id": str(refused_op),
        "op_id_from": "meta", "attempts": 1, "failures": ["refusals"]}
    assert row_of(admin, schema, "SELECT count(*) FROM {schema}.ledger WHERE op_id = %s", refused_op) == (0,)

    assert _succeeded(by_argument)["op_id_from"] == "argument"
    assert again["isError"] is True and again["structuredContent"]["sqlstate"] == "23505"
    assert (again["structuredContent"]["kind"], again["structuredContent"]["rolled_back"]) == ("errors", True)
    assert row_of(admin, schema, "SELECT count(*) FROM {schema}.ledger WHERE op_id = %s", given) == (1,)

    named = _succeeded(unnamed)
    assert named["op_id_from"] == "server"
    assert row_of(admin, schema, "SELECT amount FROM {schema}.ledger WHERE op_id = %s", uuid.UUID(named["op_id"])) \
        == (2,)
    assert two_names["error"]["code"] == -32602 and "different op ids" in two_names["error"]["message"]
    assert _succeeded(plan)["value"] == _succeeded(plan_again)["value"]
    assert invalid["isError"] is True and "structuredContent" not in invalid, "refused by the schema, never run"
    assert _succeeded(queued)["value"] == _succeeded(queued_again)["value"] == {"level": 2}
    assert _succeeded(took)["value"] == _succeeded(took_again)["value"] == {"job": str(job)}
    with redis.Redis.from_url(servers.redis_url) as client:
        log = [(f[b"event"], f[b"job"]) for _, f in client.xrange(RedisKeys(schema)("queue", "log"))]
    assert [event for event, queued_job in log if queued_job == str(job).encode()] == [b"enqueue", b"dequeue", b"ack"]
    assert len(log) == 4, "and the other job queued, still there"
    assert admin.execute(sql.SQL("SELECT count(*) FROM {}.ledger").format(sql.Identifier(schema))).fetchone() == (
        2,), "the calls by argument and unnamed"

    keyed = uuid.uuid4()
    reply = _post(server.url, {"method": "tools/call", "params": {
        "name": "deduct_credits", "arguments": {"account": 2, "amount": 1}}}, {"Idempotency-Key": str(keyed)})
    assert (reply["result"]["isError"], reply["result"]["structuredContent"]["op_id_from"]) == (False, "header")
    assert row_of(admin, schema, "SELECT amount FROM {schema}.ledger WHERE op_id = %s", keyed) == (1,)
    assert server.stop() == 0


def test_several_processes_serve_the_stateless_era_and_sessionless_requests(toolserver, schema, admin):
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--stateless", "--processes", "2", "--threads", "2", "--tool-work", "0")
    assert "2 process(es)" in server.startup_line and "without sessions" in server.startup_line
    pids: set[int] = set()
    wait_until(lambda: pids.add(server.info()["pid"]) or len(pids) == 2, "both processes answering", timeout=20)
    for era in ("legacy", STATELESS):
        result, = mcp_client(server.url, era, [_call("increment_counter", {"counter": 2}, uuid.uuid4())])["results"][0]
        assert _succeeded(result)["attempts"] == 1
    assert row_of(admin, schema, "SELECT value FROM {schema}.counters WHERE id = %s", 2) == (2,)
    assert server.stop() == 0


@pytest.mark.parametrize("options, says", [
    (["--threads", "0"], "--threads 0 is below its least value, 1"),
    (["--processes", "2"], "--processes 2 needs --stateless"),
    (["--isolation", "snapshot"], "argument --isolation: invalid choice: 'snapshot'"),
    (["--port", "70000"], "--port 70000 is no TCP port"),
    (["--redis-url", "redis://127.0.0.1:1/0"], "cannot connect to Redis at 127.0.0.1:1/0 (from --redis-url)"),
    (["--pg-dsn", "postgresql://someone:hunter2@127.0.0.1:1/x"],
     "cannot connect to PostgreSQL at 127.0.0.1:1/x (from --pg-dsn)"),
])
def test_what_the_server_refuses_is_one_line_and_exit_code_2(servers, options, says):
    _refused(["--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", "tc_refused", *options], {},
             says)


def _refused(options: list[str], variables: dict[str, str], says: str) -> None:
    """`python -m toolserver *options`, with `variables` its only TOOLCLASH_ ones: one line, exit 2."""
    done = subprocess.run([sys.executable, "-m", "toolserver", *options], cwd=ROOT, env={**CLEAN_ENV, **variables},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"toolserver: {says}") and done.stderr.count("\n") == 1, done.stderr
    assert "hunter2" not in done.stderr


def test_each_option_is_read_from_its_variable_when_the_command_line_does_not_give_it():
    environ = {"TOOLCLASH_PG_DSN": "postgresql://app:hunter2@db/x", "TOOLCLASH_REDIS_URL": "redis://cache:6379/1",
               "TOOLCLASH_SCHEMA": "tc_env", "TOOLCLASH_ISOLATION": "serializable", "TOOLCLASH_QUEUE_CAPACITY": "7",
               "TOOLCLASH_TOOLSERVER_STATELESS": "true", "TOOLCLASH_TOOLSERVER_THREADS": "3",
               "TOOLCLASH_TOOLSERVER_CARELESS": "off", "TOOLCLASH_TOOLSERVER_TOOL_WORK": "",
               # toolclash's own variables of the server's own options are not the server's
               "TOOLCLASH_THREADS": "9", "TOOLCLASH_TOOL_WORK": "9", "TOOLCLASH_MAX_TRIES": "9"}
    options = parse_options(["--threads", "4", "--port", "0"], environ)
    assert (options.pg_dsn, options.redis_url, options.schema) == (
        "postgresql://app:hunter2@db/x", "redis://cache:6379/1", "tc_env")
    assert (options.isolation, options.queue_capacity, options.stateless, options.careless) == (
        "serializable", 7, True, False)
    # The command line wins; unset or empty, the default.
    assert (options.threads, options.pool_size, options.port, options.tool_work, options.retry.max_tries) == (
        4, 4, 0, constant(0.005), 5)
    # Where each came from, for its messages (the startup line's, a server not reached).
    assert [options.origin(dest) for dest in ("pg_dsn", "stateless", "threads", "host")] == [
        "TOOLCLASH_PG_DSN", "TOOLCLASH_TOOLSERVER_STATELESS", "--threads", "--host"]
    # Every option has its variable: the shared ones toolclash's, the others the server's own.
    variables = environment_variables()
    assert {flag: name for flag, name in variables.items() if not name.startswith("TOOLCLASH_TOOLSERVER_")} == {
        "--pg-dsn": "TOOLCLASH_PG_DSN", "--redis-url": "TOOLCLASH_REDIS_URL", "--schema": "TOOLCLASH_SCHEMA",
        "--isolation": "TOOLCLASH_ISOLATION", "--queue-capacity": "TOOLCLASH_QUEUE_CAPACITY"}
    assert variables["--json-response"] == "TOOLCLASH_TOOLSERVER_JSON_RESPONSE"
    # The command line alone still serves, whatever the environment lacks.
    assert parse_options(["--pg-dsn", "x", "--redis-url", "y", "--schema", "z"], {}).origin("pg_dsn") == "--pg-dsn"


@pytest.mark.parametrize("options, variables, says", [
    ([], {}, "give --pg-dsn (or TOOLCLASH_PG_DSN), --redis-url (or TOOLCLASH_REDIS_URL), --schema (or"
             " TOOLCLASH_SCHEMA): on the command line or in the environment"),
    (["--schema", "tc_refused"], {"TOOLCLASH_PG_DSN": "postgresql://someone:hunter2@127.0.0.1:1/x",
                                  "TOOLCLASH_REDIS_URL": ""}, "give --redis-url (or TOOLCLASH_REDIS_URL): "),
    (["--schema", "tc_refused"], {"TOOLCLASH_PG_DSN": "postgresql://someone:hunter2@127.0.0.1:1/x",
                                  "TOOLCLASH_REDIS_URL": "redis://127.0.0.1:1/0"},
     "cannot connect to PostgreSQL at 127.0.0.1:1/x (from TOOLCLASH_PG_DSN)"),
    (["--pg-dsn", "x", "--redis-url", "y", "--schema", "z"], {"TOOLCLASH_TOOLSERVER_THREADS": "0"},
     "TOOLCLASH_TOOLSERVER_THREADS=0 is below its least value, 1"),
    (["--pg-dsn", "x", "--redis-url", "y", "--schema", "z"], {"TOOLCLASH_TOOLSERVER_STATELESS": "maybe"},
     "Unexpected value for TOOLCLASH_TOOLSERVER_STATELESS: 'maybe'. Expecting 'true', 'false'"),
    (["--pg-dsn", "x", "--redis-url", "y", "--schema", "z"], {"TOOLCLASH_ISOLATION": "snapshot"},
     "argument --isolation: invalid choice: 'snapshot'"),
])
def test_what_the_environment_lacks_or_gives_wrong_is_refused_in_one_line_and_exit_code_2(options, variables, says):
    _refused(options, variables, says)
