"""A capacity probe's own run (harness.capacity.plan): its agents held through the warm-up
(stage 0), then step after step (stages 1, 2, …), judged as it goes: after each step the sliding
window of the last two is checked against the latency and rate rules, and the probe ends at the
first window that breaks one, once it has its duration and its calls, or at its longest. Set in
place of a load shape in the run whose environment names PROBE_VARIABLE."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from locust import LoadTestShape
from locust.runners import Runner

from harness.capacity.plan import PROBE_VARIABLE, ProbePlan
from harness.verdict.probe import WARMUP_STAGE, ProbeEnding, window_breaks
from harness.verdict.transport import transport_section

if TYPE_CHECKING:
    from harness.run.judge import Judge

__all__ = ["ProbeShape", "probe_plan"]

# Locust's ticks come a second apart, each a little later than the last: a stage's length is
# reached at the tick within this of it.
_TICK_SLACK_S = 0.05


def probe_plan() -> ProbePlan | None:
    """This run's probe, when it is one."""
    text = os.environ.get(PROBE_VARIABLE)
    return ProbePlan.from_text(text) if text else None


class ProbeShape(LoadTestShape):
    """The probe's shape on `runner`; `judge` asks it how the probe ended."""

    def __init__(self, plan: ProbePlan, judge: Judge, runner: Runner) -> None:
        super().__init__()
        self.plan = plan
        self.judge = judge
        self.runner = runner
        judge.probe_ending = self.ending
        self._current: int | None = None
        self._began = 0.0  # the current stage's start, in the shape's run time
        self.stopped = "interrupted"  # until the shape ends it
        self.broken: list[str] = []

    def reset_time(self) -> None:
        super().reset_time()
        self._current = None

    def ending(self, load_stopped: float) -> ProbeEnding:
        """How the probe ended, its load stopped at `load_stopped` (time.monotonic())."""
        measured_since = self.judge.stage_started(WARMUP_STAGE + 1)
        measured_s = load_stopped - measured_since if measured_since is not None else 0.0
        return ProbeEnding(self.plan, measured_s, self.stopped, self.broken)

    def tick(self) -> tuple[int, float] | None:
        """Locust asks each second: a stage ends at the first tick its length has passed (the
        steps are whole seconds: harness.capacity.plan), and the next one begins there."""
        now = self.get_run_time()
        if self._current is None:
            self._begin(WARMUP_STAGE, now)
        else:
            length = self.plan.warmup_s if self._current == WARMUP_STAGE else self.plan.step_s
            if now - self._began >= length - _TICK_SLACK_S:
                if self._current != WARMUP_STAGE and self._ends(finished=self._current):
                    return None
                self._begin(self._current + 1, now)
        return self.plan.agents, self.plan.spawn_rate

    def _begin(self, index: int, now: float) -> None:
        self._current, self._began = index, now
        self.judge.on_stage(index, self.plan.agents)

    def _ends(self, finished: int) -> bool:
        """Whether the probe ends now that step `finished` is over (and why: `stopped`)."""
        metrics = self.judge.live_metrics()
        if finished >= 2:
            self.broken = window_breaks(metrics, finished, self.plan, self.judge.settings,
                                        transport_section(metrics, self.judge.mcp))
            if self.broken:
                self.stopped = "window"
                return True
        measured = finished * self.plan.step_s
        calls = sum(stats.calls for index, stage in metrics.stages.items() if index != WARMUP_STAGE
                    for stats in stage.tools.values())
        if measured >= self.plan.min_s - 1e-9 and calls >= self.plan.min_calls:
            self.stopped = "evidence"
            return True
        if measured >= self.plan.max_s - 1e-9:
            self.stopped = "longest"
            return True
        return False
