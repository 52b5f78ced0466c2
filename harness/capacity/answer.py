"""A capacity search's answer put together (the report's `capacity`): the capacity and how sure
it is, in words, the measured knee beside the Universal Scalability Law's predicted peak, every
probe, and the exit code: 1 below --expect-capacity; without it, 1 when not even the smallest
probe passed, else 0."""

from __future__ import annotations

from harness.capacity.search import Answer
from harness.capacity.usl import MIN_DISTINCT_AGENTS, fit_usl
from harness.config.capacity import CapacityOptions
from harness.report_shape import Capacity, CapacityProbe, UslModel

__all__ = ["capacity_section", "exit_code_of", "kept_data_line", "least_capacity", "model_line"]

_KNEE = 0.95


def _agents(n: int) -> str:
    return f"{n} agent{'s' if n != 1 else ''}"


def _mean_throughputs(probes: list[CapacityProbe]) -> dict[int, float]:
    by_agents: dict[int, list[float]] = {}
    for probe in probes:
        by_agents.setdefault(probe["agents"], []).append(probe["throughput_per_s"])
    return {agents: sum(values) / len(values) for agents, values in sorted(by_agents.items())}


def _model(probes: list[CapacityProbe]) -> UslModel | None:
    fit = fit_usl([(p["agents"], p["throughput_per_s"]) for p in probes])
    if fit is None:
        return None
    peak = fit.peak_agents
    return UslModel(lam=round(fit.lam, 3), sigma=round(fit.sigma, 5), kappa=round(fit.kappa, 6),
                    r_squared=round(fit.r_squared, 4), peak_agents=None if peak is None else round(peak, 1),
                    peak_throughput_per_s=None if peak is None else round(fit.throughput(peak), 1))


def _sureness(answer: Answer, repeats: int) -> str:
    if answer.cut_short:
        return "cut short by the budget"
    if answer.confirmed:
        return f"{repeats} of {repeats} probes at each side"
    if answer.failing is None:
        return "no probe failed"
    return "not confirmed: " + ", ".join(
        f"{sum(answer.outcomes[n])} of {len(answer.outcomes[n])} passed at {n}"
        for n in (answer.capacity, answer.failing) if n in answer.outcomes)


def _in_words(answer: Answer, options: CapacityOptions, probes: list[CapacityProbe]) -> str:
    sure = _sureness(answer, options.repeats)
    if answer.capacity == 0:
        if answer.failing is None:
            return f"no answer: the budget of {options.budget_s:g} s ran out before a probe"
        return f"no capacity: even {_agents(answer.failing)} failed ({sure})"
    limit = next((p for p in reversed(probes) if p["agents"] == answer.failing and not p["passed"]), None)
    if answer.failing is None:
        why = "cut short by the budget; no probe failed" if answer.cut_short else "no probe failed"
        return f"at least {_agents(answer.capacity)} ({why})"
    within = f"within {_agents(answer.precision)}" if answer.failing - answer.capacity > 1 else "exactly"
    because = f"; at {answer.failing}: {limit['limiting']} ({limit['detail']})" if limit else ""
    return f"{_agents(answer.capacity)}, {within}: fails at {answer.failing} ({sure}){because}"


def capacity_section(answer: Answer, probes: list[CapacityProbe], options: CapacityOptions, elapsed_s: float,
                     data: str) -> Capacity:
    throughputs = _mean_throughputs(probes)
    most = max(throughputs.values(), default=0.0)
    # The knee: the fewest agents whose calls/s come within _KNEE of the most any count made (on a
    # curve that flattens, the most itself is noise between counts on the plateau).
    knee = min((agents for agents, x in throughputs.items() if x >= _KNEE * most), default=None)
    return Capacity(
        capacity=answer.capacity, failing=answer.failing, precision=answer.precision,
        precision_asked=str(options.precision), repeats=options.repeats, confirmed=answer.confirmed,
        cut_short=answer.cut_short, budget_s=options.budget_s, elapsed_s=round(elapsed_s, 1),
        expected=options.expected, data=data,
        scoped_checks=sorted({name for probe in probes for name in probe["scoped_checks"]}),
        not_judged=sorted({name for probe in probes for name in probe["not_judged"]}),
        knee_agents=knee, model=_model(probes),
        answer=_in_words(answer, options, probes), probes=probes,
    )


def least_capacity(capacity: Capacity) -> int:
    """The agents the answer must reach: --expect-capacity, else one (the smallest probe passed)."""
    return capacity["expected"] or 1


def exit_code_of(capacity: Capacity) -> int:
    return 0 if capacity["capacity"] >= least_capacity(capacity) else 1


def kept_data_line(capacity: Capacity) -> str | None:
    """With probes on kept data (--capacity-data kept): the checks they judged by their own calls'
    identities, and those they did not judge; None on fresh data."""
    if not any(probe["data"] == "kept" for probe in capacity["probes"]):
        return None
    scoped, not_judged = ", ".join(capacity["scoped_checks"]), ", ".join(capacity["not_judged"])
    return (f"on kept data, judged by each probe's own calls' identities: {scoped or 'none'};"
            f" not judged on kept data: {not_judged or 'none'}")


def model_line(capacity: Capacity) -> str:
    """The fitted curve beside the measured knee, or why there is none."""
    knee = capacity["knee_agents"]
    measured = "" if knee is None else f"; measured knee: {_agents(knee)} (within 5% of the most calls/s)"
    model = capacity["model"]
    if model is None:
        distinct = len({p["agents"] for p in capacity["probes"]})
        return (f"USL: not fitted, probes at {distinct} agent count{'s' if distinct != 1 else ''} (it needs"
                f" {MIN_DISTINCT_AGENTS}; a finer precision or a larger start gives more){measured}")
    peak = ("no peak (κ = 0: throughput flattens, never falls)" if model["peak_agents"] is None else
            f"predicted peak {model['peak_agents']:g} agents at {model['peak_throughput_per_s']:g} calls/s")
    return (f"USL: σ (contention) {model['sigma']:g}, κ (coherency) {model['kappa']:g}, λ {model['lam']:g} calls/s"
            f" an agent, r² {model['r_squared']:g}: {peak}{measured}")
