"""--capacity's pure parts: the Universal Scalability Law fit (harness.capacity.usl) and the
search's plan (harness.capacity.search), driven by the outcomes a probe could have, without
servers. The search against real servers: tests/test_capacity_run.py."""

from __future__ import annotations

import random

import pytest

from harness.capacity.search import Answer, search
from harness.capacity.usl import UslFit, fit_usl
from harness.config.capacity import Precision
from harness.config.option import BadOption

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
