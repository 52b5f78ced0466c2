"""What every process of a run holds, whatever its role (harness.run.local, harness.run.master,
harness.run.worker): the settings of the current test, its --history file, its exit code so far,
its event-loop probe; and how it ends."""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from typing import Any

from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED

from harness.config.run_settings import fixed_options, settings_for_test
from harness.config.settings import Settings
from harness.output.history import History
from harness.verdict.evidence import CONFIGURATION_ERROR
from harness.watch.hub_lag import HubLagProbe

__all__ = ["Role"]

log = logging.getLogger("toolclash")


class Role(ABC):
    """One process's share of the run."""

    def __init__(self, environment: Environment, settings: Settings, history: History | None) -> None:
        self.environment = environment
        self.settings = settings
        self.history = history
        # The worst exit code of the tests (web-UI ramps) so far: the process's exit code.
        self.exit_code: int | None = None
        # The options fixed when this process started (Locust overwrites a worker's parsed_options
        # with the master's at each spawn message).
        self.fixed = fixed_options(environment.parsed_options)
        # Whether this process's event loop kept its schedule during the test (harness.watch.hub_lag).
        self.hub_probe = HubLagProbe()

    def listen(self) -> None:
        """Answer Locust's events (and, in a distributed run, the messages of the other side)."""
        events = self.environment.events
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)

    def settings_for_test(self, options: Any) -> Settings:
        """This process's settings for a test started with `options` (Locust's parsed_options as
        they are at that test's start); raises BadOption."""
        return settings_for_test(options, self.fixed)

    def _use(self, settings: Settings) -> None:
        self.settings = settings
        if settings.chaos:
            # psycopg_pool warns of every connection it finds dead: under --chaos, those are the
            # faults the run injects on purpose, counted in the report, not news.
            logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    def _configuration_error(self, line: str, *, in_log: bool = False) -> None:
        """The test cannot run (or be audited) as configured: one line on stderr (or, where the
        web UI is what the user reads, in its log), and exit code 2."""
        if in_log:
            log.error("toolclash: error: %s", line)
        else:
            print(f"toolclash: error: {line}", file=sys.stderr, flush=True)
        self.exit_code = CONFIGURATION_ERROR

    @abstractmethod
    def on_test_start(self, environment: Environment, **_: Any) -> None: ...

    @abstractmethod
    def on_test_stop(self, environment: Environment, **_: Any) -> None: ...

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        # On Ctrl-C Locust fires `quitting` before it stops the runner: stop it here, so the run
        # is audited and its verdict is the exit code.
        if environment.runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
            environment.runner.stop()
        if self.exit_code is not None:
            environment.process_exit_code = self.exit_code
        self._release()
        if self.history is not None:
            self.history.close()

    def _release(self) -> None:
        """Let go of what this role holds for the process's life (the judging side: its servers)."""
