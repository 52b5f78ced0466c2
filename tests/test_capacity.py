"""--capacity's parts that need no server: the Universal Scalability Law fit (harness.capacity.usl),
the search's plan (harness.capacity.search) driven by the outcomes a probe could have, a probe judged
from a real run's report (the fixture's, with a probe section), the options and their refusals, the
answer and its exit code, a probe's command line. The search against real servers:
tests/test_capacity_run.py."""

from __future__ import annotations

import copy
import json
import random
from html import escape
from pathlib import Path

import pytest

from harness.capacity.answer import capacity_section, exit_code_of, kept_data_line
from harness.capacity.judged import judge_probe, limiting_side
from harness.capacity.search import Answer, search
from harness.capacity.usl import UslFit, fit_usl
from harness.config.capacity import DEFAULT_BUDGET_S, Precision
from harness.config.option import BadOption
from harness.output.capacity import format_capacity, probe_line
from harness.output.html.capacity_page import capacity_page
from harness.report_shape import Capacity, CapacityProbe, Report
from harness.run.capacity import _OWN_OPTIONS, _OWN_VARIABLES
from harness.run.child_runs import child_arguments
from tests.report_conformance import nonconforming
from tests.support import settings_from

AGENT_COUNTS = (1, 2, 4, 8, 16, 24, 32, 48, 64)


@pytest.mark.parametrize(("sigma", "kappa"), [(0.05, 0.002), (0.2, 0.0005), (0.01, 0.0)])
def test_the_usl_fit_recovers_sigma_and_kappa_from_points_on_a_known_curve_with_noise(sigma, kappa):
    truth = UslFit(lam=120.0, sigma=sigma, kappa=kappa, r_squared=1.0)
    noise = random.Random(20)
    points = [(n, truth.throughput(n) * (1 + noise.uniform(-0.02, 0.02))) for n in AGENT_COUNTS for _ in range(2)]
    fit = fit_usl(points)
    assert fit is not None
    assert fit.sigma == pytest.approx(sigma, abs=0.01 + 0.1 * sigma)
    assert fit.kappa == pytest.approx(kappa, abs=0.0002 + 0.1 * kappa)
    assert fit.r_squared > 0.98
    if kappa:
        assert fit.peak_agents == pytest.approx(truth.peak_agents, rel=0.1)
    else:
        assert fit.peak_agents is None  # it only flattens


def test_the_usl_fit_is_exact_on_exact_points_and_needs_five_agent_counts():
    truth = UslFit(lam=40.0, sigma=0.1, kappa=0.003, r_squared=1.0)
    fit = fit_usl([(n, truth.throughput(n)) for n in AGENT_COUNTS])
    assert fit is not None
    assert (fit.lam, fit.sigma, fit.kappa) == pytest.approx((40.0, 0.1, 0.003), rel=1e-6)
    four = [(n, truth.throughput(n)) for n in (1, 2, 4, 8) for _ in range(3)]
    assert fit_usl(four) is None
    assert fit_usl([*four, (16, 0.0)]) is None  # a throughput of nothing fits no curve


class FakeProbes:
    """A platform whose probes pass up to `limit` agents, on a clock each probe moves by `probe_s`;
    `flaky`: the outcomes some counts give instead, in order."""

    def __init__(self, limit: int, probe_s: float = 10.0, flaky: dict[int, list[bool]] | None = None) -> None:
        self.limit, self.probe_s, self.flaky = limit, probe_s, flaky or {}
        self.now = 0.0
        self.probed: list[int] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, agents: int) -> bool:
        self.probed.append(agents)
        self.now += self.probe_s
        if self.flaky.get(agents):
            return self.flaky[agents].pop(0)
        return agents <= self.limit


def _search(probes: FakeProbes, start: int = 1, precision: str = "1", repeats: int = 1,
            budget_s: float = 10_000) -> Answer:
    return search(probes, start=start, precision=Precision.parse(precision), repeats=repeats, budget_s=budget_s,
                  probe_s=probes.probe_s, clock=probes.clock)


def test_the_search_doubles_until_a_probe_fails_then_bisects_to_the_precision():
    probes = FakeProbes(limit=37)
    answer = _search(probes)
    assert probes.probed == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert (answer.capacity, answer.failing, answer.confirmed, answer.cut_short) == (37, 38, True, False)
    coarse = FakeProbes(limit=37)
    answer = _search(coarse, start=5, precision="10%")
    assert coarse.probed == [5, 10, 20, 40, 30, 35, 37]  # 37 passed, 40 failed: 3 apart, within 10% of 37
    assert (answer.capacity, answer.failing, answer.precision) == (37, 40, 3)
    below = FakeProbes(limit=3)
    assert _search(below, start=20).capacity == 3 and below.probed == [20, 10, 5, 2, 3, 4]


def test_the_boundary_is_repeated_until_k_of_k_and_a_repeat_that_fails_moves_it_down():
    probes = FakeProbes(limit=6)
    answer = _search(probes, repeats=3)
    assert probes.probed == [1, 2, 4, 8, 6, 7, 6, 6, 7, 7]
    assert (answer.capacity, answer.failing, answer.confirmed) == (6, 7, True)
    # 6 passes once, then fails: the boundary moves to 5 and 6, and 6 is never probed a fourth time.
    flaky = FakeProbes(limit=6, flaky={6: [True, False]})
    answer = _search(flaky, repeats=3)
    assert flaky.probed == [1, 2, 4, 8, 6, 7, 6, 5, 5, 5, 6]
    assert (answer.capacity, answer.failing, answer.confirmed) == (5, 6, False)  # 6 failed 1 of its 3
    assert answer.outcomes[6] == [True, False, True] and answer.outcomes[5] == [True] * 3


def test_an_answer_when_even_the_smallest_probe_fails():
    probes = FakeProbes(limit=0)
    answer = _search(probes, start=4, repeats=2)
    assert probes.probed == [4, 2, 1, 1]
    assert (answer.capacity, answer.failing, answer.confirmed) == (0, 1, True)


def test_the_search_stops_before_a_probe_that_would_end_past_its_budget_and_says_so():
    probes = FakeProbes(limit=37, probe_s=10.0)
    answer = _search(probes, budget_s=65)  # room for six probes of 10 s, not a seventh
    assert probes.probed == [1, 2, 4, 8, 16, 32]
    assert (answer.capacity, answer.failing, answer.cut_short, answer.confirmed) == (32, None, True, False)
    slow = FakeProbes(limit=37, probe_s=10.0)
    slow_answer = _search(slow, budget_s=5)  # not one probe fits
    assert slow.probed == [] and (slow_answer.capacity, slow_answer.cut_short) == (0, True)


@pytest.mark.parametrize("text", ["0", "-2", "1.5", "x", "10 %%", ""])
def test_a_precision_that_is_no_number_of_agents_or_share_is_refused_in_one_line(text):
    with pytest.raises(BadOption, match=r"^--capacity-precision .*: give a number of agents"):
        Precision.parse(text)
    assert Precision.parse("3").at(100) == 3 and Precision.parse("10%").at(37) == 3
    assert Precision.parse("10%").at(0) == 1


FIXTURE = Path(__file__).parent / "fixtures" / "shape_run_report.json"


def _probe_report(stopped: str = "evidence", broken: tuple[str, ...] = ()) -> dict:
    """A real run's report (the fixture's) as a probe's run writes it: with its `probe` section."""
    report = json.loads(FIXTURE.read_text(encoding="utf-8"))
    report["probe"] = {"agents": 8, "warmup_s": 1.0, "step_s": 1.0, "window_s": 2.0, "min_s": 3.0, "max_s": 9.0,
                       "min_calls": 140, "stopped": stopped, "broken": list(broken), "warmup_calls": 40,
                       "measured": report["stages"][0], "sla": copy.deepcopy(report["sla"]), "data": "fresh",
                       "scoped_checks": [], "not_judged": []}
    return report


def _rule(report: dict, name: str) -> dict:
    return next(r for r in report["probe"]["sla"] if r["name"] == name)


def test_a_probe_passes_when_everything_held_and_names_the_rule_nearest_its_threshold():
    report = _probe_report()
    assert nonconforming(report, Report) == []
    probe = judge_probe(report, started_s=3.0, wall_s=7.0)
    assert nonconforming(probe, CapacityProbe) == []
    assert probe["passed"] and probe["agents"] == 8 and probe["warmup_calls"] == 40 and probe["load_processes"] == 1
    # summarize_accounts's p95 of 145 ms is 7 % of its 2 s: the nearest of the rules.
    assert (probe["limiting"], probe["detail"]) == ("tool latency", "nearest: tool p95 < 2 s [summarize_accounts]"
                                                                    " at 7% of its threshold")


def test_a_probe_whose_audit_failed_fails_though_every_rule_held():
    report = _probe_report()
    report["audit"]["ok"] = False
    report["audit"]["checks"][1]["ok"] = False
    report["anomalies"]["lost_updates"] = 3
    probe = judge_probe(report, 0.0, 7.0)
    assert all(r["ok"] for r in probe["sla"])
    assert not probe["passed"] and probe["limiting"] == "audit"
    assert probe["detail"] == "failed: credits_conserved, lost_updates 3"
    assert probe["failed_checks"] == ["credits_conserved"]


def test_a_probe_fails_on_the_window_that_broke_a_rule_on_a_rule_after_its_warm_up_or_on_too_few_calls():
    windowed = _probe_report("window", ("tool p95 < 2 s [deduct_credits]",))
    probe = judge_probe(windowed, 0.0, 5.0)
    assert not probe["passed"]
    assert probe["limiting"] == "tool latency"
    assert probe["detail"] == "a 2 s window broke: tool p95 < 2 s [deduct_credits]"
    # Of the rules a window broke, the side of the one broken furthest: 1.5 times its threshold.
    both = _probe_report("window", ("version conflicts < 20% of attempts", "tool p95 < 2 s [deduct_credits]"))
    _rule(both, "version conflicts < 20% of attempts").update(observed=0.21, ok=False)
    _rule(both, "tool p95 < 2 s [deduct_credits]").update(observed=3000.0, ok=False)
    assert judge_probe(both, 0.0, 5.0)["limiting"] == "tool latency"
    assert limiting_side("tool_success_rate") == "failed calls"
    windowed["probe"]["measured"]["pool_wait_p95_ms"] = 60.0  # of a p95 of 66.4 ms: the wait is the latency
    assert judge_probe(windowed, 0.0, 5.0)["limiting"] == "pool wait (tool latency)"
    windowed["hub"]["fell_behind"] = True  # the harness was late itself: the client is the limit
    assert judge_probe(windowed, 0.0, 5.0)["limiting"] == "client CPU (hub lag)"
    measured = _probe_report()
    _rule(measured, "version conflicts < 20% of attempts").update(observed=0.3, ok=False)
    probe = judge_probe(measured, 0.0, 5.0)
    assert not probe["passed"]
    assert (probe["limiting"], probe["detail"]) == ("version conflicts", "broke: version conflicts < 20% of attempts")
    short = judge_probe(_probe_report("longest"), 0.0, 5.0)
    assert not short["passed"] and short["limiting"] == "too few calls" and "fewer than the 140" in short["detail"]
    assert limiting_side("pool_wait_p95_ms") == limiting_side("pool_timeouts_per_attempt") == "pool wait"


def _settings_refused(*words: str) -> str:
    with pytest.raises(BadOption) as refused:
        settings_from("--users", "2", *words)
    return str(refused.value)


def test_the_searchs_options_and_what_it_refuses():
    options = settings_from("--capacity", "-u", "3", "-t", "2m", "--capacity-precision", "2", "--expect-capacity",
                            "10").capacity
    assert (options.start, options.budget_s, options.precision.at(50), options.expected) == (3, 120.0, 2, 10)
    assert settings_from("--capacity").capacity.budget_s == DEFAULT_BUDGET_S
    assert settings_from("--capacity", "--processes", "2").capacity is not None  # its workers are the search's
    # On a headless master, the search runs in it, each probe a test of it (harness.run.master_probes).
    assert settings_from("--capacity", "--master", "--headless").capacity is not None
    assert settings_from("--users", "2").capacity is None
    for words, refusal in (
        (("--shape", "steps"), "--capacity excludes --shape: each probe of the search is a run of its own"),
        (("--isolation-matrix",), "--capacity excludes --isolation-matrix"),
        (("--master",), "--capacity on a --master runs headless (each probe a test of the master, on its"
                        " workers): add --headless"),
        (("--worker",), "--capacity is the master's: a --worker runs each probe as its master tells it; give"
                        " --capacity to the --master alone"),
        (("--capacity-precision", "x"), "--capacity-precision 'x': give a number of agents"),
        (("--capacity-hold", "0"), "--capacity-hold 0.0: must be more than 0 seconds"),
        (("--capacity-repeats", "0"), "--capacity-repeats 0: must be at least 1"),
        (("--run-time", "10s", "--capacity-hold", "4"), "--run-time 10 s: the search's budget holds no probe"
                                                        " (--capacity-warmup 5 s, --capacity-hold 4 s and about 6 s"
                                                        " to start and audit: 15 s)"),
    ):
        assert _settings_refused("--capacity", *words).startswith(refusal), words
    assert _settings_refused("--expect-capacity", "4") == "--expect-capacity needs --capacity"
    assert _settings_refused("--capacity-data", "kept") == "--capacity-data kept needs --capacity"


def test_the_answer_in_words_and_its_exit_code():
    options = settings_from("--capacity", "--expect-capacity", "6").capacity
    probes = [judge_probe(_probe_report(), 0.0, 5.0)]
    found = Answer(capacity=5, failing=6, precision=1, confirmed=True, cut_short=False,
                   outcomes={5: [True, True], 6: [False, False]})
    capacity = capacity_section(found, probes, options, 60.0, "fresh")
    assert nonconforming(capacity, Capacity) == []
    assert capacity["answer"] == "5 agents, exactly: fails at 6 (2 of 2 probes at each side)"
    assert exit_code_of(capacity) == 1  # below the 6 expected
    assert exit_code_of({**capacity, "expected": 5}) == 0
    assert exit_code_of({**capacity, "expected": None}) == 0
    assert exit_code_of({**capacity, "expected": None, "capacity": 0}) == 1  # not even the smallest passed
    short = Answer(capacity=8, failing=None, precision=1, confirmed=False, cut_short=True, outcomes={8: [True]})
    assert capacity_section(short, probes, options, 60.0, "fresh")["answer"] == (
        "at least 8 agents (cut short by the budget; no probe failed)")
    whole = Answer(capacity=8, failing=None, precision=1, confirmed=False, cut_short=False, outcomes={8: [True]})
    assert capacity_section(whole, probes, options, 60.0, "fresh")["answer"] == "at least 8 agents (no probe failed)"


def test_a_probes_run_gets_the_users_options_but_the_searchs_own_and_the_servers_by_environment():
    argv = ["--pg-dsn", "postgresql://app:s3cret@db/x", "--capacity", "--capacity-hold=4", "-u10", "-t", "1m",
            "--processes", "2", "--report-json", "r.json", "--scenario", "pool_exhaustion", "--expect-capacity", "3"]
    arguments, variables = child_arguments(argv, _OWN_OPTIONS)
    assert arguments == ["--processes", "2", "--scenario", "pool_exhaustion"]
    assert variables == {"TOOLCLASH_PG_DSN": "postgresql://app:s3cret@db/x"}
    # Nor by variable: --expect-capacity's alone would refuse the probe's run (it needs --capacity).
    assert {"TOOLCLASH_CAPACITY", "TOOLCLASH_EXPECT_CAPACITY", "TOOLCLASH_JUNIT_XML"} <= _OWN_VARIABLES
    assert "TOOLCLASH_PG_DSN" not in _OWN_VARIABLES and "TOOLCLASH_SCENARIO" not in _OWN_VARIABLES


def test_the_html_page_draws_every_probe_the_fitted_curve_and_the_capacity():
    truth = UslFit(lam=50.0, sigma=0.05, kappa=0.002, r_squared=1.0)
    probes = []
    for agents in (2, 4, 8, 16, 32, 24, 20):
        probe = judge_probe(_probe_report(), 0.0, 5.0)
        probes.append({**probe, "agents": agents, "passed": agents <= 20,
                       "throughput_per_s": round(truth.throughput(agents), 2)})
    answer = Answer(capacity=20, failing=24, precision=2, confirmed=False, cut_short=False,
                    outcomes={n: [n <= 20] for n in (2, 4, 8, 16, 20, 24, 32)})
    capacity = capacity_section(answer, probes, settings_from("--capacity").capacity, 90.0, "fresh")
    assert capacity["model"]["sigma"] == pytest.approx(0.05, abs=0.01)
    # The knee: 16 agents' 358.7 calls/s are within 5 % of 20's 369 (the most); the model's peak, 21.8.
    assert capacity["knee_agents"] == 16
    assert capacity["model"]["peak_agents"] == pytest.approx(21.8, abs=1)
    page = capacity_page(capacity, 0)
    assert page.startswith("<!DOCTYPE html>") and "toolclash capacity: 20 agents" in page
    assert "data-chart='capacity_throughput' data-points='67'" in page  # 7 probes and the curve's 60 points
    assert "<title>capacity at 20 agents</title>" in page  # the boundary, across both charts
    assert page.count("<title>capacity at 20 agents</title>") == 2
    assert "<title>probes at 8 agents: " in page
    assert page.count("<tr>") == 1 + len(probes)  # the table's head and a row per probe


def test_probes_on_kept_data_say_what_they_judged_and_what_not_on_the_console_and_the_page():
    fresh = judge_probe(_probe_report(), 0.0, 5.0)
    kept_report = _probe_report()
    kept_report["probe"].update(data="kept", scoped_checks=["acknowledged_in_ledger"],
                                not_judged=["credits_conserved", "ledger_within_acknowledged"])
    kept = judge_probe(kept_report, 5.0, 5.0)
    assert (kept["data"], kept["not_judged"]) == ("kept", ["credits_conserved", "ledger_within_acknowledged"])
    answer = Answer(capacity=8, failing=None, precision=1, confirmed=False, cut_short=False, outcomes={8: [True, True]})
    options = settings_from("--capacity", "--capacity-data", "kept").capacity
    assert options.kept
    capacity = capacity_section(answer, [fresh, kept], options, 10.0, "kept")
    assert nonconforming(capacity, Capacity) == []
    line = ("on kept data, judged by each probe's own calls' identities: acknowledged_in_ledger; not judged on kept"
            " data: credits_conserved, ledger_within_acknowledged")
    assert f"toolclash capacity: {line}" in format_capacity(capacity)
    assert "not judged credits_conserved, ledger_within_acknowledged" in probe_line(2, kept)
    assert "kept data" not in probe_line(1, fresh)
    page = capacity_page(capacity, 0)
    assert escape(line) in page and page.count(escape("(kept data: its calls' identities)")) == 1
    assert kept_data_line(capacity_section(answer, [fresh], options, 10.0, "fresh")) is None
