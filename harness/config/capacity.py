"""--capacity's options validated into `CapacityOptions`, and what a search refuses: a search is
a sequence of probes of its own (harness.run.capacity), so it cannot be a load shape or an
isolation matrix; on a master it runs headless, and a worker takes it from its master."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from harness.config.option import BadOption

__all__ = ["DEFAULT_BUDGET_S", "RUN_OVERHEAD_S", "CapacityOptions", "Precision", "capacity_options"]

# The search's budget without --run-time: ten minutes, a coffee's wait.
DEFAULT_BUDGET_S = 600.0
# A probe's run beyond its warm-up and its measure: Python and Locust starting, the schema seeded,
# the audit: what the budget expects of the first probe, before one has been timed.
RUN_OVERHEAD_S = 6.0


@dataclass(frozen=True)
class Precision:
    """How close the passing and the failing side must come: agents, or a share of the passing
    side (at least one agent)."""

    agents: int = 0
    percent: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Precision:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
        if not match or float(match[1]) <= 0 or (not match[2] and not match[1].isdigit()):
            raise BadOption(f"--capacity-precision {text!r}: give a number of agents (e.g. 2) or a share of"
                            " the capacity found (e.g. 10%)")
        return cls(percent=float(match[1])) if match[2] else cls(agents=int(match[1]))

    def at(self, agents: int) -> int:
        """The precision, in agents, about a boundary whose passing side is `agents`."""
        if self.agents:
            return self.agents
        return max(1, math.floor(max(agents, 1) * self.percent / 100))

    def __str__(self) -> str:
        return f"{self.agents} agent{'s' if self.agents != 1 else ''}" if self.agents else f"{self.percent:g}%"


@dataclass(frozen=True)
class CapacityOptions:
    start: int  # --users: the first probe's agents
    spawn_rate: float  # --spawn-rate, or all of a probe's agents at once
    precision: Precision
    hold_s: float  # each probe measures at least this after its warm-up
    warmup_s: float
    repeats: int  # k: the boundary holds k of k
    budget_s: float  # --run-time
    expected: int | None  # --expect-capacity
    kept: bool = False  # --capacity-data kept: the probes after the first run on the data left

    @property
    def probe_s(self) -> float:
        """What a probe is reckoned to take of the budget: warm-up, hold, start and audit."""
        return self.warmup_s + self.hold_s + RUN_OVERHEAD_S


def capacity_options(options: Any) -> CapacityOptions | None:
    """The search's options, or None without --capacity (its other options are then unused)."""
    if not options.capacity:
        if options.expect_capacity is not None:
            raise BadOption("--expect-capacity needs --capacity")
        if options.capacity_data == "kept":  # a run of its own always starts on data it seeded
            raise BadOption("--capacity-data kept needs --capacity")
        return None
    # --processes makes the process a master and forks its workers before any of toolclash's code
    # runs: those are the search's own, not a master's of the user's (harness.run.lifecycle).
    forked = bool(options.processes)
    for flag, conflict in (("--shape", options.shape), ("--isolation-matrix", options.isolation_matrix)):
        if conflict:
            raise BadOption(f"--capacity excludes {flag}: each probe of the search is a run of its own")
    # A master whose workers connect from elsewhere runs the search itself, each probe a test of
    # it (harness.run.master_probes); its workers take each probe from it, --capacity included.
    if options.master and not forked and not options.headless:
        raise BadOption("--capacity on a --master runs headless (each probe a test of the master, on its"
                        " workers): add --headless")
    if options.worker and not forked:
        raise BadOption("--capacity is the master's: a --worker runs each probe as its master tells it; give"
                        " --capacity to the --master alone")
    if options.capacity_hold <= 0:
        raise BadOption(f"--capacity-hold {options.capacity_hold}: must be more than 0 seconds")
    search = CapacityOptions(
        start=options.num_users or 1,
        spawn_rate=options.spawn_rate or 0.0,
        precision=Precision.parse(options.capacity_precision),
        hold_s=options.capacity_hold,
        warmup_s=options.capacity_warmup,
        repeats=options.capacity_repeats,
        budget_s=float(options.run_time) if options.run_time else DEFAULT_BUDGET_S,
        expected=options.expect_capacity,
        kept=options.capacity_data == "kept",
    )
    if search.budget_s < search.probe_s:
        raise BadOption(f"--run-time {search.budget_s:g} s: the search's budget holds no probe (--capacity-warmup"
                        f" {search.warmup_s:g} s, --capacity-hold {search.hold_s:g} s and about"
                        f" {RUN_OVERHEAD_S:g} s to start and audit: {search.probe_s:g} s)")
    return search
