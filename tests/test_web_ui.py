"""Driven from Locust's web UI: each test started and stopped there is audited and reported,
and the last verdict is the exit code."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from tests.support import LOCUST, ROOT, read_report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, **form: object) -> None:
    body = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=10) as answer:
        assert answer.status == 200


def _wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_ramps_from_the_web_ui_are_each_audited(servers, schema, tmp_path):
    port, report_path = _free_port(), tmp_path / "report.json"
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
