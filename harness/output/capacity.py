"""A --capacity search on the console: a line as each probe ends, the table of every probe, the
model of the curve and the answer."""

from __future__ import annotations

from harness.capacity.answer import exit_code_of, kept_data_line, model_line
from harness.report_shape import Capacity, CapacityProbe

__all__ = ["format_capacity", "probe_line"]


def _figure(value: float | None, pattern: str = "{:.0f}") -> str:
    return "-" if value is None else pattern.format(value)


def _probes(n: int) -> str:
    return f"{n} probe{'s' if n != 1 else ''}"


def probe_line(number: int, probe: CapacityProbe) -> str:
    verdict = "PASS" if probe["passed"] else "FAIL"
    kept = (f"; on kept data: judged by its calls' identities {', '.join(probe['scoped_checks']) or 'none'},"
            f" not judged {', '.join(probe['not_judged']) or 'none'}" if probe["data"] == "kept" else "")
    return (f"toolclash: capacity: probe {number} at {probe['agents']} agents: {verdict},"
            f" {probe['throughput_per_s']:g} calls/s, p95 {_figure(probe['p95_ms'])} ms"
            f" ({probe['limiting'] or 'no rule'}: {probe['detail']}){kept}")


def format_capacity(capacity: Capacity) -> str:
    lines = [
        "",
        f"{'probe':>5} {'agents':>6}  verdict {'stopped':<11} {'s':>5} {'calls':>7} {'warm-up':>7} {'calls/s':>8}"
        f" {'p95 ms':>7} {'pool wait p95':>13} {'conflicts':>9}  limiting",
    ]
    for number, probe in enumerate(capacity["probes"], start=1):
        rate = probe["conflict_rate"]
        conflicts = _figure(None if rate is None else rate * 100, "{:.1f}%")
        lines.append(
            f"{number:>5} {probe['agents']:>6}  {'PASS' if probe['passed'] else 'FAIL':<7} {probe['stopped']:<11}"
            f" {probe['duration_s']:>5.1f} {probe['calls']:>7} {probe['warmup_calls']:>7}"
            f" {probe['throughput_per_s']:>8.1f} {_figure(probe['p95_ms']):>7} {_figure(probe['pool_wait_p95_ms']):>13}"
            f" {conflicts:>9}  {probe['limiting'] or '-'}: {probe['detail']}")
    expected = capacity["expected"]
    against = "" if expected is None else (
        f"; expected at least {expected}: {'PASS' if exit_code_of(capacity) == 0 else 'FAIL'}")
    lines += [
        "",
        f"toolclash capacity: data: {capacity['data']}",
        *([f"toolclash capacity: {kept}"] if (kept := kept_data_line(capacity)) else []),
        f"toolclash capacity: {model_line(capacity)}",
        f"toolclash capacity: {capacity['answer']} [{_probes(len(capacity['probes']))} in {capacity['elapsed_s']:g} s"
        f" of a {capacity['budget_s']:g} s budget, precision {capacity['precision_asked']}]"
        + against,
    ]
    return "\n".join(lines)
