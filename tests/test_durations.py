"""Durations from a distribution (db.durations), through --think-time and --tool-work: what is
drawn matches the parameters given, each form is parsed exactly and anything else refused in one
line, a tool's work is drawn at each tx.work(), an agent's think time at each wait from a random
source that moves nothing of its tools' draws, the reference tool server takes the same forms,
and the report shows what was given. No server, no `locust` process: the real runs are
tests/test_web_ui.py's (a ramp's think time drawn from a distribution, and one refused from the
form)."""

from __future__ import annotations

import random
import statistics
import uuid
from collections import Counter

import pytest
from locust.env import Environment

from db.durations import NO_TIME, BadDuration, constant, parse_duration
from db.tool import Transaction
from harness.config.option import BadOption
from harness.config.run_settings import settings_summary
from harness.run.agent import Agent
from harness.run.load import new_load
from tests.support import settings_from
from toolserver.options import BadOption as ServerRefused
from toolserver.options import parse_options

DRAWS = 20_000


def _draws(text: str, seed: int = 19) -> list[float]:
    duration, rng = parse_duration(text), random.Random(seed)
    return [duration.sample(rng) for _ in range(DRAWS)]


def _quantile(draws: list[float], q: float) -> float:
    return sorted(draws)[int(q * len(draws))]


def test_a_lognormal_is_drawn_with_the_median_and_p99_it_was_given():
    draws = _draws("lognormal:2s:10s")
    assert _quantile(draws, 0.5) == pytest.approx(2.0, rel=0.03)
    assert _quantile(draws, 0.99) == pytest.approx(10.0, rel=0.06)
    assert min(draws) > 0


def test_a_uniform_stays_within_its_bounds_and_fills_them():
    draws = _draws("uniform:100ms:300ms")
    assert 0.1 <= min(draws) < 0.101 and 0.299 < max(draws) <= 0.3
    assert statistics.fmean(draws) == pytest.approx(0.2, rel=0.01)
    assert _quantile(draws, 0.25) == pytest.approx(0.15, rel=0.02)


def test_an_exponential_has_the_mean_it_was_given():
    draws = _draws("exponential:1.5s")
    assert statistics.fmean(draws) == pytest.approx(1.5, rel=0.03)
    assert _quantile(draws, 0.5) == pytest.approx(parse_duration("exponential:1.5s").median_s, rel=0.04)


def test_an_empirical_list_draws_each_of_its_values_equally_often():
    counts = Counter(_draws("empirical:50ms,1s, 5s,1s"))
    assert set(counts) == {0.05, 1.0, 5.0}
    assert counts[0.05] / DRAWS == pytest.approx(0.25, abs=0.015)
    assert counts[1.0] / DRAWS == pytest.approx(0.5, abs=0.015), "a value listed twice, twice as often"


@pytest.mark.parametrize("text", ["lognormal:2s:10s", "uniform:1:9", "exponential:40ms"])
def test_half_the_draws_are_below_the_median_said(text):
    below = sum(draw < parse_duration(text).median_s for draw in _draws(text))
    assert below / DRAWS == pytest.approx(0.5, abs=0.015)


def test_a_constant_is_always_itself_and_draws_nothing():
    rng = random.Random(3)
    state = rng.getstate()
    assert {parse_duration("250").sample(rng) for _ in range(10)} == {0.25}
    assert rng.getstate() == state
    assert parse_duration("250") == parse_duration("250ms") == parse_duration(" 0.25s ") == constant(0.25)
    assert parse_duration("0") == NO_TIME and parse_duration("1e3") == constant(1.0)
    assert str(parse_duration(" lognormal:2s:10s ")) == "lognormal:2s:10s", "as given, for the report"


@pytest.mark.parametrize("text, says", [
    ("lognormal:10s:2s", "the p99 (2 s) must be above the median (10 s)"),
    ("lognormal:2s:2s", "the p99 (2 s) must be above the median (2 s)"),
    ("lognormal:0:2s", "the median must be above 0"),
    ("lognormal:2s", "lognormal takes MEDIAN:P99, e.g. lognormal:1s:5s"),
    ("uniform:5s:5s", "LOW (5 s) must be below HIGH (5 s)"),
    ("uniform:3:1", "LOW (3 ms) must be below HIGH (1 ms)"),
    ("exponential:0s", "the mean must be above 0"),
    ("exponential:1s:2s", "exponential takes MEAN"),
    ("empirical:", "empirical: give at least one value"),
    ("empirical:1s,,2s", "'': not a duration"),
    ("-5", "a duration is never negative"),
    ("uniform:-1s:1s", "'-1s': a duration is never negative"),
    ("normal:1s:2s", "unknown form 'normal': give ms (500, 500ms, 2s), lognormal:MEDIAN:P99"),
    ("2 minutes", "not a duration: give ms"),
    ("5m", "not a duration"),
    ("inf", "give a finite number"),
])
def test_what_says_no_exact_duration_is_refused_in_one_line(text, says):
    with pytest.raises(BadDuration) as refused:
        parse_duration(text)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value), str(refused.value)


@pytest.mark.parametrize("flag", ["--think-time", "--tool-work"])
def test_the_options_take_every_form_and_refuse_with_the_options_name(flag):
    for text in ("500", "2s", "lognormal:2s:10s", "uniform:1:9", "exponential:1s", "empirical:1s,2s"):
        assert getattr(settings_from(flag, text), flag[2:].replace("-", "_")) == parse_duration(text)
    with pytest.raises(BadOption) as refused:
        settings_from(flag, "lognormal:10s:2s")
    assert str(refused.value) == f"{flag} 'lognormal:10s:2s': the p99 (2 s) must be above the median (10 s)"


def test_the_reference_tool_server_takes_the_same_forms():
    servers = {"TOOLCLASH_PG_DSN": "postgresql://h/db", "TOOLCLASH_REDIS_URL": "redis://h/0", "TOOLCLASH_SCHEMA": "tc"}
    assert parse_options([], servers).tool_work == constant(0.005)
    given = parse_options([], {**servers, "TOOLCLASH_TOOLSERVER_TOOL_WORK": "lognormal:300ms:2s"})
    assert given.tool_work == parse_duration("lognormal:300ms:2s")
    with pytest.raises(ServerRefused) as refused:
        parse_options(["--tool-work", "uniform:2s:1s"], servers)
    assert str(refused.value) == "argument --tool-work: 'uniform:2s:1s': LOW (2 s) must be below HIGH (1 s); for" \
                                 " always the same duration give one value"


def test_the_report_shows_a_constant_in_ms_as_before_and_a_distribution_as_given():
    default = settings_summary(settings_from())
    assert (default["think_time_ms"], default["tool_work_ms"]) == (0.0, 5.0)
    given = settings_summary(settings_from("--think-time", "lognormal:2s:10s", "--tool-work", "0.02s"))
    assert (given["think_time_ms"], given["tool_work_ms"]) == ("lognormal:2s:10s", 20.0)


def test_a_tools_work_is_drawn_at_each_tx_work():
    slept: list[float] = []
    tx = Transaction(uuid.uuid4(), "agent-1", None, None, None, work=parse_duration("uniform:10ms:30ms"),
                     sleep=slept.append)
    for _ in range(2000):
        tx.work()
    assert len(slept) == 2000 and len(set(slept)) > 1900, "a new duration each time"
    assert 0.01 <= min(slept) and max(slept) <= 0.03
    assert statistics.fmean(slept) == pytest.approx(0.02, rel=0.03)
    nothing: list[float] = []
    Transaction(uuid.uuid4(), "agent-1", None, None, None, sleep=nothing.append).work()
    assert nothing == [], "no work by default, and no sleep for it"


def _agents(think_time: str, count: int = 2) -> list[Agent]:
    """Agents started on a load of their own (no link: none is opened before a test starts)."""
    environment = Environment(user_classes=[Agent])
    new_load(environment, settings_from("--think-time", think_time), 0, None)
    agents = [Agent(environment) for _ in range(count)]
    for agent in agents:
        agent.on_start()
    return agents


def _tools_drawn(agent: Agent, waits: int) -> list[str]:
    drawn = []
    for _ in range(waits):
        agent.wait_time()
        drawn.append(agent._load.toolbox.pick(agent._rng).name)
    return drawn


def test_an_agents_think_time_is_drawn_at_each_wait_from_its_own_seeded_source():
    first, second = _agents("lognormal:2s:10s")
    waits = [first.wait_time() for _ in range(50)]
    assert len(set(waits)) == 50 and waits != [second.wait_time() for _ in range(50)], "each agent its own draws"
    again, _ = _agents("lognormal:2s:10s")
    assert [again.wait_time() for _ in range(50)] == waits, "the same seed and agent, the same think times"
    [constant_agent] = _agents("500", 1)
    assert {constant_agent.wait_time() for _ in range(5)} == {0.5}


def test_drawing_think_times_moves_nothing_of_what_the_agent_calls():
    [thinking] = _agents("exponential:1s", 1)
    [instant] = _agents("0", 1)
    assert _tools_drawn(thinking, 200) == _tools_drawn(instant, 200)
