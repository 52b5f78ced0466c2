"""Driven from Locust's web UI: each test started and stopped there is audited and reported,
and the last verdict is the exit code."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support import LOCUST, ROOT, free_port, own_master_port, read_report



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


def _locust(log: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "TOOLCLASH_"))}
    with log.open("w") as out:  # a file, not a pipe: nobody reads it while the test runs
        return subprocess.Popen([LOCUST, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _ready(port: int, workers: int) -> bool:
    """The web UI can start a test: with `workers` workers connected and ready (a worker is ready
    again a while, --stop-timeout, after the last test stopped)."""
    stats = _get_json(port, "/stats/requests")
    connected = stats.get("workers", [])
    return len(connected) == workers and all(w["state"] == "ready" for w in connected)


def _one_ramp(port: int, report_path: Path, workers: int = 0, **form: object) -> dict:
    """Start a test from the form, let it run, stop it; its report."""
    before = report_path.stat().st_mtime_ns if report_path.exists() else 0
    _wait_for(lambda: _ready(port, workers), 60)
    answer = _post_json(port, "/swarm", **form)
    assert answer["success"], answer
    time.sleep(3)
    _post(port, "/stop")
    _wait_for(lambda: report_path.exists() and report_path.stat().st_mtime_ns != before, 60)
    return read_report(report_path)


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_ramps_from_the_web_ui_are_each_audited(servers, schema, tmp_path):
    port, report_path = free_port(), tmp_path / "report.json"
    process = subprocess.Popen(
        [LOCUST, "--web-host", "127.0.0.1", "--web-port", str(port), "--pg-dsn", servers.pg_dsn,
         "--redis-url", servers.redis_url, "--schema", schema, "--scenario", "optimistic_locking,queue",
         "--report-json", str(report_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _port_open(port), 30)
        run_ids = []
        for agents in (5, 3):
            _post(port, "/swarm", user_count=agents, spawn_rate=agents)
            time.sleep(3)
            before = report_path.stat().st_mtime if report_path.exists() else 0
            _post(port, "/stop")
            _wait_for(lambda: report_path.exists() and report_path.stat().st_mtime != before, 30)
            report = read_report(report_path)
            assert report["run"]["agents"] == agents and report["audit"]["ok"]
            assert sum(t["calls"] for t in report["tools"].values()) > 0
            run_ids.append(report["run"]["run_id"])
        assert run_ids[0] != run_ids[1], "each test in the web UI is a run of its own"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 == read_report(report_path)["exit_code"], stderr[-2000:]
    assert stdout.count("verdict: PASS") >= 2


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_start_form_sets_each_ramps_toolclash_options_on_the_workers_too(servers, schema, tmp_path):
    port, report_path, master_port = free_port(), tmp_path / "report.json", own_master_port()
    master = _locust(tmp_path / "master.log", "--master", *master_port[:2], "--web-host", "127.0.0.1",
                     "--web-port", str(port), "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url,
                     "--schema", schema, "--report-json", str(report_path))
    worker = _locust(tmp_path / "worker.log", "--worker", "--master-host", "127.0.0.1", *master_port[2:])
    try:
        _wait_for(lambda: _port_open(port), 30)
        ramps = [
            ({"scenario": "optimistic_locking", "accounts": "10", "isolation": "repeatable_read"}, {"deduct_credits"}),
            ({"scenario": "queue", "queue_capacity": "5", "think_time": "2"}, {"enqueue_job", "dequeue_job"}),
        ]
        for form, tools in ramps:
            report = _one_ramp(port, report_path, 1, user_count=4, spawn_rate=4, **form)
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


def test_a_bad_value_from_the_form_is_refused_with_the_command_lines_line_and_nothing_starts(servers, schema,
                                                                                            tmp_path):
    port, report_path = free_port(), tmp_path / "report.json"
    process = _locust(tmp_path / "locust.log", "--web-host", "127.0.0.1", "--web-port", str(port),
                      "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                      "--scenario", "optimistic_locking", "--accounts", "50", "--report-json", str(report_path))
    try:
        _wait_for(lambda: _port_open(port), 30)
        for form, line in (
            ({"accounts": "1"}, "toolclash: error: --accounts 1: must be at least 2"),
            ({"accounts": "many"}, "toolclash: error: --accounts 'many': give a whole number"),
            ({"scenario": "deadlock,nonsense"}, "toolclash: error: --scenario: unknown scenario 'nonsense'"),
            ({"isolation": "chaotic"}, "toolclash: error: --isolation 'chaotic': choose one of"),
            ({"schema": "public"}, "toolclash: error: --schema: fixed when the process starts"),
        ):
            answer = _post_json(port, "/swarm", user_count=2, spawn_rate=2, **form)
            assert answer["success"] is False and answer["message"].startswith(line), answer
            assert _get_json(port, "/stats/requests")["state"] == "ready", "nothing started"
        assert not report_path.exists()
        # Nothing of the refused forms was applied: a start without them runs the command line's options.
        report = _one_ramp(port, report_path, user_count=2, spawn_rate=2)
        assert set(report["tools"]) == {"deduct_credits"} and report["settings"]["accounts"] == 50
    finally:
        _stop(process)
