"""The tool server's careless mode (`python -m toolserver --careless`; docs/mcp.md: Careless mode).
Each tool with a careless version is driven through MCP, many calls at once by toolclash's own MCP
client (transport.mcp, one session per agent), on a freshly seeded schema, then judged by its
scenario's own audits, as a run judges it, from the outcomes the client recorded. On the careful
server every check holds; on the careless one exactly the checks that docs/mcp.md's table names
for that tool fail: the expected failures are read from the table, so the table cannot drift from
what the servers do."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import gevent
import pytest
import redis

from db.redis_keys import RedisKeys
from db.schema import begin_run
from db.tool import Tool
from tasks.scenarios import SCENARIOS, ScenarioParams, built_in_tools
from tests.support import PREPARED, READS, ROOT, Recorder, acknowledged_from, context_for, prepared_schema
from toolserver.careless import careless_tools
from transport.call_record import Outcome
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient
from transport.mcp.settings import McpSettings
from transport.retry import RetryPolicy

QUEUE_CAPACITY = 4
# Every server of these tests: the window between a read and the write that trusts it (100 ms of
# tool work, a 400 ms hold) wider than the spread of calls sent at once, so that they all read
# before any of them writes, however busy the machine.
SERVER_OPTIONS = ("--tool-work", "100", "--hold-time", "400", "--queue-capacity", str(QUEUE_CAPACITY),
                  "--backoff-base", "5", "--backoff-max", "50")
# The client sends each call once: what the server's own retries make of it is what is judged.
ONCE = RetryPolicy(max_tries=1, base_s=0.0, cap_s=0.0)

Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Drive:
    """One row of the table, (scenario, tool), driven: each phase's calls at once, by an agent
    each, the phases one after the other."""

    scenario: str
    tool: str
    phases: tuple[tuple[Call, ...], ...]
    isolation: str = "read_committed"


def _times(n: int, tool: str, **arguments: Any) -> tuple[Call, ...]:
    return tuple((tool, arguments) for _ in range(n))


DRIVES = (
    Drive("optimistic_locking", "deduct_credits", (_times(12, "deduct_credits", account=1, amount=1),)),
    Drive("deadlock", "transfer_credits", (tuple(
        ("transfer_credits", {"payer": 1, "payee": 2 + i % 2, "amount": 1}) for i in range(12)),)),
    # Charges (their PostgreSQL half careful in both modes) commit while the summaries read.
    Drive("pool_exhaustion", "summarize_accounts", (_times(6, "summarize_accounts") + tuple(
        ("charge_usage", {"account": 1 + i % 3, "amount": 2}) for i in range(9)),)),
    Drive("queue", "enqueue_job", (_times(10, "enqueue_job", level=2),)),
    # The jobs queued one at a time (a careless producer alone is right), then taken at once.
    Drive("queue", "dequeue_job", (*(_times(1, "enqueue_job", level=2),) * QUEUE_CAPACITY,
                                   _times(10, "dequeue_job"))),
    Drive("cross_service", "charge_usage", (tuple(
        ("charge_usage", {"account": 1 + i % 4, "amount": 1 + i}) for i in range(8)),)),
    Drive("agent_state", "update_plan", (_times(10, "update_plan", team=1),)),
    # Writes of agents that all read the data as seeded (version 0), guarded: the careful server
    # refuses all but the first.
    Drive("workflows", "deduct_from_read", (_times(12, "deduct_from_read", account=1, amount=1,
                                                   balance=PREPARED.initial_balance, version=0, read_at=0,
                                                   guarded=True),)),
    Drive("workflows", "write_plan_step", (_times(10, "write_plan_step", team=1, version=0, step=0, read_at=0,
                                                  guarded=True),)),
    # At serializable, where the reference server passes the isolation scenario.
    Drive("isolation", "increment_counter", (_times(8, "increment_counter", counter=1),), "serializable"),
    Drive("isolation", "reserve_slot", (_times(8, "reserve_slot"),), "serializable"),
    # Each reads key slot 0, works, appends to it: at serializable only one of a state's readers commits.
    Drive("list_append", "list_append", (_times(8, "list_append", txn=[["r", 0], ["append", 0]]),), "serializable"),
)


def careless_table() -> dict[tuple[str, str], set[str]]:
    """docs/mcp.md's careless table: (scenario, tool) -> the checks that must fail."""
    text = (ROOT / "docs" / "mcp.md").read_text(encoding="utf-8")
    section = text.split("\n## Careless mode\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in SCENARIOS:
            rows[(cells[0], cells[1].strip("`"))] = set(re.findall(r"`(\w+)`", cells[3]))
    return rows


def _remote(name: str, arguments: dict[str, Any]) -> Tool:
    """A tool the server runs: here only its name and its arguments matter."""

    def runs_on_the_server(tx: Any, **_: Any) -> None:
        raise AssertionError(f"{name} runs on the MCP server, not here")

    return Tool(name, runs_on_the_server, arguments=lambda rng: dict(arguments))


def _failed_checks(drive: Drive, url: str, careless: bool, admin, schema: str, client: redis.Redis) -> set[str]:
    """The drive's calls over MCP on a freshly seeded schema, then its scenario's audits on what
    they left, given the outcomes the client recorded: the names of the checks that failed. The
    server's MCP serverInfo says whether it is `careless`."""
    begin_run(admin, schema, "test", accounts=PREPARED.accounts, initial_balance=PREPARED.initial_balance,
              counters=PREPARED.counters)
    RedisKeys(schema).clear(client)
    recorder = Recorder()
    mcp = McpClient(McpSettings(url, era="session"))
    mcp.connect()
    adapter = McpToolAdapter(mcp, ONCE, recorder.call_finished)
    agents = [f"agent-{i}" for i in range(max(map(len, drive.phases)))]
    try:  # the sessions opened first: the calls of a phase then leave together
        gevent.joinall([gevent.spawn(adapter.open_session, agent) for agent in agents], raise_error=True)
        assert mcp.server_info["title"].endswith("(careless mode)") is careless, mcp.server_info
        for phase in drive.phases:
            gevent.joinall([gevent.spawn(adapter.call, _remote(tool, arguments), agent, seed)
                            for seed, (agent, (tool, arguments)) in enumerate(zip(agents, phase))], raise_error=True)
    finally:
        adapter.close()
        mcp.close()
    succeeded = [r for r in recorder.records if r.tool == drive.tool and r.outcome is Outcome.SUCCEEDED]
    assert succeeded, f"no {drive.tool} call succeeded: {[(r.outcome, r.exception) for r in recorder.records]}"
    params = ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys(schema), counters=PREPARED.counters,
                            teams=PREPARED.teams, queue_capacity=QUEUE_CAPACITY, isolation=drive.isolation)
    context = context_for(admin, schema,
                          lambda tools: acknowledged_from([r for r in recorder.records if r.tool in tools]),
                          redis_client=client, baseline=replace(PREPARED, queue_capacity=QUEUE_CAPACITY))
    checks = [check for audit in SCENARIOS[drive.scenario].audits(params).values() for check in audit(context)]
    return {check.name for check in checks if not check.ok}


@pytest.mark.parametrize("mode", ["careful", "careless"])
def test_each_scenario_through_mcp_passes_on_the_careful_server_and_fails_the_tables_checks_on_the_careless_one(
        toolserver, servers, admin, schema, mode):
    prepared_schema(admin, schema)
    careless = mode == "careless"
    failed = {}
    with redis.Redis.from_url(servers.redis_url) as client:
        for isolation in ("read_committed", "serializable"):
            server = toolserver.start(schema, *SERVER_OPTIONS, "--isolation", isolation,
                                      *(["--careless"] if careless else []))
            assert server.info()["careless"] is careless
            assert ("CARELESS" in server.startup_line) is careless
            for drive in (d for d in DRIVES if d.isolation == isolation):
                failed[(drive.scenario, drive.tool)] = _failed_checks(drive, server.url, careless, admin, schema,
                                                                      client)
            assert server.stop() == 0
    table = careless_table()
    assert set(failed) == set(table), "one drive per row of docs/mcp.md's careless table"
    assert failed == (table if careless else {row: set() for row in table})


def test_every_built_in_tool_has_a_careless_version_an_agent_cannot_tell_apart():
    params = ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys("any"))
    careful, careless = built_in_tools(params), careless_tools(params)
    assert careless.keys() == careful.keys()
    for name, tool in careless.items():
        # The workflows' reads are the careful ones (bound anew: the same function under a partial).
        assert (getattr(tool.run, "func", tool.run) is getattr(careful[name].run, "func", careful[name].run)) is (
            name in READS), name
        assert (tool.name, tool.backend) == (name, careful[name].backend)
        assert [tool.draw_arguments(seed) for seed in range(20)] == [careful[name].draw_arguments(seed)
                                                                     for seed in range(20)], name
