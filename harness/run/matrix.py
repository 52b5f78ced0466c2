"""--isolation-matrix: the same run once per isolation level, and the table to choose a level by.

Each level is a whole `locust` run of its own (the same options, `--isolation` set), so every
row has its own servers' counters, audits and verdict. Every level runs with the same seed, so
its agents make the same calls; with --history PATH, each level writes PATH.<level>.

The matrix fails (exit 1) when the strongest level it ran fails, or a level named in
--require-levels does: the weaker levels of the default `isolation` scenario fail by design
(they allow the anomalies it provokes), and that is what the table shows, not a failure.
"""

from __future__ import annotations

import os
import sys

from db.pool import ISOLATION_LEVELS
from harness.output.summary import write_json
from harness.report_shape import MatrixRow, Report
from harness.run.child_runs import child_arguments, run_child

__all__ = ["MATRIX_LEVEL_VARIABLE", "format_matrix", "levels_failing", "run_matrix"]

# Set in the environment of each level's run, so that it runs that level only, whatever the
# config file or the parent's variables say about --isolation-matrix.
MATRIX_LEVEL_VARIABLE = "TOOLCLASH_MATRIX_LEVEL"

# Options the matrix sets itself in each level's run; the user's values for them are dropped.
_OWN_OPTIONS = {"--isolation": True, "--report-json": True, "--isolation-matrix": False, "--history": True,
                "--seed": True, "--require-levels": True}


def _level_arguments(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line of each level's run, and the variables to set in its environment."""
    kept, variables = child_arguments(argv, _OWN_OPTIONS)
    if not any(a.split("=", 1)[0] == "--scenario" for a in kept) and "TOOLCLASH_SCENARIO" not in os.environ:
        kept += ["--scenario", "isolation"]
    return kept, variables


def run_matrix(argv: list[str], report_json: str | None, history: str | None, seed: int,
               required: tuple[str, ...] = ()) -> int:
    """Run every level; print the table; 1 when the strongest level or one of `required` failed
    (levels_failing), else 0; 2 when a level's run could not produce a verdict."""
    rows: list[MatrixRow] = []
    arguments, variables = _level_arguments(argv)
    for position, level in enumerate(ISOLATION_LEVELS):
        print(f"toolclash: isolation matrix: running at {level} …", flush=True)
        # The schema then holds the previous level's data, which the matrix made and may have
        # failed its audit on purpose; each level starts from fresh data.
        fresh = ["--reset"] if position and "--reset" not in arguments else []
        # An empty --require-levels: a level's run, which is no matrix, requires no level, whatever
        # its config file or environment says (it would be refused: --require-levels needs the matrix).
        own = ["--isolation", level, "--seed", str(seed), "--require-levels="]
        if history:
            own += ["--history", f"{history}.{level}"]
        done = run_child([*arguments, *fresh, *own], {**variables, MATRIX_LEVEL_VARIABLE: level})
        if done.report is None:
            print(f"toolclash: error: the {level} run gave no verdict: {done.reason}", file=sys.stderr, flush=True)
            return 2
        rows.append({"level": level, "report": done.report})
    must_pass, failing = levels_failing(rows, required)
    print(format_matrix(rows), flush=True)
    print(f"toolclash: isolation matrix: {'FAIL' if failing else 'PASS'}: must pass {', '.join(must_pass)};"
          f" failed: {', '.join(failing) or 'none'}", flush=True)
    if report_json:
        write_json({"matrix": rows, "must_pass": must_pass, "failed": failing, "exit_code": 1 if failing else 0},
                   report_json)
    return 1 if failing else 0


def levels_failing(rows: list[MatrixRow], required: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the levels that must pass: the strongest one run, then `required`; those of them that
    failed). `rows` go from the weakest level to the strongest."""
    verdicts = {row["level"]: row["report"]["verdict"] for row in rows}
    must_pass = list(dict.fromkeys([rows[-1]["level"], *required]))
    return must_pass, [level for level in must_pass if verdicts[level] != "pass"]


def _row_figures(report: Report) -> tuple[int, int, int, int, str]:
    calls = sum(tool["calls"] for tool in report["tools"].values())
    return (
        calls,
        report["conflicts"]["serialization_failures"],
        report["anomalies"]["lost_updates"],
        report["anomalies"]["write_skew"],
        report["verdict"].upper(),
    )


def _history_cells(rows: list[MatrixRow]) -> tuple[list[str], list[list[str]]]:
    """A column per anomaly type the list_append history showed at some level (Elle's names):
    its count at each level, starred where the model the level promises forbids it."""
    answers = [row["report"].get("history_check") for row in rows]
    kinds = sorted({kind for answer in answers if answer for kind in answer["anomaly_types"]})
    cells = [[("-" if answer is None else str(answer["anomaly_counts"].get(kind, 0))
               + ("*" if answer is not None and kind in answer["forbidden_anomaly_types"] else ""))
              for kind in kinds] for answer in answers]
    return kinds, cells


def format_matrix(rows: list[MatrixRow]) -> str:
    kinds, cells = _history_cells(rows)
    widths = [max(len(kind), 6) + 2 for kind in kinds]
    lines = [
        "",
        f"{'isolation level':<18}{'calls':>9}{'serialization failures':>24}{'lost updates':>14}{'write skew':>12}"
        + "".join(f"{kind:>{width}}" for kind, width in zip(kinds, widths)) + "  verdict",
    ]
    for row, history in zip(rows, cells):
        calls, failures, lost, skew, verdict = _row_figures(row["report"])
        lines.append(f"{row['level']:<18}{calls:>9}{failures:>24}{lost:>14}{skew:>12}"
                     + "".join(f"{cell:>{width}}" for cell, width in zip(history, widths)) + f"  {verdict}")
    if kinds:
        lines.append("(the list_append history's anomalies by Elle's names; * forbidden by the model the level"
                     " promises)")
    return "\n".join(lines)
