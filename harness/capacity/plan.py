"""One capacity probe's plan, as the search hands it to the probe's own `locust` run (through
its environment: PROBE_VARIABLE), and how long and how many calls make a probe evidence.

A probe holds its agents through a warm-up, whose calls the SLA figures leave out (the audits
never do: they judge every call of the run), then measures in steps of `step_s`: after each step
the last two (the sliding window) are checked against the latency and rate rules, and a window
that breaks one ends the probe there (it fails, and is still audited). Otherwise the probe ends
once it has measured `min_s` and `min_calls`, or at `max_s` without them (too few calls to be
evidence: it fails)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

__all__ = ["MIN_CALLS_PER_TOOL", "PROBE_VARIABLE", "ProbePlan", "min_calls"]

# Set in each probe's environment: the child run is that probe, never a search of its own.
PROBE_VARIABLE = "TOOLCLASH_CAPACITY_PROBE"
# The rarest tool of the mix is expected to be called this often in a probe's measured part: a
# rate over fewer calls moves by more than the rules' margins with one call (1 in 20 is 5 %).
MIN_CALLS_PER_TOOL = 20
# A probe that has not made its calls by this many times its measured duration fails for want of
# evidence rather than run on.
LONGEST = 3


def min_calls(weights: list[int]) -> int:
    """The measured calls that give the rarest tool of these weights MIN_CALLS_PER_TOOL calls,
    as the agents draw their tools by weight."""
    drawn = [w for w in weights if w > 0]
    return math.ceil(MIN_CALLS_PER_TOOL * sum(drawn) / min(drawn))


@dataclass(frozen=True)
class ProbePlan:
    agents: int
    spawn_rate: float
    warmup_s: float
    step_s: float  # the window is two steps, checked at each step's end
    min_s: float
    min_calls: int
    # On the data the search's earlier probes left (--capacity-data kept), not reseeded.
    kept: bool = False

    @property
    def window_s(self) -> float:
        return 2 * self.step_s

    @property
    def max_s(self) -> float:
        return LONGEST * self.min_s

    @classmethod
    def for_hold(cls, agents: int, spawn_rate: float, warmup_s: float, hold_s: float, calls: int,
                 kept: bool = False) -> ProbePlan:
        """A probe measured `hold_s` at least, in steps of about a quarter of it (a window of half):
        whole seconds, as Locust asks a load shape each second."""
        return cls(agents, spawn_rate, warmup_s, float(max(1, round(hold_s / 4))), hold_s, calls, kept)

    def to_text(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_text(cls, text: str) -> ProbePlan:
        return cls(**json.loads(text))
