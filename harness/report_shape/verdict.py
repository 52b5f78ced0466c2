"""The judging: the audits' checks, the evidence a PASS needs, the verdict."""

from typing import Any, Literal

from typing_extensions import TypedDict

__all__ = ["Audit", "CheckResult", "Evidence", "Finding", "HistoryCheck", "HistoryCheckStats", "Verdict"]


Verdict = Literal["pass", "fail"]


class CheckResult(TypedDict):
    """One audit check (db.audits.Check)."""

    name: str
    ok: bool
    expected: Any  # whatever the check compares: a number, a list of ids, a mapping
    observed: Any
    detail: str
    anomaly: str | None  # the anomaly it counts, e.g. "lost_updates"
    anomaly_count: int


class Audit(TypedDict):
    ok: bool
    checks: list[CheckResult]


class Finding(TypedDict):
    """An evidence problem or note."""

    kind: str
    detail: str


class Evidence(TypedDict):
    ok: bool
    problems: list[Finding]
    notes: list[Finding]


class HistoryCheckStats(TypedDict):
    transactions: int  # every attempt of every call, and the audit's last read of every list
    sccs: int  # strongly connected components of more than one transaction
    cycle_search_timeouts: int  # components whose cycle search ran out of its budget


# The list_append scenario's history, checked as Elle checks it (history_check.Answer.as_dict):
# Elle's names, apart from the report's `anomalies` counters. "not" is a keyword: functional form.
HistoryCheck = TypedDict("HistoryCheck", {
    "valid": "bool | str",  # true, false, or "unknown" (a cycle search ran out of its budget)
    "consistency_model": str,  # the model judged by: the one the level promises, or --consistency-model
    "anomaly_types": list[str],  # every type found, allowed or not
    "forbidden_anomaly_types": list[str],  # those the model forbids: each fails the audit
    "anomaly_counts": dict[str, int],
    "anomalies": dict[str, list[dict[str, Any]]],  # a few cases per type: a cycle's ops and steps, or the op
    "not": list[str],  # the weakest models the anomalies rule out
    "also_not": list[str],  # the stronger ones they rule out too
    "stats": HistoryCheckStats,
})
