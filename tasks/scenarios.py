"""The conflict scenarios: which tools the agents invoke, how often, and which audits prove that
the data stayed right; and the built-in tools themselves, each an arguments step and its
execution (db.tool), bound to the scenario settings they need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from db.audits import AuditContext, Baseline, Check
from db.redis_keys import RedisKeys
from db.tool import Tool, no_arguments
from tasks.agent_state import audit_agent_state, drain_plan_log, update_plan, update_plan_arguments
from tasks.credits import deduct_credits, deduct_credits_arguments, transfer_credits, transfer_credits_arguments
from tasks.credits_audit import audit_credits
from tasks.cross_service import (
    audit_cross_service,
    charge_usage,
    charge_usage_arguments,
    drain_usage_applied,
    relay_outbox,
)
from tasks.isolation import audit_isolation, increment_counter, increment_counter_arguments, reserve_slot
from tasks.list_append import list_append, list_append_arguments
from tasks.list_append_audit import audit_list_append
from tasks.pool_exhaustion import audit_pool, audit_summaries, summarize_accounts
from tasks.queue import dequeue_job, drain_queue_log, enqueue_job, enqueue_job_arguments, queue_depth
from tasks.queue_audit import audit_queue
from tasks.workflows import (
    WORKFLOWS,
    Workflow,
    deduct_from_read,
    deduct_from_read_arguments,
    read_balance,
    read_balance_arguments,
    read_plan,
    read_plan_arguments,
    read_queue,
    take_job,
    take_job_arguments,
    write_plan_step,
    write_plan_step_arguments,
)
from tasks.workflows_audit import audit_workflows

__all__ = ["ScenarioParams", "Scenario", "SCENARIOS", "WeightedTool", "UnknownScenario", "built_in_tools", "select"]

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
    # list_append: the consistency model its history must keep ("": the one `isolation` promises).
    consistency_model: str = ""

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
    # Its reads and the writes an agent makes from what it read (harness.run.memory).
    workflows: tuple[Workflow, ...] = ()


_ACCOUNT = (("account", "account"),)
_TEAM = (("team", "team"),)


def built_in_tools(p: ScenarioParams) -> dict[str, Tool]:
    """Every built-in tool by name. Each declares its arguments step (none drawn: `no_arguments`),
    so that it executes from its arguments alone, whoever executes it."""
    return {tool.name: tool for tool in (
        Tool("deduct_credits", deduct_credits, arguments=partial(deduct_credits_arguments, accounts=p.accounts),
             keys=_ACCOUNT),
        Tool("transfer_credits", transfer_credits, arguments=partial(transfer_credits_arguments, accounts=p.accounts),
             keys=(("payer", "account"), ("payee", "account"))),
        Tool("increment_counter", increment_counter,
             arguments=partial(increment_counter_arguments, counters=p.counters), keys=(("counter", "counter"),)),
        Tool("reserve_slot", reserve_slot, arguments=no_arguments),
        Tool("summarize_accounts", partial(summarize_accounts, hold_s=p.hold_s), arguments=no_arguments),
        Tool("enqueue_job", partial(enqueue_job, keys=p.keys, capacity=p.queue_capacity), "redis",
             enqueue_job_arguments),
        Tool("dequeue_job", partial(dequeue_job, keys=p.keys), "redis", no_arguments),
        Tool("charge_usage", partial(charge_usage, keys=p.keys),
             arguments=partial(charge_usage_arguments, accounts=p.accounts), keys=_ACCOUNT),
        Tool("update_plan", partial(update_plan, keys=p.keys), "redis", partial(update_plan_arguments, teams=p.teams),
             keys=_TEAM),
        Tool("read_balance", read_balance, arguments=partial(read_balance_arguments, accounts=p.accounts),
             keys=_ACCOUNT),
        Tool("deduct_from_read", deduct_from_read,
             arguments=partial(deduct_from_read_arguments, accounts=p.accounts, initial_balance=p.initial_balance),
             keys=_ACCOUNT),
        Tool("read_plan", partial(read_plan, keys=p.keys), "redis", partial(read_plan_arguments, teams=p.teams),
             keys=_TEAM),
        Tool("write_plan_step", partial(write_plan_step, keys=p.keys), "redis",
             partial(write_plan_step_arguments, teams=p.teams), keys=_TEAM),
        Tool("read_queue", partial(read_queue, keys=p.keys), "redis", no_arguments),
        Tool("take_job", partial(take_job, keys=p.keys), "redis", take_job_arguments),
        Tool("list_append", list_append, arguments=list_append_arguments),
    )}


def _tools(*names: str) -> Callable[[ScenarioParams], list[WeightedTool]]:
    """A scenario's tools: these built-in ones, each of weight 1."""
    return lambda p: [WeightedTool(built_in_tools(p)[name], 1) for name in names]


_CREDITS = {"credits": audit_credits}

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "optimistic_locking",
            _tools("deduct_credits"),
            lambda p: _CREDITS,
        ),
        Scenario(
            "deadlock",
            _tools("transfer_credits"),
            lambda p: _CREDITS,
        ),
        Scenario(
            "isolation",
            _tools("increment_counter", "reserve_slot"),
            lambda p: {"isolation": partial(audit_isolation, isolation=p.isolation)},
            # Its tools exist to show the anomalies of the weaker levels: in the default mix
            # only where they must not happen.
            joins_default_mix=lambda isolation: isolation == "serializable",
        ),
        Scenario(
            "pool_exhaustion",
            _tools("summarize_accounts"),
            lambda p: {"pool": audit_pool, "summaries": audit_summaries},
        ),
        Scenario(
            "queue",
            _tools("enqueue_job", "dequeue_job"),
            lambda p: {"queue": audit_queue},
            sample=lambda ctx, params: {"queue_depth": queue_depth(ctx.redis, ctx.keys)},
            drain=drain_queue_log,
        ),
        Scenario(
            "cross_service",
            _tools("charge_usage"),
            lambda p: {**_CREDITS, "cross_service": audit_cross_service},
            sample=lambda ctx, params: {
                "outbox_relayed": relay_outbox(ctx.conn, ctx.schema, ctx.redis, ctx.keys)["caught_up"]
            },
            drain=drain_usage_applied,
        ),
        Scenario(
            "agent_state",
            _tools("update_plan"),
            lambda p: {"agent_state": partial(audit_agent_state, teams=p.teams)},
            drain=drain_plan_log,
        ),
        Scenario(
            "workflows",
            # Producers too, for the queue's workflow to take their jobs.
            _tools("read_balance", "deduct_from_read", "read_plan", "write_plan_step", "read_queue", "take_job",
                   "enqueue_job"),
            lambda p: {**_CREDITS, "agent_state": partial(audit_agent_state, teams=p.teams), "queue": audit_queue,
                       "workflows": audit_workflows},
            sample=lambda ctx, params: {"queue_depth": queue_depth(ctx.redis, ctx.keys)},
            drain=lambda ctx: drain_plan_log(ctx) + drain_queue_log(ctx),
            # Its blind writes lose updates on purpose (--writes): only where it is asked for.
            joins_default_mix=lambda isolation: False,
            workflows=WORKFLOWS,
        ),
        Scenario(
            "list_append",
            _tools("list_append"),
            lambda p: {"list_append": partial(audit_list_append, isolation=p.isolation, model=p.consistency_model)},
            # It asks the database's question, not the tools': only where it is asked for.
            joins_default_mix=lambda isolation: False,
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
