"""--history and --seed: the history read back and checked against the ledger, per-worker files
joined as docs/observing.md says, and the same seed making the same calls."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

from psycopg import sql

from db.pool import SessionSettings
from db.tool import Tool
from harness.output.history import History
from tests.support import ROOT, Recorder, adapter_on, prepared_schema, read_report
from transport.call_record import Outcome

# The tools that write one ledger row when, and only when, they succeed.
LEDGER_TOOLS = {"deduct_credits", "transfer_credits", "charge_usage"}
COMPLETIONS = {"ok", "fail", "info"}
CREDITS = ("--scenario", "optimistic_locking,deadlock")


def _lines(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]


def _ledger(admin, schema) -> list[tuple]:
    """(op id, tool, debit, credit, amount) of every row, in the order they were written."""
    return admin.execute(sql.SQL("SELECT op_id::text, tool, debit_account, credit_account, amount FROM {}.ledger"
                                 " ORDER BY recorded_at").format(sql.Identifier(schema))).fetchall()


def _check_calls(lines: list[dict]) -> dict[str, dict]:
    """Each call invoked once and completed at most once, after its invocation, in the same
    process; its completion by op id."""
    invoked: dict[str, dict] = {}
    completed: dict[str, dict] = {}
    for line in lines:
        if line["type"] == "invoke":
            assert line["op"] not in invoked, f"op {line['op']} invoked twice"
            invoked[line["op"]] = line
        elif line["type"] in COMPLETIONS:
            assert line["op"] not in completed, f"op {line['op']} completed twice"
            invocation = invoked.get(line["op"])
            assert invocation is not None, f"op {line['op']} completed before it was invoked"
            assert (invocation["process"], invocation["agent"], invocation["tool"]) == \
                   (line["process"], line["agent"], line["tool"])
            assert line["time"] >= invocation["time"]
            completed[line["op"]] = line
        else:
            assert line["type"] == "run", line
    return completed


def _check_against_ledger(completed: dict[str, dict], ledger: list[tuple]) -> None:
    by_type = {kind: {op for op, line in completed.items() if line["type"] == kind and line["tool"] in LEDGER_TOOLS}
               for kind in COMPLETIONS}
    in_ledger = {row[0] for row in ledger}
    assert by_type["ok"], "the run made credit calls that succeeded"
    assert by_type["ok"] <= in_ledger, "every ok call wrote its ledger row"
    assert not by_type["fail"] & in_ledger, "no failed call wrote a ledger row"
    assert in_ledger <= by_type["ok"] | by_type["info"], "every ledger row is an ok call's, or an unknown outcome's"
    # Each completion carries what its tool returned: for a credit call, the ledger row it wrote.
    for op_id, tool, debit, credit, amount in ledger:
        value = completed[op_id]["value"]
        assert (value["debit"], value.get("credit"), value["amount"]) == (debit, credit, amount), (tool, value)


def _check_arguments_against_ledger(lines: list[dict], ledger: list[tuple]) -> None:
    """Each ledger row holds what its call's invocation asked for: the arguments drawn for it."""
    asked = {line["op"]: line["arguments"] for line in lines if line["type"] == "invoke"}
    for op_id, tool, debit, credit, amount in ledger:
        wrote = ({"payer": debit, "payee": credit, "amount": amount} if tool == "transfer_credits"
                 else {"account": debit, "amount": amount})
        assert asked[op_id] == wrote, (tool, op_id)


def test_the_history_of_a_run_agrees_with_the_ledger_and_the_report(servers, admin, schema, tmp_path, locust):
    history, report_path = tmp_path / "history.jsonl", tmp_path / "report.json"
    done = locust.run(*servers.args(schema), "--users", "10", "--spawn-rate", "10", "--run-time", "5s",
                      "--accounts", "20", "--history", str(history), "--report-json", str(report_path))
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 0, done.stderr[-3000:]

    lines = _lines(history)
    run = lines[0]
    assert run["type"] == "run" and run["process"] == "local" and run["run_id"] == report["run"]["run_id"]
    # No --seed: one was chosen, reported, printed and written in the history.
    assert isinstance(report["run"]["seed"], int) and run["seed"] == report["run"]["seed"]
    assert f"seed {run['seed']}" in done.stdout
    assert all(line["process"] == "local" for line in lines)

    completed = _check_calls(lines)
    invocations = [line for line in lines if line["type"] == "invoke"]
    assert len(completed) == len(invocations), "every call of a run stopped in order completed"
    ledger = _ledger(admin, schema)
    _check_against_ledger(completed, ledger)
    _check_arguments_against_ledger(lines, ledger)
    # Every built-in tool declares its arguments: none left to tx.rng.
    assert all(isinstance(line["arguments"], dict) for line in invocations)

    # The completions are what the report counted, tool by tool.
    outcomes = Counter((line["tool"], line["outcome"]) for line in completed.values())
    for name, tool in report["tools"].items():
        assert outcomes[name, Outcome.SUCCEEDED.value] == tool["succeeded"], name
        assert outcomes[name, Outcome.INDETERMINATE.value] == tool["indeterminate"], name
        assert outcomes[name, Outcome.FAILED.value] == tool["failed"], name
        assert outcomes[name, Outcome.INTERRUPTED.value] == tool["interrupted"], name
        assert outcomes[name, "cut_off"] == tool["cut_off"], name
    for line in completed.values():
        assert line["attempts"] >= 1 and line["duration_ns"] >= 0
        if line["type"] == "ok":
            assert len(line["failures"]) == line["attempts"] - 1, "every attempt but the last one failed"


def test_workers_write_files_of_their_own_that_join_into_one_history(servers, admin, schema, tmp_path, locust):
    history, report_path = tmp_path / "history.jsonl", tmp_path / "report.json"
    # Left by an earlier run with more workers: not this run's, and joined with nothing.
    stale = tmp_path / "history.jsonl.worker-7"
    stale.write_text(json.dumps({"type": "run", "time": 1, "wall_time_ns": 1, "process": "worker-7",
                                 "run_id": "an-earlier-run", "seed": 1}) + "\n")
    done = locust.run(*servers.args(schema), "--users", "10", "--spawn-rate", "10", "--run-time", "5s",
                      "--processes", "2", *CREDITS, "--accounts", "20", "--history", str(history),
                      "--report-json", str(report_path), timeout=180)
    report = read_report(report_path)
    assert done.returncode == report["exit_code"], done.stderr[-3000:]
    assert report["workers"]["lost"] == []

    files = {"master": history, "worker-0": tmp_path / "history.jsonl.worker-0",
             "worker-1": tmp_path / "history.jsonl.worker-1"}
    per_process = {process: _lines(path) for process, path in files.items()}
    assert [line["type"] for line in per_process["master"]] == ["run"], "the master runs no agent"
    for process, lines in per_process.items():
        assert lines[0]["type"] == "run" and lines[0]["run_id"] == report["run"]["run_id"]
        assert lines[0]["seed"] == report["run"]["seed"]
        assert {line["process"] for line in lines} == {process}
        times = [line["time"] for line in lines]
        assert times == sorted(times), "a process's lines are in its own time order"
    assert all(len(per_process[w]) > 1 for w in ("worker-0", "worker-1")), "both workers ran agents"

    # docs/observing.md's way of joining them.
    joined_run = subprocess.run([sys.executable, "-m", "harness.output.history", str(history)], cwd=ROOT,
                                capture_output=True, text=True, check=True)
    joined = [json.loads(text) for text in joined_run.stdout.splitlines()]
    assert len(joined) == sum(len(lines) for lines in per_process.values())
    assert "worker-7" not in {line["process"] for line in joined}
    wall = [line["wall_time_ns"] for line in joined]
    assert wall == sorted(wall)
    for process, lines in per_process.items():
        assert [line["time"] for line in joined if line["process"] == process] == [line["time"] for line in lines]

    completed = _check_calls(joined)
    ledger = _ledger(admin, schema)
    _check_against_ledger(completed, ledger)
    _check_arguments_against_ledger(joined, ledger)
    for worker, shipped in report["workers"]["shipped"].items():
        assert shipped["succeeded"] > 0, worker
    assert sum(line["type"] == "ok" for line in completed.values()) == sum(
        tool["succeeded"] for tool in report["tools"].values())


def _one_agent_run(locust, servers, admin, schema, tmp_path, name: str,
                   *seed: str) -> tuple[dict, list[tuple], list[tuple]]:
    """A run of one agent: its report, its calls' (tool, seed, arguments) and its ledger rows'
    (tool, debit, credit, amount), in order."""
    history, report_path = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
    done = locust.run(*servers.args(schema), "--users", "1", "--spawn-rate", "1", "--run-time", "3s",
                      *CREDITS, "--accounts", "20", *seed, "--history", str(history), "--report-json", str(report_path))
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 0, done.stderr[-3000:]
    assert f"seed {report['run']['seed']}" in done.stdout
    calls = [(line["tool"], line["seed"], line["arguments"]) for line in _lines(history) if line["type"] == "invoke"]
    return report, calls, [row[1:] for row in _ledger(admin, schema)]


def test_the_same_seed_makes_the_same_calls_and_another_seed_others(servers, admin, schema, tmp_path, locust):
    # No --seed first: the seed the report names makes the same calls again.
    first = _one_agent_run(locust, servers, admin, schema, tmp_path, "first")
    seed = first[0]["run"]["seed"]
    again = _one_agent_run(locust, servers, admin, schema, tmp_path, "again", "--seed", str(seed))
    other = _one_agent_run(locust, servers, admin, schema, tmp_path, "other", "--seed", str(seed + 1))
    assert again[0]["run"]["seed"] == seed and other[0]["run"]["seed"] == seed + 1
    n = min(len(first[1]), len(again[1]), len(other[1]), len(first[2]), len(again[2]), len(other[2]), 50)
    assert n >= 10, "each run made a few calls"
    # The same tools with the same arguments: the history's (tool, seed, arguments) and the ledger's rows.
    assert first[1][:n] == again[1][:n]
    assert first[2][:n] == again[2][:n]
    assert first[1][:n] != other[1][:n]
    assert first[2][:n] != other[2][:n]


def test_the_invocation_is_written_when_the_call_starts(servers, admin, schema, tmp_path):
    prepared_schema(admin, schema)
    path = tmp_path / "history.jsonl"
    history = History(str(path), "local")
    recorder = Recorder()
    recorder.call_finished.add_listener(history.completed)
    seen_during_the_call = []

    def look(tx):
        history.flush()
        seen_during_the_call.extend(_lines(path))

    recorder.call_started.add_listener(history.invoked)
    pool, adapter = adapter_on(servers.pg_dsn, SessionSettings(schema), recorder)
    with closing(pool):
        record = adapter.call(Tool("look", look), "p0-a1", seed=42, turn=3, slot=1)
    history.close()
    assert [line["type"] for line in seen_during_the_call] == ["invoke"]
    assert seen_during_the_call[0] == {"type": "invoke", "time": record.started_ns, "process": "local",
                                       "agent": "p0-a1", "turn": 3, "lane": "p0-a1/1", "op": str(record.op_id),
                                       "tool": "look", "seed": 42, "arguments": None}
    [invoke, ok] = _lines(path)
    assert invoke == seen_during_the_call[0]
    assert ok["type"] == "ok" and ok["op"] == str(record.op_id) and ok["attempts"] == 1 and ok["failures"] == []
    assert (ok["turn"], ok["lane"]) == (3, "p0-a1/1")
