"""A --capacity search as an HTML page of its own (`--html PATH`): the answer and how sure it is,
calls/s and p95 against agents (each probe a point, the Universal Scalability Law's curve beside
them, the capacity as a dashed line), and the table of probes. In the section's style (light; no
Locust page to follow), nothing fetched."""

from __future__ import annotations

from html import escape
from pathlib import Path

from harness.capacity.answer import kept_data_line, model_line
from harness.capacity.usl import UslFit
from harness.output.html.chart import _chart
from harness.output.html.figures import _number, _percent
from harness.output.html.markup import _block, _cell, _mark, _row, _table
from harness.output.html.section import _wrap
from harness.report_shape import Capacity, CapacityProbe

__all__ = ["capacity_page", "write_capacity_page"]

# The fitted curve drawn at this many agent counts across the probes' range.
_CURVE_POINTS = 60


def _curve(capacity: Capacity, most: int) -> list[tuple[float, float]]:
    model = capacity["model"]
    if model is None:
        return []
    fit = UslFit(model["lam"], model["sigma"], model["kappa"], model["r_squared"])
    return [(n, round(fit.throughput(n), 2)) for n in
            sorted({1 + (most - 1) * i / (_CURVE_POINTS - 1) for i in range(_CURVE_POINTS)})]


def _charts(capacity: Capacity) -> str:
    probes = sorted(capacity["probes"], key=lambda p: p["agents"])
    most = max((p["agents"] for p in probes), default=1)
    boundary = [{"kind": "capacity", "at_s": capacity["capacity"]}] if capacity["capacity"] else []
    throughput = [("probes", [(p["agents"], p["throughput_per_s"]) for p in probes])]
    if capacity["model"] is not None:
        throughput.append(("USL fit", _curve(capacity, most)))
    latency = [("p95", [(p["agents"], p["p95_ms"]) for p in probes if p["p95_ms"] is not None]),
               ("pool wait p95", [(p["agents"], p["pool_wait_p95_ms"]) for p in probes
                                  if p["pool_wait_p95_ms"] is not None])]
    return ("<div class='tc-pair'>"
            + _chart("capacity_throughput", "Calls/s against agents", throughput, most, boundary, " calls/s",
                     x_unit="agents")
            + _chart("capacity_p95", "p95 against agents (ms)", [s for s in latency if s[1]] or latency[:1], most,
                     boundary, " ms", x_unit="agents")
            + "</div>")


def _audit(probe: CapacityProbe) -> str:
    """Whether its audit held; on kept data, by the checks scoped to its own calls alone."""
    return _mark(probe["audit_ok"]) + (escape(" (kept data: its calls' identities)") if probe["data"] == "kept" else "")


def _table_of_probes(capacity: Capacity) -> str:
    rows = [_row(_cell(str(number), True), _cell(_number(p["agents"]), True), _cell(_mark(p["passed"], "PASS")),
                 _cell(escape(p["stopped"])), _cell(_number(p["duration_s"]), True), _cell(_number(p["calls"]), True),
                 _cell(_number(p["warmup_calls"]), True), _cell(_number(p["throughput_per_s"]), True),
                 _cell(_number(p["p95_ms"]), True), _cell(_number(p["pool_wait_p95_ms"]), True),
                 _cell(_percent(p["conflict_rate"]), True), _cell(_audit(p)),
                 _cell(escape(f"{p['limiting'] or '-'}: {p['detail']}")))
            for number, p in enumerate(capacity["probes"], start=1)]
    return _table("capacity_probes", ["probe", "agents", "verdict", "stopped", "measured s", "calls", "warm-up calls",
                                      "calls/s", "p95 ms", "pool wait p95 ms", "conflicts", "audit", "limiting"], rows)


def capacity_page(capacity: Capacity, exit_code: int | None) -> str:
    """The page; `exit_code` None: the search is under way."""
    verdict = "none" if exit_code is None else "pass" if exit_code == 0 else "fail"
    ended = "under way" if exit_code is None else f"exit code {exit_code}"
    answer = (f"<div class='tc-paper tc-verdict' data-part='verdict' data-verdict='{verdict}'>"
              f"<h2>toolclash capacity: {capacity['capacity']} agents</h2><p>{escape(capacity['answer'])}</p>"
              f"<p class='tc-note'>{escape(model_line(capacity))}</p>"
              + (f"<p class='tc-note'>{escape(kept)}</p>" if (kept := kept_data_line(capacity)) else "")
              + f"<p class='tc-note'>{escape(capacity['data'])}; {len(capacity['probes'])} probes in"
              f" {capacity['elapsed_s']:g} s of a {capacity['budget_s']:g} s budget ({ended})</p></div>")
    body = answer + _block("Against agents", _charts(capacity), "capacity_charts") + _block(
        "Probes", _table_of_probes(capacity), "capacity_probes")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>toolclash capacity:"
            f" {capacity['capacity']} agents</title></head><body>{_wrap(body)}</body></html>\n")


def write_capacity_page(capacity: Capacity, exit_code: int, path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(capacity_page(capacity, exit_code), encoding="utf-8")
