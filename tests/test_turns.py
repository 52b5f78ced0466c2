"""Turns (issue 19): an agent's batch of calls drawn before it starts and run at once. Parsed and
drawn the same for a seed; its calls overlap on the server (backend pids and the server's own
clock, in process and over MCP); a turn whose agent is stopped leaves no call running; two calls
of a turn on one key that overlap and conflict are a collision; the pool is sized for the calls a
turn runs at once; and one short run end to end (the report's turns, the history's lanes)."""

from __future__ import annotations

import itertools
import json
import random
from contextlib import closing

import gevent
import gevent.event
import pytest

from db.pool import SessionSettings, load_application_name
from db.tool import Tool, no_arguments
from harness.config.option import BadOption
from harness.config.turns import calls_per_turn
from harness.run.load import Toolbox
from harness.run.turns import PlannedCall, Turn, plan_turn, run_turn
from harness.watch.metrics import Metrics
from tests.support import Recorder, adapter_on, built_in_tool, prepared_schema, read_report, settings_from
from transport.call_record import Outcome
from transport.mcp.adapter import McpToolAdapter
from transport.mcp.client import McpClient
from transport.mcp.settings import McpSettings
from transport.retry import RetryPolicy

NAP_S = 0.4


@pytest.mark.parametrize(("text", "says"), [
    ("0", "0 calls: give 1 to 64"), ("2:x", "'2:x' is not CALLS or CALLS:WEIGHT"), ("1:0", "no weight above 0"),
    ("1:1,1:2", "1 calls given twice"), ("2:-1", "weight -1"), ("", "'' is not CALLS"),
])
def test_a_bad_calls_per_turn_is_refused_in_one_line(text, says):
    with pytest.raises(BadOption) as refused:
        calls_per_turn(text)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(BadOption, match="--same-key 1.5: a chance, from 0 to 1"):
        settings_from("--same-key", "1.5")


def test_a_seed_gives_the_same_turns_and_one_call_per_turn_draws_what_an_agent_drew_before_turns():
    settings = settings_from("--calls-per-turn", "1:60,2:25,4:15", "--same-key", "0.5")
    toolbox = Toolbox(settings)

    def turns(seed: str) -> list[tuple]:
        rng = random.Random(seed)
        drawn = [plan_turn(n, rng, toolbox.pick, settings.calls_per_turn, settings.same_key) for n in range(1, 201)]
        return [(turn.same_key_pairs, [(c.tool.name, c.seed, c.arguments) for c in turn.calls]) for turn in drawn]

    assert turns("7:p0-a1") == turns("7:p0-a1") != turns("8:p0-a1")
    assert {len(calls) for _, calls in turns("7:p0-a1")} == {1, 2, 4}
    # One call per turn: the tool and seed an agent drew before turns existed, its arguments left to the adapter.
    default = settings_from()
    rng, before = random.Random("7:p0-a1"), random.Random("7:p0-a1")
    for number in range(1, 101):
        [call] = plan_turn(number, rng, toolbox.pick, default.calls_per_turn, default.same_key).calls
        assert (call.tool, call.seed, call.arguments) == (toolbox.pick(before), before.getrandbits(64), None)


def test_same_key_copies_an_earlier_calls_key_of_the_same_kind():
    settings = settings_from("--scenario", "optimistic_locking,deadlock", "--calls-per-turn", "3",
                             "--same-key", "1")
    toolbox = Toolbox(settings)
    rng = random.Random(1)
    for number in range(1, 301):
        turn = plan_turn(number, rng, toolbox.pick, settings.calls_per_turn, settings.same_key)
        assert turn.same_key_pairs == 2, "every later call took a key: every tool has an account"
        first = {turn.calls[0].arguments[name] for name, _ in turn.calls[0].tool.keys}
        for call in turn.calls[1:]:
            accounts = [call.arguments[name] for name, _ in call.tool.keys]
            assert len(set(accounts)) == len(accounts), "a transfer's payer and payee stay apart"
        second = turn.calls[1]
        assert first & {second.arguments[name] for name, _ in second.tool.keys}, "the second took one of the first's"


def _nap(tx):
    """Its backend, and the server's clock as its transaction started and as its nap ended."""
    pid, started = tx.execute("SELECT pg_backend_pid(), clock_timestamp()").fetchone()
    tx.execute("SELECT pg_sleep(%s)", (NAP_S,))
    return {"pid": pid, "started": started.isoformat(), "ended": tx.execute("SELECT clock_timestamp()").fetchone()[0]
            .isoformat()}


def _turn(tool: Tool, calls: int) -> Turn:
    return Turn(1, tuple(PlannedCall(tool, seed) for seed in range(calls)), 0)


def test_a_turns_calls_overlap_on_the_server(servers, schema):
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder, size=4)
    with closing(pool):
        figures = run_turn(adapter, "p0-a1", _turn(Tool("nap", _nap, arguments=no_arguments), 4))
    values = [record.value for record in sorted(recorder.records, key=lambda r: r.slot)]
    assert [r.outcome for r in recorder.records] == [Outcome.SUCCEEDED] * 4
    assert sorted(r.slot for r in recorder.records) == [0, 1, 2, 3] and {r.turn for r in recorder.records} == {1}
    assert len({value["pid"] for value in values}) == 4, "four backends"
    for a, b in itertools.combinations(values, 2):  # ISO timestamps of one server's clock compare as text
        assert a["started"] < b["ended"] and b["started"] < a["ended"], "each pair of the turn's calls overlapped"
    assert figures.calls == 4 and not figures.conflicted


def _load_sessions_active(admin, schema: str) -> int:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state <> 'idle'",
                         (load_application_name(schema),)).fetchone()[0]


def test_an_agent_stopped_mid_turn_leaves_no_call_running(servers, admin, schema):
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder, size=3)
    with closing(pool):
        def sleeper(tx):
            tx.execute("SELECT pg_sleep(30)")

        agent = gevent.spawn(run_turn, adapter, "p0-a1", _turn(Tool("sleeper", sleeper, arguments=no_arguments), 3))
        with gevent.Timeout(10, AssertionError("the turn's three calls never ran at once")):
            while _load_sessions_active(admin, schema) < 3:
                gevent.sleep(0.05)
        agent.kill(timeout=10)  # as Locust stops an agent
        assert agent.dead and adapter.calls_in_flight == 0
        assert sorted(r.outcome.value for r in recorder.records) == ["interrupted"] * 3
        with gevent.Timeout(5, AssertionError("a stopped turn's statement still runs on the server")):
            while _load_sessions_active(admin, schema):
                gevent.sleep(0.05)


def test_two_calls_of_a_turn_on_one_account_that_overlap_and_conflict_are_a_collision(servers, admin, schema):
    """Both read the account's version, work while holding nothing, and write: the second finds
    the version moved (a version conflict), retries, and succeeds."""
    prepared_schema(admin, schema)
    recorder = Recorder()
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder, size=2, tool_work_s=0.3,
                               policy=RetryPolicy(max_tries=3, base_s=0.001, cap_s=0.01))
    deduct = built_in_tool("deduct_credits", schema)
    calls = (PlannedCall(deduct, 1, {"account": 3, "amount": 1}), PlannedCall(deduct, 2, {"account": 3, "amount": 2}))
    with closing(pool):
        figures = run_turn(adapter, "p0-a1", Turn(1, calls, 1))
    assert sorted(len(r.failures) for r in recorder.records) == [0, 1], "one of them met a version conflict"
    assert (figures.conflicted, figures.same_key_pairs, figures.overlapping_same_key_pairs, figures.collisions) == (
        True, 1, 1, 1)
    metrics, shipped = Metrics(), Metrics()
    shipped.record_turn(figures)
    metrics.merge(Metrics.from_dict(json.loads(json.dumps(shipped.to_dict()))))  # as a worker's shipment
    metrics.merge(Metrics.from_dict(json.loads(json.dumps(shipped.to_dict()))))
    section = metrics.turns.section()
    assert (section["turns"], section["calls"], section["calls_per_turn"], section["collisions"]) == (2, 4, {"2": 2}, 2)


def test_over_mcp_a_turns_calls_overlap_in_the_servers_transactions(toolserver, servers, admin, schema):
    prepared_schema(admin, schema)
    server = toolserver.start(schema, "--threads", "4", "--tool-work", str(NAP_S * 1000))
    client = McpClient(McpSettings(server.url, connections=4))
    client.connect()
    recorder = Recorder()
    adapter = McpToolAdapter(client, RetryPolicy(), recorder.call_finished, recorder.call_started)
    deduct = built_in_tool("deduct_credits", schema)
    turn = Turn(1, tuple(PlannedCall(deduct, seed, {"account": seed, "amount": 1}) for seed in range(1, 5)), 0)
    seen: list[set[int]] = []
    turn_over = gevent.event.Event()

    def watch() -> None:
        # Ends between two queries: a greenlet killed in one would leave `admin` mid-command.
        while not turn_over.is_set():
            seen.append({pid for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL",
                (f"toolclash-toolserver:{schema}",))})
            turn_over.wait(0.05)

    watcher = gevent.spawn(watch)
    try:
        figures = run_turn(adapter, "p0-a1", turn)
    finally:
        turn_over.set()
        watcher.join()
        adapter.close()
        client.close()
    assert [r.outcome for r in recorder.records] == [Outcome.SUCCEEDED] * 4 and figures.calls == 4
    assert max(len(pids) for pids in seen) == 4, "four of the server's backends in a transaction at once"


def test_the_pool_the_connections_and_the_threads_count_the_calls_a_turn_runs_at_once():
    turns = settings_from("--scenario", "deadlock", "--calls-per-turn", "1:5,4:1")
    assert turns.calls_at_once(3) == 12 and turns.pool_size_for(3) == 12 and turns.tool_server_threads(3) == 12
    assert turns.pool_size_for(10) == 20, "still at most 20"
    assert settings_from("--scenario", "deadlock").pool_size_for(3) == 3


def test_a_short_run_of_turns_reports_them_and_writes_each_lane_as_a_sequential_process(
        servers, schema, tmp_path, locust):
    history, report_path = tmp_path / "history.jsonl", tmp_path / "report.json"
    done = locust.run(*servers.args(schema), "--users", "12", "--spawn-rate", "100", "--run-time", "3s",
                      "--scenario", "optimistic_locking,deadlock", "--accounts", "20",
                      "--calls-per-turn", "1:1,3:2", "--same-key", "0.5", "--tool-work", "20",
                      "--sla", "sla/without_latency.toml", "--history", str(history),
                      "--report-json", str(report_path))
    report = read_report(report_path)
    # The verdict may fail an SLA rule: deductions that share their account in a turn give up on
    # version conflicts more often on a busy machine. The audits must hold.
    assert done.returncode == report["exit_code"] and report["audit"]["ok"], done.stdout[-3000:] + done.stderr[-3000:]
    assert report["evidence"]["ok"], report["evidence"]["problems"]
    turns = report["turns"]
    assert turns["turns"] > 0 and set(turns["calls_per_turn"]) == {"1", "3"}
    assert turns["same_key_pairs"] > 0 and turns["latency_ms"]["count"] == turns["turns"]
    assert report["settings"]["calls_per_turn"] == "1:1,3:2" and report["settings"]["same_key"] == 0.5
    assert f"turns: {turns['turns']} " in done.stdout
    lines = [json.loads(text) for text in history.read_text(encoding="utf-8").splitlines()]
    calls = [line for line in lines if line["type"] != "run"]
    assert all(line["lane"] == f"{line['agent']}/{line['lane'].split('/')[1]}" and line["turn"] >= 1
               for line in calls)
    by_lane: dict[str, list[dict]] = {}
    for line in calls:
        by_lane.setdefault(line["lane"], []).append(line)
    for lane, its in by_lane.items():  # invoke, completion, invoke, ...: never two calls at once in a lane
        kinds = ["invoke" if line["type"] == "invoke" else "done" for line in its]
        assert kinds[:len(kinds) // 2 * 2] == ["invoke", "done"] * (len(kinds) // 2), lane
    # A turn of three: its calls invoked before any of them completed, in three lanes of one agent.
    firsts: dict[tuple[str, int], list[str]] = {}
    for line in calls:
        firsts.setdefault((line["agent"], line["turn"]), []).append(line["type"])
    assert any(types[:3] == ["invoke"] * 3 for types in firsts.values())
