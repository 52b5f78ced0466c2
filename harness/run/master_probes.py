"""A capacity search on a headless master whose workers connect from elsewhere (`--master
--expect-workers N`: other machines, the compose file's workers). Locust's workers quit when their
master's run ends, so a probe cannot be a run of its own there: the search runs in the master, and
each probe is one Locust test of it, as each web-UI ramp is, the workers staying connected from one
probe to the next and taking the master's options at each test (harness.distributed).

Each test is judged as any test of a master is (harness.run.judge): seeded afresh at its start
(harness.verdict.coordinator; on --capacity-data kept, every test after the first goes on with the
data the earlier ones left), its workers' figures summed, audited at its stop; it follows its
probe's plan through ProbeShape (warm-up, steps, sliding window, enough evidence), ticked here
once a second as Locust ticks a load shape, and its report goes to the search rather than to the
console and the files (Judge.report_to): the search reports itself (harness.run.capacity)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gevent
from gevent import GreenletExit
from locust import LoadTestShape
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from harness.run.probe_shape import ProbeShape

if TYPE_CHECKING:
    from harness.capacity.plan import ProbePlan
    from harness.report_shape import Report
    from harness.run.capacity import CapacitySearch
    from harness.run.master import Master

__all__ = ["SearchOnMaster", "TestProbes"]

# Locust asks a load shape for its figures once a second.
_TICK_S = 1.0
# After a test stops, each worker leaves the master's list and comes back ready (Locust's
# client_stopped, then client_ready after --stop-timeout): how long the next probe waits for them.
_WORKERS_BACK_S = 60.0
_WORKERS_POLL_S = 0.1


class TestProbes:
    """Each probe a test of this master, on the workers connected to it."""

    def __init__(self, judge: Master, workers: int) -> None:
        """`workers`: --expect-workers, the workers every probe waits for."""
        self.judge = judge
        self.runner = judge.environment.runner
        self.workers = workers
        self._report: Report | None = None
        judge.report_to = self._reported

    def _reported(self, report: Report) -> None:
        self._report = report

    def run(self, plan: ProbePlan, number: int) -> tuple[Report | None, str]:
        missing = self._await_workers()
        if missing:
            return None, missing
        shape = ProbeShape(plan, self.judge, self.runner)
        self.judge.coordinator.kept = plan.kept
        self._report = None
        # test_start: the data seeded (or, kept, taken as it is), the workers checked and told the
        # servers; then the agents spawned on them.
        self.runner.start(plan.agents, plan.spawn_rate)
        shape.reset_time()
        while self.runner.state in (STATE_SPAWNING, STATE_RUNNING):
            tick_began = time.monotonic()
            if shape.tick() is None:
                self.runner.stop()  # test_stop: the workers' final figures, the audit, the report
                break
            gevent.sleep(max(0.0, _TICK_S - (time.monotonic() - tick_began)))
        if self._report is None:
            return None, self.judge.audit_error or "its test was refused or ended before its audit (see above)"
        return self._report, ""

    def _await_workers(self) -> str:
        """Wait until every expected worker is ready for a test; why not, one line."""
        deadline = time.monotonic() + _WORKERS_BACK_S
        while len(self.runner.clients.ready) < self.workers:
            if time.monotonic() > deadline:
                return (f"{len(self.runner.clients.ready)} of the {self.workers} workers (--expect-workers) were"
                        f" ready for it after {_WORKERS_BACK_S:g} s")
            gevent.sleep(_WORKERS_POLL_S)
        return ""


class SearchOnMaster(LoadTestShape):
    """The search, as the load shape Locust's headless master starts once its workers are in: its
    first tick runs every probe (TestProbes) and returns None, which ends the run."""

    def __init__(self, search: CapacitySearch, judge: Master) -> None:
        super().__init__()
        self.search = search
        self.judge = judge

    def tick(self) -> None:
        try:
            self.judge.exit_code = self.search.run()  # the process's exit code is the search's
        except GreenletExit:
            # Ctrl-C: Locust stops the runner, ending this greenlet, and that stop audits the
            # probe under way (its report is the search's to drop: it has no answer).
            self.judge.exit_code = self.search.interrupted()
            raise
        return None
