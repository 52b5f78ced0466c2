"""The conflict scenarios: which tools the agents invoke, how often, and which audit proves
that the data stayed right."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import psycopg

from db.audits import Acknowledged, Check, audit_credits
from db.tool import Tool
from tasks.credits import deduct_credits, transfer_credits

__all__ = ["ScenarioParams", "Scenario", "SCENARIOS", "WeightedTool", "UnknownScenario", "select"]

Audit = Callable[[psycopg.Connection, str, Acknowledged], list[Check]]


@dataclass(frozen=True)
class ScenarioParams:
    """What the tools of a scenario are shaped by (from the command line)."""

    accounts: int


@dataclass(frozen=True)
class WeightedTool:
    tool: Tool
    weight: int


@dataclass(frozen=True)
class Scenario:
    name: str
    tools: Callable[[ScenarioParams], list[WeightedTool]]
    audit: Audit


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "optimistic_locking",
            lambda p: [WeightedTool(Tool("deduct_credits", partial(deduct_credits, accounts=p.accounts)), 1)],
            audit_credits,
        ),
        Scenario(
            "deadlock",
            lambda p: [WeightedTool(Tool("transfer_credits", partial(transfer_credits, accounts=p.accounts)), 1)],
            audit_credits,
        ),
    )
}


class UnknownScenario(ValueError):
    pass


def select(names: str) -> list[Scenario]:
    """The scenarios named in a comma-separated list; all of them for an empty one."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted:
        return list(SCENARIOS.values())
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise UnknownScenario(f"unknown scenario {', '.join(map(repr, unknown))}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[name] for name in dict.fromkeys(wanted)]
