"""The settings of one test: its per-run options as they are at that test's start, its fixed
options as the process started with them.

Per-run options (harness.config.declared.RUN_OPTIONS: the scenario, the tools module, the isolation
level, the data's sizes, the pool, the retries, the timeouts, the seed, the faults, the SLA file)
are read again at every test start, from `environment.parsed_options`: the command line's on a
headless run, the web UI's start form's for a ramp started there, and on a worker the master's,
which Locust copies into the worker's parsed_options with each spawn message, before the
worker's `test_start`. One path for all three.

Fixed options (FIXED_OPTIONS: the servers, the schema, the report and history files, the load
shape, the sampling) are read once, when the process starts: the servers were reached and the
schema claimed with them.

A test's settings have a summary (the options declared `summarized`: what shapes the load) and
its fingerprint: the master's is in the report, and each worker's comes with its metrics; a run in
which a worker ran with other settings than the master's does not pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from harness.config.declared import FIXED_OPTIONS, OPTIONS
from harness.config.settings import Settings

__all__ = ["fingerprint", "fixed_options", "settings_for_test", "settings_summary"]


def fixed_options(options: Any) -> dict[str, Any]:
    """The fixed options' values, as the process started with them."""
    return {option.dest: getattr(options, option.dest) for option in FIXED_OPTIONS}


def settings_for_test(options: Any, fixed: Mapping[str, Any], *, judge: bool = True) -> Settings:
    """The settings of the test starting now: the per-run options from `options` (Locust's
    parsed_options, as they are now), the rest from `fixed`. Raises BadOption."""
    return Settings.from_options(argparse.Namespace(**{**vars(options), **fixed}), judge=judge)


def _scenarios(settings: Settings) -> dict[str, Any]:
    return {"scenarios": [s.name for s in settings.scenarios],
            "tools": [[wt.tool.name, wt.weight] for s in settings.scenarios for wt in s.tools(settings.params)]}


def _tools_module(settings: Settings) -> dict[str, Any]:
    return {"tools_module_sha256": settings.tools_digest}


def _calls_per_turn(settings: Settings) -> dict[str, Any]:
    weights = settings.calls_per_turn.weights
    return {"calls_per_turn": str(weights[0][0]) if len(weights) == 1 else ",".join(f"{c}:{w}" for c, w in weights)}


def _trace(settings: Settings) -> dict[str, Any]:
    trace = settings.trace
    return {"trace": trace.path if trace else None, "trace_sha256": trace.sha256 if trace else None}


def _chaos(settings: Settings) -> dict[str, Any]:
    return {"chaos": [[f.kind, f.every_s, f.share] for f in settings.chaos]}


def _duration(dest: str) -> Callable[[Settings], dict[str, Any]]:
    """A duration's summary (db.durations): a constant as its ms, as before a duration could be a
    distribution (the same summary, the same fingerprint); a distribution as given."""
    def shown(settings: Settings) -> dict[str, Any]:
        duration = settings.as_given[dest]
        return {f"{dest}_ms": round(duration.params[0] * 1000, 6) if duration.is_constant else str(duration)}
    return shown


# The summarized options shown resolved rather than as given, by dest: the scenarios run and their
# tools' weights (not the names asked for), the tools module's content (its path may differ from
# host to host), the faults parsed, the calls per turn as parsed (however spaced), the durations
# (harness.config.declared's), the trace's path as given and its content's digest (a worker reads
# the master's path: a worker with another file has another digest, so another fingerprint).
_RESOLVED: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "scenario": _scenarios, "tools_module": _tools_module, "chaos": _chaos, "calls_per_turn": _calls_per_turn,
    "trace": _trace,
    "tool_work": _duration("tool_work"), "think_time": _duration("think_time"),
}


def settings_summary(settings: Settings) -> dict[str, Any]:
    """What shapes the load of a test, in the same form on every process (no host's paths): each
    option declared `summarized`, under its summary key (unit included), as given or resolved."""
    summary: dict[str, Any] = {}
    for option in (o for o in OPTIONS if o.summarized):
        if option.dest in _RESOLVED:
            summary.update(_RESOLVED[option.dest](settings))
        else:
            summary[option.summary_key] = settings.as_given[option.dest]
    return summary


def fingerprint(settings: Settings) -> str:
    """A short hash of settings_summary: equal on two processes when they run the same test."""
    canonical = json.dumps(settings_summary(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
