"""--capacity's search over the number of agents, as a plan: which agent count to probe next,
given every probe's outcome so far, and when the answer is known, or the budget spent.

It doubles from the first count until a probe fails, then bisects between the most agents that
passed (every probe there) and the fewest that failed (any probe there) until they are within the
precision; then it repeats the boundary until both sides hold k of k: k passes at the most agents
that passed, k failures at the fewest that failed. A repeat that fails at the passing side moves
the boundary down and the bisection goes on. A count is never probed more than k times: a failing
side that passed once in its k probes is not confirmed, and the answer says so. The probe is a
function (an outcome per call): a child `locust` run in harness.run.capacity, a fake in the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.config.capacity import Precision

__all__ = ["Answer", "bounds", "search"]


@dataclass
class Answer:
    capacity: int  # the most agents every probe of which passed, below the fewest that failed; 0: none
    failing: int | None  # the fewest agents a probe failed at; None: none failed (the budget ran out first)
    precision: int  # agents, at `capacity`
    confirmed: bool  # k passes at `capacity` (or none to make) and k failures at `failing`
    cut_short: bool  # the budget ran out before the answer was known
    outcomes: dict[int, list[bool]] = field(default_factory=dict)  # every probe's, by agents, in order


def bounds(outcomes: dict[int, list[bool]]) -> tuple[int, int | None]:
    """(the most agents every probe of which passed, below the fewest agents a probe failed at
    (0: none); those fewest, or None)."""
    failing = [n for n, seen in outcomes.items() if not all(seen)]
    high = min(failing) if failing else None
    passing = [n for n, seen in outcomes.items() if all(seen) and (high is None or n < high)]
    return (max(passing) if passing else 0), high


def _next(outcomes: dict[int, list[bool]], start: int, precision: Precision, repeats: int) -> int | None:
    """The agents to probe next; None: the answer is known."""
    low, high = bounds(outcomes)
    if high is None:
        return max(outcomes) * 2 if outcomes else start
    if high - low > precision.at(low):
        return (low + high) // 2
    if low and len(outcomes[low]) < repeats:
        return low
    if len(outcomes[high]) < repeats:
        return high
    return None


def search(probe: Callable[[int], bool], *, start: int, precision: Precision, repeats: int, budget_s: float,
           probe_s: float, clock: Callable[[], float] = time.monotonic) -> Answer:
    """Probe until the answer is known or the next probe would end past `budget_s`: the longest
    probe so far (`probe_s` before the first) is what the next one is expected to take."""
    outcomes: dict[int, list[bool]] = {}
    began = clock()
    longest = probe_s
    cut_short = False
    while (agents := _next(outcomes, start, precision, repeats)) is not None:
        if clock() - began + longest > budget_s:
            cut_short = True
            break
        probe_began = clock()
        passed = probe(agents)
        longest = max(longest, clock() - probe_began)
        outcomes.setdefault(agents, []).append(passed)
    low, high = bounds(outcomes)
    confirmed = (not cut_short and high is not None and not any(outcomes[high])
                 and len(outcomes[high]) >= repeats and (not low or len(outcomes[low]) >= repeats))
    return Answer(low, high, precision.at(low), confirmed, cut_short, outcomes)
