"""The settings of one test: its per-run options as they are at that test's start, its fixed
options as the process started with them.

Per-run options (harness.config.options.RUN_OPTIONS: the scenario, the tools module, the isolation
level, the data's sizes, the pool, the retries, the timeouts, the seed, the faults, the SLA file)
are read again at every test start, from `environment.parsed_options`: the command line's on a
headless run, the web UI's start form's for a ramp started there, and on a worker the master's,
which Locust copies into the worker's parsed_options with each spawn message, before the
worker's `test_start`. One path for all three.

Fixed options (FIXED_DESTS: the servers, the schema, the report and history files, the load
shape, the sampling) are read once, when the process starts: the servers were reached and the
schema claimed with them.

A test's settings have a fingerprint: the master's is in the report, and each worker's comes with
its metrics; a run in which a worker ran with other settings than the master's does not pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from harness.config.options import Settings
from harness.report_shape import RunSettings

__all__ = ["FIXED_DESTS", "fingerprint", "fixed_options", "settings_for_test", "settings_summary"]

FIXED_DESTS = (
    "pg_dsn", "redis_url", "schema", "reset", "isolation_matrix", "require_levels", "sample_interval", "timeseries_csv",
    "shape", "shape_agents", "shape_hold", "report_json", "junit_xml", "history",
)


def fixed_options(options: Any) -> dict[str, Any]:
    """The fixed options' values, as the process started with them."""
    return {dest: getattr(options, dest) for dest in FIXED_DESTS}


def settings_for_test(options: Any, fixed: Mapping[str, Any], *, judge: bool = True) -> Settings:
    """The settings of the test starting now: the per-run options from `options` (Locust's
    parsed_options, as they are now), the rest from `fixed`. Raises BadOption."""
    return Settings.from_options(argparse.Namespace(**{**vars(options), **fixed}), judge=judge)


def settings_summary(settings: Settings) -> RunSettings:
    """What shapes the load of a test, in the same form on every process (no host's paths)."""
    params, retry = settings.params, settings.retry
    return {
        "scenarios": [s.name for s in settings.scenarios],
        "tools": [[wt.tool.name, wt.weight] for s in settings.scenarios for wt in s.tools(params)],
        "tools_module_sha256": settings.tools_digest,
        "schema": settings.schema,
        "isolation": settings.isolation,
        "accounts": params.accounts,
        "counters": params.counters,
        "teams": params.teams,
        "queue_capacity": params.queue_capacity,
        "hold_time_ms": round(params.hold_s * 1000.0, 6),
        "tool_work_ms": round(settings.tool_work_s * 1000.0, 6),
        "think_time_ms": round(settings.think_time_s * 1000.0, 6),
        "pool_size": settings.pool_size,
        "pool_timeout_s": settings.pool_timeout_s,
        "max_tries": retry.max_tries,
        "backoff_base_ms": round(retry.base_s * 1000.0, 6),
        "backoff_max_ms": round(retry.cap_s * 1000.0, 6),
        "deadlock_timeout_ms": settings.deadlock_timeout_ms,
        "lock_timeout_ms": settings.lock_timeout_ms,
        "seed": settings.seed,
        "chaos": [[f.kind, f.every_s, f.share] for f in settings.chaos],
    }


def fingerprint(settings: Settings) -> str:
    """A short hash of settings_summary: equal on two processes when they run the same test."""
    canonical = json.dumps(settings_summary(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
