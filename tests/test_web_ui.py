"""Driven from Locust's web UI: each test started and stopped there is audited and reported,
and the last verdict is the exit code."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support import LocustProcess, own_master_port, read_report, wait_until


def _post(port: int, path: str, **form: object) -> None:
    body = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=10) as answer:
        assert answer.status == 200


def _post_json(port: int, path: str, **form: object) -> dict:
    body = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=30) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def _get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        return json.loads(answer.read())


def _ready(port: int, workers: int) -> bool:
    """The web UI can start a test: with `workers` workers connected and ready (a worker is ready
    again a while, --stop-timeout, after the last test stopped)."""
    stats = _get_json(port, "/stats/requests")
    connected = stats.get("workers", [])
    return len(connected) == workers and all(w["state"] == "ready" for w in connected)


def ramp_running(port: int, agents: int, tools: set[str]) -> dict | None:
    """The ramp's live figures, once all its `agents` run and each of its `tools` was called
    (on a master: as the workers' shipments tell it); None before."""
    data = _get_json(port, "/toolclash/data")
    called = {row["tool"] for row in data["figures"]["rows"][:-1] if row["calls"] > 0}
    return data if data["agents"] == agents and tools <= called else None


def _one_ramp(port: int, report_path: Path, tools: set[str], workers: int = 0, **form: object) -> dict:
    """Start a test from the form, let it run until each of its tools was called, stop it; its report."""
    before = report_path.stat().st_mtime_ns if report_path.exists() else 0
    wait_until(lambda: _ready(port, workers), "the web UI to be ready for a test")
    answer = _post_json(port, "/swarm", **form)
    assert answer["success"], answer
    wait_until(lambda: ramp_running(port, int(form["user_count"]), tools), "the ramp's agents and calls")
    _post(port, "/stop")
    wait_until(lambda: report_path.exists() and report_path.stat().st_mtime_ns != before, "the ramp's report")
    return read_report(report_path)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_ramps_from_the_web_ui_are_each_audited(servers, schema, tmp_path, locust):
    report_path = tmp_path / "report.json"
    run = locust.start("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                       "--scenario", "optimistic_locking,queue,list_append", "--report-json", str(report_path),
                       headless=False, web=True)
    run.wait_for_web_ui(30)
    run_ids = []
    for agents in (5, 3):
        _post(run.port, "/swarm", user_count=agents, spawn_rate=agents)
        live = wait_until(lambda: ramp_running(run.port, agents,
                                               {"deduct_credits", "enqueue_job", "dequeue_job", "list_append"}),
                          "the ramp's agents and calls")
        assert live["workflows"] is None, "no workflows table in a run without workflows"
        before = report_path.stat().st_mtime if report_path.exists() else 0
        _post(run.port, "/stop")
        wait_until(lambda: report_path.exists() and report_path.stat().st_mtime != before, "the ramp's report",
                   timeout=30)
        report = read_report(report_path)
        assert report["run"]["agents"] == agents and report["audit"]["ok"]
        assert sum(t["calls"] for t in report["tools"].values()) > 0
        run_ids.append(report["run"]["run_id"])
        # The tab's history table is the report's (drawn by panel.js once the run is audited).
        shown = wait_until(lambda: (d := _get_json(run.port, "/toolclash/data"))["verdict"]
                           and d["verdict"]["run"]["run_id"] == run_ids[-1] and d, "the tab's verdict")
        assert shown["verdict"]["history_check"] == report["history_check"]
        assert report["history_check"]["consistency_model"] == "read-committed"
    assert run_ids[0] != run_ids[1], "each test in the web UI is a run of its own"
    returncode = run.terminate(60)
    assert returncode == 0 == read_report(report_path)["exit_code"], run.stderr()[-2000:]
    assert run.stdout().count("verdict: PASS") >= 2


def test_the_start_form_sets_each_ramps_toolclash_options_on_the_workers_too(servers, schema, tmp_path, locust):
    report_path, master_port = tmp_path / "report.json", own_master_port()
    # A worker is ready for the next ramp once --stop-timeout has passed (Locust's): 1 s, not locust.conf's 10.
    master = locust.start("--master", *master_port[:2], "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url,
                          "--schema", schema, "--report-json", str(report_path), "--stop-timeout", "1", headless=False,
                          web=True)
    worker = locust.start("--worker", "--master-host", "127.0.0.1", *master_port[2:], headless=False)
    port = master.port
    try:
        master.wait_for_web_ui(30)
        ramps = [
            ({"scenario": "optimistic_locking", "accounts": "10", "isolation": "repeatable_read"}, {"deduct_credits"}),
            # A think time drawn from a distribution: the form takes its text, and the report shows it as given.
            ({"scenario": "queue", "queue_capacity": "5", "think_time": "uniform:1:3"}, {"enqueue_job", "dequeue_job"}),
        ]
        for form, tools in ramps:
            report = _one_ramp(port, report_path, tools, 1, user_count=4, spawn_rate=4, **form)
            assert set(report["tools"]) == tools, report["tools"]
            assert report["run"]["scenarios"] == [form["scenario"]]
            for key in set(form) - {"scenario"}:
                assert str(report["settings"].get(key, report["settings"].get(f"{key}_ms"))) in (form[key],
                                                                                               f"{form[key]}.0")
            assert set(report["workers"]["settings"].values()) == {report["run"]["settings_fingerprint"]}
            assert report["evidence"]["ok"], report["evidence"]
        assert report["settings"]["accounts"] == 10, "a field left as it was keeps the last ramp's value"
    finally:
        _stop(master)
        _stop(worker)  # it may be sleeping out --stop-timeout, deaf to the master's quit


def _stop(run: LocustProcess) -> int:
    """SIGTERM, as a service manager stops it; killed if it has not ended 60 s later."""
    try:
        return run.terminate(60)
    finally:
        run.close()


def test_a_bad_value_from_the_form_is_refused_with_the_command_lines_line_and_nothing_starts(servers, schema,
                                                                                            tmp_path, locust):
    """The web UI's start form's real run: each refusal is one line, in the answer (and printed),
    and nothing starts; the messages are the settings parser's (tests/test_bad_input.py)."""
    report_path = tmp_path / "report.json"
    process = locust.start("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                           "--scenario", "optimistic_locking", "--accounts", "50", "--report-json", str(report_path),
                           headless=False, web=True)
    port = process.port
    try:
        process.wait_for_web_ui(30)
        refusals = []
        for form, line in (
            ({"accounts": "1"}, "toolclash: error: --accounts 1: must be at least 2"),
            ({"accounts": "many"}, "toolclash: error: --accounts 'many': give a whole number"),
            ({"scenario": "deadlock,nonsense"}, "toolclash: error: --scenario: unknown scenario 'nonsense'"),
            ({"isolation": "chaotic"}, "toolclash: error: --isolation 'chaotic': choose one of"),
            ({"think_time": "lognormal:10s:2s"}, "toolclash: error: --think-time 'lognormal:10s:2s': the p99"),
            ({"schema": "public"}, "toolclash: error: --schema: fixed when the process starts"),
        ):
            answer = _post_json(port, "/swarm", user_count=2, spawn_rate=2, **form)
            assert answer["success"] is False and answer["message"].startswith(line), answer
            assert _get_json(port, "/stats/requests")["state"] == "ready", "nothing started"
            refusals.append(answer["message"])
        assert not report_path.exists()
        stderr = process.stderr()
        assert [line for line in stderr.splitlines() if line.startswith("toolclash: error:")] == refusals
        assert "Traceback" not in stderr
        # Nothing of the refused forms was applied: a start without them runs the command line's options.
        report = _one_ramp(port, report_path, {"deduct_credits"}, user_count=2, spawn_rate=2)
        assert set(report["tools"]) == {"deduct_credits"} and report["settings"]["accounts"] == 50
    finally:
        _stop(process)
