"""The judging: the audits' checks, the evidence a PASS needs, the verdict."""

from typing import Any, Literal

from typing_extensions import TypedDict

__all__ = ["Audit", "CheckResult", "Evidence", "Finding", "Verdict"]


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
