"""Workflows across turns (issue 19): an agent reads, thinks, then writes from what it read. Against
the real servers through the adapter: agents that all read before any writes, blind, lose updates,
and the audits name each stale write with the writes it overwrote (op ids, versions, ms); guarded,
the same writes are refused (never retried) and every audit holds. The agent's memory carries a
read into a later turn's write, the same for a seed. And two short `locust` runs of 40 agents:
blind FAILs naming lost updates, guarded PASSes with its refusals counted."""

from __future__ import annotations

import random
import uuid
from contextlib import closing
from dataclasses import replace

import gevent
import pytest
import redis

from db.durations import NO_TIME
from db.errors import Failure
from db.pool import SessionSettings, open_pool
from db.redis_keys import RedisKeys
from harness.config.turns import calls_per_turn
from harness.run.load import Toolbox
from harness.run.memory import Memory
from harness.run.turns import plan_turn, run_turn
from harness.watch.metrics import Metrics
from tasks.scenarios import SCENARIOS, ScenarioParams
from tasks.workflows import WORKFLOWS
from tests.support import (
    PREPARED,
    QUICK_RETRIES,
    Recorder,
    acknowledged_from,
    built_in_tool,
    context_for,
    prepared_schema,
    read_report,
    settings_from,
)
from transport.call_record import Outcome
from transport.in_process import ToolAdapter

AGENTS = 8
ONE_TURN = calls_per_turn("1")


def _audits(admin, schema: str, client: redis.Redis, records: list) -> dict[str, object]:
    """The workflows scenario's audits on what the calls left: each check by name."""
    params = ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys(schema), counters=PREPARED.counters,
                            teams=PREPARED.teams, queue_capacity=PREPARED.queue_capacity)
    context = context_for(admin, schema, lambda tools: acknowledged_from([r for r in records if r.tool in tools]),
                          redis_client=client)
    return {check.name: check for audit in SCENARIOS["workflows"].audits(params).values() for check in audit(context)}


def _read_then_write(adapter: ToolAdapter, schema: str, read: str, arguments: dict, guarded: bool) -> list:
    """AGENTS agents read the same thing at once, then, all having read, each writes from its own
    read at once (the write's arguments from the read's value, as the agent's memory draws them)."""
    workflow = next(w for w in WORKFLOWS if w.read == read)
    reader, writer = built_in_tool(read, schema), built_in_tool(workflow.write, schema)
    agents = [f"agent-{i}" for i in range(AGENTS)]
    reads = [g.value for g in gevent.joinall(
        [gevent.spawn(adapter.call, reader, agent, 0, arguments=arguments) for agent in agents], raise_error=True)]
    assert all(r.outcome is Outcome.SUCCEEDED for r in reads), [r.exception for r in reads]
    writes = [g.value for g in gevent.joinall(
        [gevent.spawn(adapter.call, writer, agent, 0,
                      arguments=workflow.write_arguments(r.value, random.Random(n), guarded))
         for n, (agent, r) in enumerate(zip(agents, reads))], raise_error=True)]
    return reads + writes


def _every_workflow(servers, admin, schema, guarded: bool):
    """The three workflows, each read by every agent before any writes; the calls and the audits."""
    prepared_schema(admin, schema)
    recorder = Recorder()
    pool = open_pool(servers.pg_dsn, SessionSettings(schema), size=AGENTS, timeout_s=5)
    with closing(pool), redis.Redis.from_url(servers.redis_url) as client:
        adapter = ToolAdapter(pool, client, QUICK_RETRIES, NO_TIME, recorder.call_finished)
        enqueued = adapter.call(built_in_tool("enqueue_job", schema), "producer", 0, arguments={"level": 2})
        assert enqueued.outcome is Outcome.SUCCEEDED
        records = [enqueued]
        for read, arguments in (("read_balance", {"account": 1}), ("read_plan", {"team": 1}), ("read_queue", {})):
            records += _read_then_write(adapter, schema, read, arguments, guarded)
        return records, _audits(admin, schema, client, records)


def _failed(checks: dict) -> set[str]:
    return {name for name, check in checks.items() if not check.ok}


def test_blind_writes_from_reads_all_made_at_once_lose_updates_and_the_audit_names_them(servers, admin, schema):
    records, checks = _every_workflow(servers, admin, schema, guarded=False)
    writes = {name: [r for r in records if r.tool == name] for name in ("deduct_from_read", "write_plan_step",
                                                                       "take_job")}
    assert all(r.outcome is Outcome.SUCCEEDED and r.attempts == 1 for rs in writes.values() for r in rs)
    # Serialized by the row's lock (the plan's and the queue's scripts), each wrote over the last:
    # the k-th was k versions behind its read, and overwrote every write before it.
    for name in ("deduct_from_read", "write_plan_step"):
        assert sorted(r.value["behind"] for r in writes[name]) == list(range(AGENTS)), name
    assert sum(r.value["stale"] for r in writes["take_job"]) == AGENTS - 1
    assert all(r.value["stale_ms"] is not None and r.value["stale_ms"] >= 0 for rs in writes.values() for r in rs)
    assert _failed(checks) == {
        "credits_conserved", "balances_match_ledger", "one_deduction_per_version",  # the data's own checks
        "plan_steps_match_writes", "no_duplicate_jobs",
        "balance_writes_read_current", "plan_writes_read_current", "jobs_taken_at_the_head"}
    # By identity: the last write (AGENTS - 1 behind) overwrote every other, named by op id, with
    # how stale it was in versions and in ms.
    for check, name in (("balance_writes_read_current", "deduct_from_read"),
                        ("plan_writes_read_current", "write_plan_step")):
        last = max(writes[name], key=lambda r: r.value["behind"])
        overwritten = sorted(str(r.op_id) for r in writes[name] if r is not last)
        detail = checks[check].detail
        assert checks[check].anomaly == "stale_writes" and checks[check].anomaly_count == AGENTS - 1
        assert detail.startswith(f"{AGENTS - 1} writes from stale reads: write {last.op_id} read "), detail
        assert f"at version 0 {last.value['stale_ms']} ms before and overwrote version {AGENTS - 1}," in detail
        assert f"losing {AGENTS - 1} update(s): " in detail
        assert detail.split(";")[0].endswith(f"update(s): {', '.join(overwritten[:5])} … ({AGENTS - 1} in all)"), detail
    taker = next(r for r in writes["take_job"] if not r.value["stale"])
    assert f"no longer the queue's next: also taken by {taker.op_id}, " in checks["jobs_taken_at_the_head"].detail
    # The load's side counts the same writes from the values: n/a (None) where no versions are said.
    metrics = Metrics()
    for record in records:
        metrics.record(record)
    section = metrics.workflows.section()
    assert (section["writes"], section["stale_writes"]) == (3 * AGENTS, 3 * (AGENTS - 1))
    assert section["behind_versions"]["max"] == AGENTS - 1 and section["behind_versions"]["count"] == 2 * AGENTS
    assert section["tools"]["take_job"]["behind_versions"] is None
    assert section["stale_ms"]["count"] == 3 * AGENTS


def test_guarded_writes_from_the_same_reads_are_refused_not_retried_and_every_audit_holds(servers, admin, schema):
    records, checks = _every_workflow(servers, admin, schema, guarded=True)
    for name in ("deduct_from_read", "write_plan_step", "take_job"):
        writes = [r for r in records if r.tool == name]
        won = [r for r in writes if r.outcome is Outcome.SUCCEEDED]
        refused = [r for r in writes if r.outcome is Outcome.FAILED]
        assert len(won) == 1 and len(refused) == AGENTS - 1, name
        assert all(r.failures == [Failure.REFUSED] and r.attempts == 1 for r in refused), name
        assert won[0].value.get("behind", 0) == 0 and not won[0].value.get("stale")
    assert _failed(checks) == set(), {name: checks[name].detail for name in _failed(checks)}
    assert checks["balance_writes_read_current"].detail == \
        "each of the 1 balance writes of a workflow wrote over the version it read"
    metrics = Metrics()
    for record in records:
        metrics.record(record)
    assert metrics.workflows.section()["stale_writes"] == 0
    assert metrics.tools["deduct_from_read"].refused == AGENTS - 1


def test_a_plans_steps_count_a_write_whose_reply_never_came_and_no_step_no_write_made(servers, admin, schema):
    """Two guarded steps of one team, one after the other; the second cut off at the stop, its
    outcome indeterminate and its value (its team) never come: applied, its plan_log row names the
    team and the plan's steps count it. A step added outside any call fails the check."""
    prepared_schema(admin, schema)
    recorder = Recorder()
    workflow = next(w for w in WORKFLOWS if w.read == "read_plan")
    reader, writer = built_in_tool("read_plan", schema), built_in_tool(workflow.write, schema)
    pool = open_pool(servers.pg_dsn, SessionSettings(schema), size=1, timeout_s=5)
    with closing(pool), redis.Redis.from_url(servers.redis_url) as client:
        adapter = ToolAdapter(pool, client, QUICK_RETRIES, NO_TIME, recorder.call_finished)
        records = []
        for n in range(2):
            read = adapter.call(reader, "agent", 0, arguments={"team": 1})
            records += [read, adapter.call(writer, "agent", 0,
                                           arguments=workflow.write_arguments(read.value, random.Random(n), True))]
        assert [r.outcome for r in records] == [Outcome.SUCCEEDED] * 4
        cut = records[:-1] + [replace(records[-1], outcome=Outcome.INDETERMINATE, value=None)]
        check = _audits(admin, schema, client, cut)["plan_steps_match_writes"]
        assert check.ok, check.detail
        client.hset(RedisKeys(schema)("plan", 2), "step", 1)
        check = _audits(admin, schema, client, cut)["plan_steps_match_writes"]
        assert not check.ok and check.detail == "team 2's plan holds 1 steps after 0 step writes"


def test_the_agents_memory_carries_a_read_into_a_later_turns_write_the_same_for_a_seed(servers, admin, schema):
    prepared_schema(admin, schema)
    settings = settings_from("--scenario", "workflows", "--writes", "blind", "--accounts", str(PREPARED.accounts))
    toolbox = Toolbox(settings)
    # Every pick is the balance's write: the first turn must read instead, the second writes from it.
    write = toolbox.by_name["deduct_from_read"]
    recorder = Recorder()
    pool = open_pool(servers.pg_dsn, SessionSettings(schema), size=1, timeout_s=5)
    with closing(pool):
        adapter = ToolAdapter(pool, None, QUICK_RETRIES, NO_TIME, recorder.call_finished)

        def agent(seed: str) -> list:
            memory, rng = Memory(toolbox.workflows, toolbox.by_name, guarded=False), random.Random(seed)
            turns = [plan_turn(n, rng, lambda _: write, ONE_TURN, 0.0, memory) for n in (1,)]
            run_turn(adapter, seed, turns[0], memory)
            turns.append(plan_turn(2, rng, lambda _: write, ONE_TURN, 0.0, memory))
            turns.append(plan_turn(3, rng, lambda _: write, ONE_TURN, 0.0, memory))  # the read was spent
            return [(t.calls[0].tool.name, t.calls[0].seed, t.calls[0].arguments) for t in turns]

        first, again = agent("7:p0-a1"), agent("7:p0-a1")
    read = recorder.records[0]
    assert [name for name, _, _ in first] == ["read_balance", "deduct_from_read", "read_balance"]
    assert first[0][2] is None, "the read draws its own arguments from its seed"
    written = first[1][2]
    assert {key: written[key] for key in ("account", "balance", "version", "read_at")} == {
        "account": read.value["account"], "balance": read.value["balance"], "version": read.value["version"],
        "read_at": read.value["at"]}
    assert written["guarded"] is False and written["read_at"] > 0
    # The same seed: the same picks, and the same write of the same read (its time is the server's).
    assert [(name, seed, arguments and {**arguments, "read_at": None}) for name, seed, arguments in first] == \
        [(name, seed, arguments and {**arguments, "read_at": None}) for name, seed, arguments in again]


def test_the_writes_option_is_a_per_run_choice_and_workflows_stay_out_of_the_default_mix():
    assert settings_from().writes == "guarded"
    assert settings_from("--writes", "blind").writes == "blind"
    assert "workflows" not in [s.name for s in settings_from().scenarios]
    with pytest.raises(SystemExit):
        settings_from("--writes", "sometimes")


@pytest.mark.parametrize("writes", ["blind", "guarded"])
def test_a_short_run_of_workflows_finds_lost_updates_blind_and_passes_guarded(servers, schema, tmp_path, locust,
                                                                               writes):
    report_path = tmp_path / "report.json"
    done = locust.run(*servers.args(schema), "--users", "40", "--spawn-rate", "200", "--run-time", "4s",
                      "--scenario", "workflows", "--writes", writes, "--accounts", "4", "--teams", "2",
                      "--think-time", "uniform:20ms:120ms", "--sla", "sla/without_latency.toml",
                      "--report-json", str(report_path))
    report = read_report(report_path)
    failed = {check["name"]: check["detail"] for check in report["audit"]["checks"] if not check["ok"]}
    workflows = report["workflows"]
    assert report["settings"]["writes"] == writes and workflows["writes"] > 0
    assert f"workflows: {workflows['writes']} writes from reads, {workflows['stale_writes']} from stale reads" \
        in done.stdout
    if writes == "blind":
        assert done.returncode == 1, done.stdout[-3000:]
        assert workflows["stale_writes"] > 0 and report["anomalies"]["stale_writes"] > 0
        assert "balance_writes_read_current" in failed and "balances_match_ledger" in failed
        assert "losing" in failed["balance_writes_read_current"]
        uuid.UUID(failed["balance_writes_read_current"].split("write ", 2)[1].split(" ")[0])  # named by op id
    else:
        assert done.returncode == 0, (failed, done.stdout[-3000:] + done.stderr[-3000:])
        assert workflows["stale_writes"] == 0 and report["anomalies"]["stale_writes"] == 0
        assert report["not_audited_by_identity"] == [], "the reads too: each saw a state the data had"
        assert sum(report["tools"][name]["refused"] for name in ("deduct_from_read", "write_plan_step")) > 0
