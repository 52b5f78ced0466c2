"""The conflict scenarios: which tools the agents invoke, how often, and which audits prove that
the data stayed right."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from db.audits import AuditContext, Baseline, Check
from db.redis_keys import RedisKeys
from db.tool import Tool
from tasks.agent_state import audit_agent_state, drain_plan_log, update_plan
from tasks.credits import deduct_credits, transfer_credits
from tasks.credits_audit import audit_credits
from tasks.cross_service import audit_cross_service, charge_usage, drain_usage_applied, relay_outbox
from tasks.isolation import audit_isolation, increment_counter, reserve_slot
from tasks.pool_exhaustion import audit_pool, audit_summaries, summarize_accounts
from tasks.queue import dequeue_job, drain_queue_log, enqueue_job, queue_depth
from tasks.queue_audit import audit_queue

__all__ = ["ScenarioParams", "Scenario", "SCENARIOS", "WeightedTool", "UnknownScenario", "select"]

Audit = Callable[[AuditContext], list[Check]]


@dataclass(frozen=True)
class ScenarioParams:
    """What the tools of the scenarios are shaped by (from the command line)."""

    accounts: int
    keys: RedisKeys
    counters: int = 8
    teams: int = 4
    queue_capacity: int = 50
    hold_s: float = 0.05
    initial_balance: int = 1_000_000
    # Of every tool transaction: what the isolation audit may expect of the reads.
    isolation: str = "read_committed"

    @property
    def baseline(self) -> Baseline:
        return Baseline(self.accounts, self.initial_balance, self.counters, self.teams, self.queue_capacity)


@dataclass(frozen=True)
class WeightedTool:
    tool: Tool
    weight: int


@dataclass(frozen=True)
class Scenario:
    name: str
    tools: Callable[[ScenarioParams], list[WeightedTool]]
    # Audits by name: scenarios that share the data share the audit, which runs once.
    audits: Callable[[ScenarioParams], dict[str, Audit]]
    # Called with every server sample (--sample-interval) on the coordinator; what it returns
    # joins the sample's row in the report's time series.
    sample: Callable[[AuditContext, ScenarioParams], dict[str, Any]] | None = None
    # Moves what the scenario's tools keep appending to in Redis into the run's schema, so that
    # Redis stays bounded (harness/verdict/drainer.py, on the coordinator, every --sample-interval). Safe
    # to run again whole; the scenario's audit drains to the end itself first.
    drain: Callable[[AuditContext], int] | None = None
    # Called at the start of a run with the harness's schema on the search path.
    setup: Callable[[Any], None] | None = None
    joins_default_mix: Callable[[str], bool] = field(default=lambda isolation: True)


def _tool(name: str, function: Callable[..., None], weight: int = 1, backend: str = "pg",
          **params: Any) -> WeightedTool:
    return WeightedTool(Tool(name, partial(function, **params), backend), weight)


_CREDITS = {"credits": audit_credits}

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "optimistic_locking",
            lambda p: [_tool("deduct_credits", deduct_credits, accounts=p.accounts)],
            lambda p: _CREDITS,
        ),
        Scenario(
            "deadlock",
            lambda p: [_tool("transfer_credits", transfer_credits, accounts=p.accounts)],
            lambda p: _CREDITS,
        ),
        Scenario(
            "isolation",
            lambda p: [
                _tool("increment_counter", increment_counter, counters=p.counters),
                _tool("reserve_slot", reserve_slot),
            ],
            lambda p: {"isolation": partial(audit_isolation, isolation=p.isolation)},
            # Its tools exist to show the anomalies of the weaker levels: in the default mix
            # only where they must not happen.
            joins_default_mix=lambda isolation: isolation == "serializable",
        ),
        Scenario(
            "pool_exhaustion",
            lambda p: [_tool("summarize_accounts", summarize_accounts, hold_s=p.hold_s)],
            lambda p: {"pool": audit_pool, "summaries": audit_summaries},
        ),
        Scenario(
            "queue",
            lambda p: [
                _tool("enqueue_job", enqueue_job, backend="redis", keys=p.keys, capacity=p.queue_capacity),
                _tool("dequeue_job", dequeue_job, backend="redis", keys=p.keys),
            ],
            lambda p: {"queue": audit_queue},
            sample=lambda ctx, params: {"queue_depth": queue_depth(ctx.redis, ctx.keys)},
            drain=drain_queue_log,
        ),
        Scenario(
            "cross_service",
            lambda p: [_tool("charge_usage", charge_usage, accounts=p.accounts, keys=p.keys)],
            lambda p: {**_CREDITS, "cross_service": audit_cross_service},
            sample=lambda ctx, params: {
                "outbox_relayed": relay_outbox(ctx.conn, ctx.schema, ctx.redis, ctx.keys)["caught_up"]
            },
            drain=drain_usage_applied,
        ),
        Scenario(
            "agent_state",
            lambda p: [_tool("update_plan", update_plan, backend="redis", keys=p.keys, teams=p.teams)],
            lambda p: {"agent_state": partial(audit_agent_state, teams=p.teams)},
            drain=drain_plan_log,
        ),
    )
}


class UnknownScenario(ValueError):
    pass


def select(names: str, isolation: str, extra: tuple[Scenario, ...] = ()) -> list[Scenario]:
    """The scenarios named in a comma-separated list. For an empty list: the user's own
    scenarios if there are any, else the default mix at this isolation level."""
    known = {**SCENARIOS, **{s.name: s for s in extra}}
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted:
        return list(extra) or [s for s in SCENARIOS.values() if s.joins_default_mix(isolation)]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UnknownScenario(f"unknown scenario {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return [known[name] for name in dict.fromkeys(wanted)]
