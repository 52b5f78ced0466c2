"""The section's block for the list_append scenario's history, checked as Elle checks it (the
report's `history_check`): each anomaly type found, by Elle's name, how many, whether the model
the run's level promises forbids it, and one case: a cycle's transactions with their
micro-operations and why each depends on the one before. Only in a run with list_append."""

from __future__ import annotations

from html import escape
from typing import Any

from harness.output.html.markup import _block, _cell, _mark, _note, _row, _table
from history_check.check import validity

__all__ = ["_history"]


def _history(report: dict[str, Any]) -> str:
    answer = report.get("history_check")
    if answer is None:
        return ""
    rows = [_row(_cell(escape(kind)), _cell(str(answer["anomaly_counts"][kind]), True),
                 _cell(_mark(kind not in answer["forbidden_anomaly_types"], "allowed", "forbidden")),
                 _cell(_case((answer["anomalies"].get(kind) or [{}])[0])))
            for kind in answer["anomaly_types"]]
    if not rows:
        rows = [_row(_cell(_note("none found"), span=4))]
    stats = answer["stats"]
    valid = _mark(answer["valid"] is True, "valid", validity(answer["valid"]))
    counted = _note(f"({stats['transactions']} transactions, {stats['sccs']} cyclic components)")
    head = (f"<p data-history-verdict='{escape(str(answer['valid']).lower())}'>Against"
            f" <b>{escape(answer['consistency_model'])}</b>: {valid} {counted}</p>")
    ruled_out = (f"<p class='tc-note'>Ruled out: {escape(', '.join(answer['not']))}"
                 + (f" (and {escape(', '.join(answer['also_not']))})" if answer["also_not"] else "") + "</p>"
                 if answer["not"] else "")
    note = ("<p class='tc-note'>Elle's names for what the history of list appends and reads shows"
            " (docs/history-check.md); a forbidden one fails the audit, an allowed one is the level's to allow."
            " Transactions are named by their call's op id and attempt.</p>")
    return _block("History (list_append)", head + _table("history", ["Anomaly", "Count", "Model", "Example"], rows)
                  + ruled_out + note, "history")


def _case(case: dict[str, Any]) -> str:
    """A cycle as its steps (a -rel-> b, on key k), its transactions' micro-operations; a direct
    anomaly as its op's micro-operation."""
    if "steps" in case:
        steps = "<br>".join(escape(f"{s['from']} -{s['type']}-> {s['to']}" + (f" on {s['key']}" if "key" in s
                                                                                else "")) for s in case["steps"])
        ops = "<br>".join(escape(f"{op['id']}: {op['value']}") for op in case["cycle"])
        return f"{steps}<br>{_note(ops)}"
    if "txns" in case:  # a lost update: transactions that read one state of a key, then each appended to it
        return escape(f"{', '.join(t['id'] for t in case['txns'])} read {case['key']} at {len(case['value'])}"
                      " elements, then each appended")
    if "op" in case:
        return escape(f"{case['op']['id']}: {case.get('mop', case['op']['value'])}")
    return escape(str(case))[:300]
