"""Elle's answer for a list-append history and a consistency model: `valid` (false when an
anomaly the model forbids was found; "unknown" when none was but a cycle search ran out of its
budget), every anomaly type found (Elle's names), the ones the model forbids, each type's cases
(for a cycle: its operations and micro-operations, and why each depends on the one before), and
the models the anomalies rule out (Elle's `not` and `also-not`)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from history_check.cycles import Cycle, cycles_in_component
from history_check.direct import direct_anomalies, sorted_values
from history_check.graph import PROCESS, REALTIME, RELS, RW, WR, WW, dependency_graph, strongly_connected
from history_check.history import APPEND, READ, Op, cyclic_gc_paused, jsonable
from history_check.models import anomalies_prohibited_by, impossible_models

__all__ = ["CASES_SHOWN", "DEFAULT_BUDGET", "Answer", "check", "cycle_text", "validity"]

# Cases listed per anomaly type (all are counted).
CASES_SHOWN = 8
# Steps of cycle search per strongly connected component (an edge tried in one state is a step).
DEFAULT_BUDGET = 2_000_000


@dataclass(frozen=True)
class Answer:
    model: str
    valid: bool | str  # True, False or "unknown"
    anomaly_types: list[str]
    forbidden: list[str]
    counts: dict[str, int]
    cases: dict[str, list[dict[str, Any]]]
    not_models: list[str]
    also_not: list[str]
    transactions: int  # ops checked (ok, info and fail)
    components: int  # strongly connected components of more than one transaction
    timed_out: int  # components whose cycle search ran out of its budget

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "consistency_model": self.model, "anomaly_types": self.anomaly_types,
                "forbidden_anomaly_types": self.forbidden, "anomaly_counts": self.counts, "anomalies": self.cases,
                "not": self.not_models, "also_not": self.also_not,
                "stats": {"transactions": self.transactions, "sccs": self.components,
                          "cycle_search_timeouts": self.timed_out}}


def check(ops: list[Op], model: str = "serializable", *, budget: int = DEFAULT_BUDGET,
          realtime: bool | None = None) -> Answer:
    """Check `ops` against `model` (UnknownModel if not one of Elle's). Process and real-time
    edges are inferred only where the model forbids an anomaly of theirs, as Elle does;
    `realtime` False leaves real time out even then (a history whose clocks cannot order it),
    and the answer is at best "unknown" for such a model."""
    with cyclic_gc_paused():
        return _check(ops, model, budget, realtime)


def _check(ops: list[Op], model: str, budget: int, realtime: bool | None) -> Answer:
    forbidden = anomalies_prohibited_by(model)
    wants_realtime = any(t.endswith("-realtime") for t in forbidden)
    wants_process = any(t.endswith("-process") for t in forbidden)
    use_realtime = wants_realtime and realtime is not False
    values = sorted_values(ops)
    direct = direct_anomalies(ops, values)
    g = dependency_graph(ops, values, process=wants_process and not use_realtime, realtime=use_realtime)
    variants = REALTIME if use_realtime else PROCESS if wants_process else 0
    components = strongly_connected(range(len(ops)), g.out, WW | WR | RW | PROCESS | REALTIME)
    cycles: dict[str, list[Cycle]] = {}
    timed_out = 0
    for component in sorted(components, key=len):
        found, out_of_budget = cycles_in_component(g, component, variants, budget)
        timed_out += out_of_budget
        for cycle in found:
            cycles.setdefault(cycle.kind, []).append(cycle)
    cases = {t: [jsonable(c) for c in cs[:CASES_SHOWN]] for t, cs in direct.items()}
    counts = {t: len(cs) for t, cs in direct.items()}
    for kind, found_cycles in cycles.items():
        cases[kind] = [_cycle_case(ops, c) for c in found_cycles[:CASES_SHOWN]]
        counts[kind] = len(found_cycles)
    if timed_out:
        counts["cycle-search-timeout"] = timed_out
        cases["cycle-search-timeout"] = [{"sccs": timed_out, "budget_steps": budget}]
    if wants_realtime and not use_realtime:
        counts["realtime-not-inferred"] = 1
        cases["realtime-not-inferred"] = [{"detail": f"{model} forbids real-time anomalies, and the history's"
                                                     " real-time order was not inferred"}]
    found_types = sorted(counts)
    bad = sorted(t for t in found_types if t in forbidden)
    unknown = timed_out or (wants_realtime and not use_realtime)
    valid: bool | str = False if bad else "unknown" if unknown else True
    not_models, also_not = impossible_models(t for t in found_types if t not in _NOT_ANOMALIES)
    return Answer(model, valid, found_types, bad, counts, cases, not_models, also_not, len(ops), len(components),
                  timed_out)


# What the answer lists beside the anomalies: why it is unknown.
_NOT_ANOMALIES = ("cycle-search-timeout", "realtime-not-inferred")


def _cycle_case(ops: list[Op], cycle: Cycle) -> dict[str, Any]:
    steps = []
    n = len(cycle.ops)
    for i, a in enumerate(cycle.ops):
        b = cycle.ops[(i + 1) % n]
        steps.append(_explain(ops[a], ops[b], cycle.rels[i]))
    return {"type": cycle.kind, "cycle": [ops[i].as_dict() for i in cycle.ops], "steps": steps}


def _explain(a: Op, b: Op, rel: int) -> dict[str, Any]:
    """Why b depends on a by `rel`, as Elle's explainers say it."""
    step: dict[str, Any] = {"type": RELS[rel], "from": a.id, "to": b.id}
    if rel == WR:
        appended = {(k, v) for f, k, v in a.mops if f == APPEND}
        for f, k, v in b.mops:
            if f == READ and v and (k, v[-1]) in appended:
                step.update(key=jsonable(k), value=jsonable(v[-1]))
                break
    elif rel in (WW, RW):
        step.update(_version_step(a, b, rel))
    elif rel == PROCESS:
        step["process"] = jsonable(a.process)
    return step


def _version_step(a: Op, b: Op, rel: int) -> dict[str, Any]:
    """The key on which b's append follows a's append (ww) or a's read (rw)."""
    a_keys: dict[Hashable, tuple[Any, tuple[Any, ...]]] = {}  # key -> (last element, the list read)
    for f, k, v in a.mops:
        if rel == WW and f == APPEND:
            a_keys[k] = (v, ())
        elif rel == RW and f == READ and v is not None:
            a_keys.setdefault(k, (v[-1] if v else None, v))
    for f, k, v in b.mops:
        if f == APPEND and k in a_keys and v not in a_keys[k][1]:  # a read of k that missed b's append
            return {"key": jsonable(k), "value": jsonable(a_keys[k][0]), "value'": jsonable(v)}
    return {}


def cycle_text(case: dict[str, Any]) -> str:
    """A cycle case in one line, "a -wr-> b -rw-> a"; empty for a case that is no cycle."""
    steps = case.get("steps")
    if not steps:
        return ""
    return " ".join(f"{s['from']} -{s['type']}->" for s in steps) + f" {steps[0]['from']}"


def validity(valid: bool | str) -> str:
    return "valid" if valid is True else "INVALID" if valid is False else "unknown"
