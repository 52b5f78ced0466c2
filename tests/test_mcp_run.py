"""Runs whose agents call their tools over MCP, through the real `locust` command: on the builtin
tool server toolclash starts (--mcp-server builtin), on one the test starts itself (--mcp-url, the
stateless era), with the servers' data corrupted from another session during the run (the
audits FAIL by identity, naming their checks), on the server's careless mode (every scenario
FAILs, naming the checks docs/mcp.md's careless table names), and an unreachable server refused
before any load. What is refused without a server is tests/test_mcp_options.py's."""

from __future__ import annotations

import re

import psutil
import pytest

from harness.report_shape import Report
from tests.report_conformance import nonconforming
from tests.support import free_port, read_report, rows_in
from tests.test_scenarios import CORRUPTIONS, audit_fails_on_data_corrupted_during_the_run
from tests.test_toolserver_careless import careless_table

# Latency figures are noise on a shared machine; the rules over what the agents saw are not.
WITHOUT_LATENCY = ("--sla", "sla/without_latency.toml")


def _run(servers, schema: str, tmp_path, *options: str, seconds: int = 5) -> list[str]:
    return [*servers.args(schema), "--users", "20", "--spawn-rate", "20", "--run-time", f"{seconds}s",
            *WITHOUT_LATENCY, "--report-json", str(tmp_path / "report.json"), *options]


def _passed(done, tmp_path) -> dict:
    """A run that PASSed: every audit check held, calls made, what Locust was told of them."""
    report = read_report(tmp_path / "report.json")
    assert done.returncode == 0 and report["verdict"] == "pass", done.stdout[-3000:] + done.stderr[-2000:]
    assert report["audit"]["ok"] and all(check["ok"] for check in report["audit"]["checks"])
    assert report["evidence"]["problems"] == [] and report["not_audited_by_identity"] == []
    calls = sum(tool["calls"] for tool in report["tools"].values())
    assert calls > 100 and report["errors"] == 0
    assert nonconforming(report, Report) == [], "the report has exactly the keys and types of its TypedDicts"
    told = re.search(r"^\s+Aggregated\s+(\d+)", done.stdout + done.stderr, re.M)
    assert told and int(told[1]) == calls, "Locust was told of each call once"
    return report


def _toolservers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("toolserver.__main__" in part for part in p.info["cmdline"] or ())]


def test_the_builtin_server_runs_the_default_scenarios_over_mcp_and_the_audits_hold_by_identity(
        servers, admin, schema, tmp_path, locust):
    """On two worker processes, which the master tells the server's URL at the test's start. The
    shell's variables of the server's own options do not reach the server toolclash starts (it
    would serve without sessions, carelessly). At serializable, where the default mix takes the
    isolation scenario, which the careless server fails below (the read-committed default mix is
    the next test's); with more tries, so that the server's retries of serialization failures do
    not give up often enough, on a busy machine, to fail the success rate asked to hold."""
    before = {p.pid for p in _toolservers()}
    done = locust.run(*_run(servers, schema, tmp_path, "--mcp-server", "builtin", "--mcp-era", "session",
                            "--processes", "2", "--isolation", "serializable", "--max-tries", "10"),
                      env={"TOOLCLASH_TOOLSERVER_STATELESS": "true", "TOOLCLASH_TOOLSERVER_CARELESS": "true"})
    report = _passed(done, tmp_path)
    assert "isolation" in report["run"]["scenarios"] and report["run"]["isolation"] == "serializable"
    assert report["transport"]["mcp"]["server_info"]["title"] == "toolclash's reference tool server"
    transport = report["transport"]
    assert transport["kind"] == "mcp"
    mcp = transport["mcp"]
    assert (mcp["server"], mcp["era"], mcp["protocol_version"]) == ("builtin", "session", "2025-11-25")
    assert mcp["server_info"]["name"] == "toolclash-toolserver" and mcp["url"].startswith("http://127.0.0.1:")
    # One session per agent, and the one each worker's client lists the tools in; each DELETEd.
    assert mcp["sessions"]["opened"] == mcp["sessions"]["closed"] == 22 and mcp["sessions"]["renewed"] == 0
    assert set(report["workers"]["shipped"]) and not report["workers"]["lost"]
    calls = sum(tool["calls"] for tool in report["tools"].values())
    assert mcp["replies"]["event_stream"] >= calls and mcp["replies"]["json"] == 0
    assert mcp["attempts"]["client"] == sum(tool["attempts"] for tool in report["tools"].values())
    assert mcp["attempts"]["server"] == sum(tool["server_attempts"] for tool in report["tools"].values()) >= calls
    unanswered = sum(t["indeterminate"] + t["cut_off"] for t in report["tools"].values())
    assert mcp["calls_server_reported"] == calls - unanswered
    assert {item["figure"] for item in mcp["not_measurable"]} == {"pool", "deadlock timings"}
    # The pool is the server's: no figure of it, no check that would hold on nothing.
    assert report["pool"]["peak_waiting"] is None and report["pool"]["at_rest"] == []
    assert "pool_wait" not in report["latency_ms"] and report["latency_ms"]["mcp_connection_wait"]["count"] > 0
    assert not {"pool_connections_returned", "no_session_idle_in_transaction"} & {
        c["name"] for c in report["audit"]["checks"]}
    # The server's sessions ended before the audits read: stopped with the load, none left.
    assert report["server_counters"]["load_sessions_left"] == 0
    assert {p.pid for p in _toolservers()} <= before
    assert f"  MCP: {mcp['url']} (builtin server toolclash-toolserver), session era 2025-11-25;" in done.stdout
    assert "pool: not measurable over MCP" in done.stdout


def test_a_users_server_in_the_stateless_era_runs_the_scenarios_and_the_report_says_what_it_could_not_see(
        servers, admin, schema, tmp_path, locust, toolserver):
    server = toolserver.start(schema, "--stateless")
    url = server.url
    done = locust.run(*_run(servers, schema, tmp_path, "--mcp-url", url + "?key=s3cret"))
    report = _passed(done, tmp_path)
    mcp = report["transport"]["mcp"]
    assert (mcp["server"], mcp["era"], mcp["protocol_version"]) == ("user", "stateless", "2026-07-28")
    assert mcp["url"] == url + "?key=***" and "s3cret" not in done.stdout + done.stderr
    assert mcp["sessions"] == {"opened": 0, "renewed": 0, "closed": 0} and mcp["replies"]["json"] > 0
    assert report["server_counters"]["load_sessions_left"] is None, "its sessions are its own: not looked at"
    assert "load sessions" in {item["figure"] for item in mcp["not_measurable"]}
    assert {"server_settings_unseen", "server_sessions_unseen"} <= {n["kind"] for n in report["evidence"]["notes"]}
    assert server.process.poll() is None, "toolclash leaves a user's server running"


def test_data_corrupted_during_a_run_over_mcp_fails_the_exact_checks(servers, admin, schema, tmp_path, locust):
    """The Jepsen bar through MCP: four agents' charges made to disagree, one torn, in PostgreSQL
    and in Redis, while the agents charge through the builtin server (the case of
    test_scenarios' corruption tests, which names each check that must fail and what)."""
    [case] = [c for c in CORRUPTIONS if c.scenario == "cross_service"]
    report = audit_fails_on_data_corrupted_during_the_run(case, servers, admin, schema, tmp_path, locust,
                                                          "--mcp-server", "builtin")
    assert report["transport"]["kind"] == "mcp" and report["transport"]["mcp"]["server"] == "builtin"


def test_an_unreachable_mcp_server_is_refused_in_one_line_before_any_load(servers, admin, schema, tmp_path, locust):
    url = f"http://token@127.0.0.1:{free_port()}/mcp"
    done = locust.run(*_run(servers, schema, tmp_path, "--mcp-url", url), timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith("toolclash: error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"toolclash: error: MCP server http://***@127.0.0.1:{url.rsplit(':', 1)[1]}")
    assert "Traceback" not in done.stderr and "token@" not in done.stderr + done.stdout
    assert not (tmp_path / "report.json").exists() and rows_in(admin, schema, "ledger") == 0


# Each scenario on the careless server, in two runs: those the careless tools break at read
# committed (few accounts, a small queue and a 20 ms window between each read and the write that
# trusts it, so that calls meet in it however busy the machine), and the isolation scenario at
# serializable, where the careful server passes it (the first test above). Their checks are each
# one scenario's, so one run's failures still say which scenario failed.
CARELESS_RUNS = {
    "read_committed": (("optimistic_locking", "deadlock", "pool_exhaustion", "cross_service", "queue", "agent_state"),
                       ("--accounts", "5", "--queue-capacity", "3", "--tool-work", "20")),
    "serializable": (("isolation",), ("--isolation", "serializable")),
}
# What docs/mcp.md's careless mode says may fail beside the table's under a run's load: a
# consumer that peeks while a job of a higher level, or an older one, is queued before its claim.
MAY_FAIL_TOO = {"priority_order_held", "fifo_within_level"}


@pytest.mark.parametrize("run", CARELESS_RUNS)
def test_every_scenario_on_the_careless_server_fails_the_checks_of_its_table(
        servers, admin, schema, tmp_path, locust, run):
    """The careful server's counterparts are the default mix's runs above."""
    scenarios, options = CARELESS_RUNS[run]
    done = locust.run(*_run(servers, schema, tmp_path, "--mcp-server", "careless", "--scenario", ",".join(scenarios),
                            *options, seconds=4))
    report = read_report(tmp_path / "report.json")
    failed = {check["name"] for check in report["audit"]["checks"] if not check["ok"]}
    expected = set().union(*(checks for (scenario, _), checks in careless_table().items() if scenario in scenarios))
    assert expected <= failed <= expected | MAY_FAIL_TOO, (sorted(failed), done.stdout[-3000:])
    assert done.returncode == report["exit_code"] == 1 and report["verdict"] == "fail"
    assert report["evidence"]["problems"] == [], "the careless tools fail the audits, not the run"
    mcp = report["transport"]["mcp"]
    assert mcp["server"] == "careless" and mcp["server_info"]["title"].endswith("(careless mode)")
    assert f"  MCP: {mcp['url']} (careless server toolclash-toolserver)," in done.stdout
