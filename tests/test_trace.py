"""--trace (issue 19): a real agent's turns replayed instead of the turn model. The example trace
parses, its names mapped; every malformed trace is refused in one line naming the file and the
line; a seed gives each agent the same calls; the agents take the trace's agents in order, block
by block per process, again from the first past the last; a worker whose file differs refuses the
test; and one short run replays the example trace exactly (the history's calls, per lane, in order)."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from locust.event import EventHook

from harness.config.option import BadOption
from harness.config.run_settings import settings_summary
from harness.config.settings import file_digest
from harness.distributed.worker_check import Shared, refusal
from harness.run.load import Load
from harness.run.planners import TracePlanner
from tests.support import ROOT, read_report, settings_from

EXAMPLE = ROOT / "examples" / "agent_trace.jsonl"


def _first_tools(planner) -> list[str]:
    return [call.tool.name for call in planner.next_turn().calls]


def test_the_example_trace_parses_with_its_names_mapped_and_its_digest_in_the_settings():
    settings = settings_from("--trace", str(EXAMPLE))
    trace = settings.trace
    assert [name for name, _ in trace.agents] == ["planner", "billing", "mover", "dispatcher"]
    planner = dict(trace.agents)["planner"]
    assert [[call.tool.name for call in turn.calls] for turn in planner] == [
        ["summarize_accounts"], ["deduct_credits", "update_plan"], ["update_plan"]], "get_balances is mapped"
    assert [turn.think_s for turn in planner] == [0.3, 0.6, 0.2]
    assert trace.most_calls == 3 and settings.calls_at_once(2) == 6
    summary = settings_summary(settings)
    assert summary["trace"] == str(EXAMPLE)
    assert summary["trace_sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert settings_summary(settings_from())["trace"] is None


_TURN = '{"agent": "a1", "think_ms": 10, "calls": [{"tool": "deduct_credits", "arguments": {"account": 3}}]}'


@pytest.mark.parametrize(("lines", "line", "says"), [
    ([_TURN, "{not json"], 2, "not JSON"),
    (["", '{"agent": "a1", "calls": [{"tool": "get_balance"}]}'], 2, "tool 'get_balance' is not a tool of this run"),
    (['{"map": {"get_balance": "no_such_tool"}}'], 1, "maps 'get_balance' to 'no_such_tool'"),
    ([_TURN, '{"map": {"x": "deduct_credits"}}'], 2, "\"map\" only on the trace's first line"),
    (['{"agent": "a1", "calls": [{"tool": "increment_counter"}]}'], 1, "add isolation to --scenario"),
    (['{"agent": "a1", "calls": [{"tool": "deduct_credits", "arguments": {"acount": 3}}]}'], 1,
     "deduct_credits takes no argument 'acount' (it takes: account, amount)"),
    (['{"agent": "a1", "calls": [{"tool": "deduct_credits", "arguments": {"account": "3"}}]}'], 1,
     "deduct_credits's account '3': give one of type int"),
    (['{"agent": "a1", "calls": [{"tool": "deduct_credits", "arguments": {"amount": 0}}]}'], 1,
     "deduct_credits's amount 0: Input should be greater than or equal to 1"),
    (['{"agent": "a1", "calls": [{"tool": "enqueue_job", "arguments": {"level": 4}}]}'], 1, "enqueue_job's level 4"),
    (['{"agent": "a1", "calls": [{"tool": "transfer_credits", "arguments": {"payee": 201}}]}'], 1,
     "payee 201: the run has 200 accounts (--accounts)"),
    ([_TURN, '{"agent": "a1", "think_ms": -5, "calls": [{"tool": "dequeue_job"}]}'], 2, "\"think_ms\" -5"),
    (['{"agent": "a1", "calls": []}'], 1, "give a list of 1 to 64 calls"),
    (['{"agent": "a1", "think": 5, "calls": [{"tool": "dequeue_job"}]}'], 1, "unknown field \"think\""),
    (['{"agent": "a1", "calls": [{"tool": "dequeue_job", "args": {}}]}'], 1, "unknown field \"args\""),
    (['{"calls": [{"tool": "dequeue_job"}]}'], 1, "no \"agent\""),
    (['[1, 2]'], 1, "a line is a JSON object"),
])
def test_a_malformed_trace_is_refused_in_one_line_naming_the_file_and_the_line(tmp_path, lines, line, says):
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BadOption) as refused:
        settings_from("--trace", str(path))
    message = str(refused.value)
    assert message.startswith(f"--trace {path} line {line}: ") and says in message and "\n" not in message


def test_an_empty_or_missing_trace_and_the_turn_models_options_beside_one_are_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n{\"map\": {}}\n", encoding="utf-8")
    with pytest.raises(BadOption, match="no turn in it"):
        settings_from("--trace", str(empty))
    with pytest.raises(BadOption, match="cannot read it"):
        settings_from("--trace", str(tmp_path / "absent.jsonl"))
    for option, value in (("--think-time", "lognormal:2s:10s"), ("--calls-per-turn", "1:1,2:1"), ("--same-key", "0.5")):
        with pytest.raises(BadOption, match=f"^{option} with --trace: the trace gives"):
            settings_from("--trace", str(EXAMPLE), option, value)


def test_a_seed_gives_a_trace_agent_the_same_calls_its_left_out_arguments_drawn_and_it_loops():
    settings = settings_from("--trace", str(EXAMPLE))
    billing = dict(settings.trace.agents)["billing"]

    def replayed(seed: str, turns: int = 5) -> list[list[tuple]]:
        planner = TracePlanner(billing, random.Random(seed))
        return [[(c.tool.name, c.seed, c.arguments) for c in planner.next_turn().calls] for _ in range(turns)]

    assert replayed("7:p0-a2") == replayed("7:p0-a2") != replayed("8:p0-a2")
    first, second, third = replayed("7:p0-a2")[:3]
    assert [(tool, arguments) for tool, _, arguments in first] == [
        ("charge_usage", {"account": 7, "amount": 10}), ("charge_usage", {"account": 7, "amount": 15})]
    [(tool, seed, arguments)] = second  # its amount left out: drawn from the call's seed
    assert tool == "deduct_credits" and arguments == {"account": 8, "amount": billing[1].calls[0].tool.draw_arguments(
        seed)["amount"]}
    assert [(tool, arguments) for tool, _, arguments in third] == [(t, a) for t, _, a in first], "again from the first"
    planner = TracePlanner(billing, random.Random(1))
    assert planner.thinks_first() and not planner.thinks_first(), "the first turn's think comes before it, once"
    thinks = []
    for _ in range(4):
        thinks.append(planner.think())
        planner.next_turn()
    assert thinks == [0.2, 0.15, 0.2, 0.15]


def test_each_process_takes_its_own_block_of_the_trace_agents_and_again_from_the_first(servers, schema):
    settings = settings_from("--trace", str(EXAMPLE), "--schema", schema)
    first_turns = {name: [call.tool.name for call in turns[0].calls] for name, turns in settings.trace.agents}
    dealt = {}
    for process, agents in ((0, 6), (1, 3)):
        load = Load(settings, EventHook(), process)
        load.pg_dsn, load.redis_url = servers.pg_dsn, servers.redis_url
        assert load.start(agents, seed=7) is None
        try:
            dealt[process] = [_first_tools(load.planner(*load.next_agent())) for _ in range(agents)]
        finally:
            load.stop()
    names = [name for name, _ in settings.trace.agents]
    assert dealt[0] == [first_turns[name] for name in names + names[:2]]
    assert dealt[1] == [first_turns[name] for name in names[3:] + names[:2]], "process 1: agents 3 on, modulo 4"


def test_a_worker_whose_trace_is_another_file_refuses_the_test_in_one_line(tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(EXAMPLE.read_bytes())
    servers = ("postgresql://postgres@127.0.0.1:5432/test", "redis://127.0.0.1:6379/0", "toolclash")
    master = Shared(*servers, trace=str(trace), trace_digest=file_digest(str(trace)))
    worker = Shared(None, None, None)
    assert refusal(worker, master) is None
    trace.write_bytes(EXAMPLE.read_bytes() + b'{"agent": "extra", "calls": [{"tool": "dequeue_job"}]}\n')
    line = refusal(worker, master)
    assert line.startswith(f"--trace: this worker's {trace} has sha256 {file_digest(str(trace))[:12]} but the master"
                           f" replays {trace} (sha256 {master.trace_digest[:12]})") and "\n" not in line
    trace.unlink()
    line = refusal(worker, master)
    assert line.startswith("--trace: the master replays") and "cannot read" in line and "\n" not in line


def test_a_run_replays_the_trace_exactly_and_a_malformed_one_exits_2_before_any_load(
        servers, schema, tmp_path, locust):
    history, report_path = tmp_path / "history.jsonl", tmp_path / "report.json"
    done = locust.run(*servers.args(schema), "--users", "6", "--spawn-rate", "100", "--run-time", "3s",
                      "--trace", str(EXAMPLE), "--seed", "7", "--sla", "sla/without_latency.toml",
                      "--history", str(history), "--report-json", str(report_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read_report(report_path)["settings"]["trace_sha256"] == file_digest(str(EXAMPLE))
    lines = [json.loads(text) for text in history.read_text(encoding="utf-8").splitlines()]
    invoked: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        if line["type"] == "invoke":
            invoked[line["agent"]].append(line)
    assert sorted(invoked) == [f"p0-a{n}" for n in range(1, 7)]
    agents = settings_from("--trace", str(EXAMPLE)).trace.agents
    for agent, its in invoked.items():
        # Agent n replays trace agent n - 1 (modulo 4), with the seed's calls: planned again here.
        _, turns = agents[(int(agent.rpartition("-a")[2]) - 1) % len(agents)]
        planner = TracePlanner(turns, random.Random(f"7:{agent}"))
        last = max(line["turn"] for line in its)
        planned = {(turn.number, slot): call for turn in (planner.next_turn() for _ in range(last))
                   for slot, call in enumerate(turn.calls)}
        assert last > len(turns), f"{agent} went through its trace agent's turns and began again"
        done_turns = {(line["turn"], int(line["lane"].split("/")[1])) for line in its}
        assert {key for key in planned if key[0] < last} <= done_turns, "every turn but the last, whole"
        for line in its:
            call = planned[line["turn"], int(line["lane"].split("/")[1])]
            arguments = call.arguments if call.arguments is not None else call.tool.draw_arguments(call.seed)
            assert (line["tool"], line["seed"], line["arguments"]) == (call.tool.name, call.seed, arguments), line
        lanes: dict[str, list[int]] = defaultdict(list)
        for line in its:
            lanes[line["lane"]].append(line["turn"])
        assert all(turns_in_lane == sorted(set(turns_in_lane)) for turns_in_lane in lanes.values()), "in order"
    # The trace's think time, waited before each turn: from the last completion of one turn of
    # the planner (agent 1) to the first invocation of its next (a sleep ends no earlier; 5 ms for the clocks' ticks).
    turns = dict(agents)["planner"]
    ended, began = defaultdict(int), defaultdict(lambda: float("inf"))
    for line in lines:
        if line.get("agent") == "p0-a1":
            if line["type"] == "invoke":
                began[line["turn"]] = min(began[line["turn"]], line["time"])
            else:
                ended[line["turn"]] = max(ended[line["turn"]], line["time"])
    gaps = [(began[n + 1] - ended[n]) / 1e9 - turns[n % len(turns)].think_s for n in ended if n + 1 in began]
    assert len(gaps) >= 2 and min(gaps) > -0.005, gaps

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"agent": "a1", "calls": [{"tool": "deduct_credits"}]}\n{"agent": "a1", "calls": [{"tool":'
                   ' "get_balance"}]}\n', encoding="utf-8")
    refused = locust.run(*servers.args(schema), "--users", "1", "--run-time", "1s", "--trace", str(bad))
    assert refused.returncode == 2
    [line] = [text for text in refused.stderr.splitlines() if "toolclash: error:" in text]
    assert f"--trace {bad} line 2: tool 'get_balance' is not a tool of this run" in line
    assert "Traceback" not in refused.stderr and "toolclash run " not in refused.stdout


def test_a_load_process_imports_the_mcp_sdk_only_for_a_trace():
    """The server's argument models a trace is checked against import the MCP SDK: 0.45 s that
    every load process (each worker, each capacity probe) paid at start-up, trace or not."""
    imported = subprocess.run(
        [sys.executable, "-c", "import gevent.monkey; gevent.monkey.patch_all(); import sys, locustfile;"
         " print(sorted(name for name in sys.modules if name.split('.')[0] in ('mcp', 'mcp_types')))"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    assert imported.strip() == "[]", imported
