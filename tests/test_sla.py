"""SLA files: what they may say, what is refused before any load starts, and the verdict they give."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness.config.option import BadOption
from harness.config.sla import DEFAULT_SLA_FILE, METRICS, BadSlaFile, evaluate, load_rules
from tests.support import read_report, settings_from

SCOPES = {"optimistic_locking": ["deduct_credits"], "deduct_credits": ["deduct_credits"],
          "deadlock": ["transfer_credits"], "transfer_credits": ["transfer_credits"]}


def _report(**tools_p95):
    tools = {
        name: {"calls": 100, "succeeded": 90, "failed": 10, "refused": 0, "indeterminate": 0, "cut_off": 0,
               "attempts": 120, "failures": {"version_conflicts": 20}, "p50_ms": p95 / 2, "p95_ms": p95,
               "p99_ms": p95 * 2}
        for name, p95 in tools_p95.items()
    }
    return {"tools": tools, "latency_ms": {"deadlock_resolution": {"p95": None}},
            "conflicts": {"deadlocks": 3}, "run": {"duration_s": 30.0, "isolation": "read_committed"},
            "transport": {"kind": "in_process"}, "anomalies": {}, "audit": {"checks": []}}


def test_the_default_file_holds_the_product_briefs_rules():
    rules = load_rules(DEFAULT_SLA_FILE, SCOPES)
    assert [(r.metric, r.op, r.threshold) for r in rules] == [
        ("deadlock_resolution_p95_ms", "<", 500), ("version_conflicts_per_attempt", "<", 0.2),
        ("success_rate", ">", 0.95), ("tool_success_rate", ">", 0.9), ("tool_p95_ms", "<", 2000),
    ]


def test_rules_are_evaluated_per_tool_per_scope_and_per_run(tmp_path):
    sla = tmp_path / "sla.toml"
    sla.write_text("""
[[rule]]
metric = "tool_p95_ms"
op = "<"
threshold = 100

[[rule]]
metric = "success_rate"
op = ">="
threshold = 0.9
scope = "deadlock"

[[rule]]
metric = "deadlocks_per_minute"
op = "<="
threshold = 5
""")
    results = evaluate(load_rules(sla, SCOPES), _report(deduct_credits=50, transfer_credits=150), SCOPES)
    by_name = {r["name"]: r for r in results}
    assert by_name["tool_p95_ms < 100 [deduct_credits]"]["ok"] is True
    transfers = by_name["tool_p95_ms < 100 [transfer_credits]"]
    assert transfers | {"ok": False} == transfers
    deadlock = by_name["success_rate >= 0.9 [deadlock]"]
    assert deadlock["observed"] == 0.9 and deadlock["ok"]
    assert by_name["deadlocks_per_minute <= 5"]["observed"] == 6.0 and not by_name["deadlocks_per_minute <= 5"]["ok"]


@pytest.mark.parametrize(
    "body, says",
    [
        ("[[rule]\nmetric = 1", "not valid TOML"),
        ("[other]\nx = 1", "expected one or more [[rule]] tables"),
        ('[[rule]]\nmetric = "p95"\nop = "<"\nthreshold = 1', "rule 1: unknown metric 'p95'"),
        ('[[rule]]\nmetric = "success_rate"\nop = ">"\nthreshold = 0.9\n'
         '[[rule]]\nmetric = "success_rate"\nop = "=="\nthreshold = 1',
         "rule 2: op '=='"),
        ('[[rule]]\nmetric = "pool_wait_p95_ms"\nop = "<"\nthreshold = -5', "rule 1: threshold -5 is impossible"),
        ('[[rule]]\nmetric = "success_rate"\nop = ">"\nthreshold = 1.5', "a rate between 0 and 1"),
        ('[[rule]]\nmetric = "success_rate"\nop = ">"\nthreshold = "high"', "threshold must be a number"),
        ('[[rule]]\nmetric = "tool_p95_ms"\nop = "<"\nthreshold = 5\nscope = "nope"', "unknown scope 'nope'"),
        ('[[rule]]\nmetric = "deadlocks"\nop = "<"\nthreshold = 5\nscope = "deadlock"', "takes no scope"),
        ('[[rule]]\nmetric = "deadlocks"\nop = "<"\nthreshold = 5\nlimit = 3', "unknown key limit"),
    ],
)
def test_a_bad_rule_is_named_with_what_is_wrong(tmp_path, body, says):
    sla = tmp_path / "sla.toml"
    sla.write_text(body)
    with pytest.raises(BadSlaFile) as caught:
        load_rules(sla, SCOPES)
    assert says in str(caught.value) and str(sla) in str(caught.value)


def test_a_malformed_sla_file_stops_the_run_before_any_load(tmp_path):
    """Refused by the settings parser, in one line, before any load; tests/test_bad_input.py runs
    a refused option for real (one line, exit code 2, no traceback, no "Ramping")."""
    sla = tmp_path / "sla.toml"
    sla.write_text('[[rule]]\nmetric = "success_rate"\nop = ">"\nthreshold = 2')
    with pytest.raises(BadOption) as refused:
        settings_from("--users", "2", "--run-time", "2s", "--sla", str(sla))
    [line] = str(refused.value).splitlines()
    assert "rule 1" in line and "between 0 and 1" in line


def test_a_users_sla_decides_the_exit_code_and_shows_in_junit(servers, schema, tmp_path, locust):
    sla = tmp_path / "strict.toml"
    sla.write_text("""
[[rule]]
name = "deductions answer in a microsecond"
metric = "tool_p50_ms"
op = "<"
threshold = 0.001
scope = "optimistic_locking"

[[rule]]
metric = "lost_updates"
op = "<="
threshold = 0
""")
    report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"
    done = locust.run(
        "--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
        "--users", "5", "--spawn-rate", "5", "--run-time", "3s", "--scenario", "optimistic_locking",
        "--sla", str(sla), "--report-json", str(report_path), "--junit-xml", str(junit_path),
    )
    report = read_report(report_path)
    assert done.returncode == 1 and report["verdict"] == "fail"
    assert [(r["name"], r["ok"]) for r in report["sla"]] == [
        ("deductions answer in a microsecond [optimistic_locking]", False), ("lost_updates <= 0", True)]
    suites = ET.parse(junit_path).getroot()
    cases = {c.get("name"): c for c in suites.iter("testcase")}
    failure = cases["deductions answer in a microsecond [optimistic_locking]"].find("failure")
    assert failure is not None and f"observed {report['sla'][0]['observed']}" in failure.get("message")
    assert cases["lost_updates <= 0"].find("failure") is None
    assert {c["name"] for c in report["audit"]["checks"]} <= set(cases)
    assert suites.get("failures") == "1"


def test_success_rates_leave_out_refusals_and_the_calls_the_runs_stop_cut_off_not_the_platforms_unknowns():
    report = _report(deduct_credits=10)
    figures = report["tools"]["deduct_credits"]
    figures.update(calls=100, succeeded=80, failed=12, refused=12, indeterminate=0, cut_off=8)
    assert METRICS["tool_success_rate"].read(report, ["deduct_credits"]) == 1.0
    assert METRICS["failure_rate"].read(report, None) == 0.0
    figures.update(indeterminate=8, cut_off=0)
    assert METRICS["tool_success_rate"].read(report, ["deduct_credits"]) == 80 / 88
    assert METRICS["failure_rate"].read(report, None) == 8 / 88
    figures.update(succeeded=0, failed=0, refused=0, indeterminate=0, cut_off=100)
    assert METRICS["success_rate"].read(report, None) is None, "no call served: not measurable, never 100 %"


def test_the_version_conflict_rate_counts_what_conflicts_become_at_the_stronger_levels():
    """At repeatable read and serializable PostgreSQL refuses the concurrent update (40001)
    before the tool's version check runs: there were 0 version conflicts beside 141
    serialization failures, and the rule held whatever the contention."""
    report = {"tools": {"deduct_credits": {"calls": 100, "succeeded": 100, "failed": 0, "refused": 0,
                                           "indeterminate": 0, "attempts": 200,
                                           "failures": {"serialization_failures": 100}}},
              "run": {"isolation": "read_committed"}, "transport": {"kind": "in_process"}}
    rate = METRICS["version_conflicts_per_attempt"].read
    assert rate(report, None) == 0.0
    for level in ("repeatable_read", "serializable"):
        assert rate({**report, "run": {"isolation": level}}, None) == 0.5, level


def _over_mcp(report: dict, *figures: str) -> dict:
    """`report` as a run over MCP whose transport could not observe `figures`, each tool's server
    having said it made 200 attempts, 60 of them version conflicts."""
    for tool in report["tools"].values():
        tool.update(server_attempts=200, server_failures={"version_conflicts": 60, "deadlocks": 4})
    not_measurable = [{"figure": figure, "why": f"{figure} is the server's"} for figure in figures]
    return {**report, "transport": {"kind": "mcp", "mcp": {"not_measurable": not_measurable}}}


def test_over_mcp_a_rule_on_what_the_transport_cannot_see_fails_as_not_measurable_never_holds():
    """In process, no deadlock to resolve holds the rule; over MCP the deadlock timings and the
    pool are the tool server's: the rule fails, saying why, and never reads a 0."""
    rules = load_rules(DEFAULT_SLA_FILE, SCOPES)
    in_process = {r["name"]: r for r in evaluate(rules, _report(deduct_credits=10.0), SCOPES)}
    assert in_process["deadlock resolution p95 < 500 ms"]["ok"]
    assert in_process["deadlock resolution p95 < 500 ms"]["not_measurable"] is None
    over_mcp = {r["name"]: r for r in evaluate(rules, _over_mcp(_report(deduct_credits=10.0), "deadlock timings",
                                                                 "pool"), SCOPES)}
    unseen = over_mcp["deadlock resolution p95 < 500 ms"]
    assert (unseen["ok"], unseen["observed"], unseen["not_measurable"]) == (False, None, "deadlock timings is the"
                                                                                         " server's")
    assert over_mcp["success rate after retries > 95%"]["not_measurable"] is None, "what the agents saw is measured"


def test_over_mcp_the_attempt_rates_and_counts_read_the_servers_own_attempts_or_are_not_measurable():
    """The agents saw 20 version conflicts in 120 attempts; the server said it made 200 attempts,
    60 of them version conflicts: the rates and counts of failed attempts are the server's."""
    rate, deadlocks = METRICS["version_conflicts_per_attempt"].read, METRICS["deadlocks"].read
    report = _report(deduct_credits=10.0)
    assert (rate(report, None), deadlocks(report, None)) == (20 / 120, 3)
    over_mcp = _over_mcp(_report(deduct_credits=10.0))
    assert (rate(over_mcp, None), deadlocks(over_mcp, None)) == (60 / 200, 4)
    rule = load_rules(DEFAULT_SLA_FILE, SCOPES)[1]
    assert rule.metric == "version_conflicts_per_attempt"
    [silent] = evaluate((rule,), _over_mcp(_report(deduct_credits=10.0), "server attempts"), SCOPES)
    assert not silent["ok"] and silent["not_measurable"] == "server attempts is the server's"


def _turns(turns: int, p95: float | None, with_conflicts: int, collisions: int) -> dict:
    return {"turns": turns, "calls": 2 * turns, "calls_per_turn": {"2": turns} if turns else {},
            "latency_ms": {"p50": p95, "p95": p95, "p99": p95, "max": p95, "count": turns},
            "with_conflicts": with_conflicts, "same_key_pairs": 0, "overlapping_same_key_pairs": collisions,
            "collisions": collisions}


def test_per_turn_rules_fail_when_the_turns_break_them_and_when_no_turn_finished(tmp_path):
    sla = tmp_path / "sla.toml"
    sla.write_text("""
[[rule]]
metric = "turn_p95_ms"
op = "<"
threshold = 500

[[rule]]
metric = "turns_with_conflicts_rate"
op = "<="
threshold = 0.1

[[rule]]
metric = "turn_collisions"
op = "<="
threshold = 0
""")
    rules = load_rules(sla, SCOPES)

    def verdicts(turns: dict) -> dict[str, tuple]:
        report = {**_report(deduct_credits=50), "turns": turns}
        return {r["metric"]: (r["observed"], r["ok"]) for r in evaluate(rules, report, SCOPES)}

    assert verdicts(_turns(100, 400.0, 10, 0)) == {
        "turn_p95_ms": (400.0, True), "turns_with_conflicts_rate": (0.1, True), "turn_collisions": (0, True)}
    assert verdicts(_turns(100, 600.0, 11, 2)) == {
        "turn_p95_ms": (600.0, False), "turns_with_conflicts_rate": (0.11, False), "turn_collisions": (2, False)}
    # No turn finished: nothing says the turns held, so the rules on them fail; no collision held.
    assert verdicts(_turns(0, None, 0, 0)) == {
        "turn_p95_ms": (None, False), "turns_with_conflicts_rate": (None, False), "turn_collisions": (0, True)}
