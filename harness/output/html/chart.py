"""A line chart as inline SVG, styled by the section's CSS (Locust's look, light or dark): a title,
a legend, y ticks of 1, 2 or 5 times a power of ten, the time along x (in minutes for a long run),
a point per sample with its value as a tooltip, dashed lines where faults were injected. A long
series is thinned to at most _MOST_POINTS points, each keeping its bucket's peak."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from harness.output.html.figures import _number, _seconds

__all__ = ["_COLORS", "_MOST_POINTS", "_chart", "_step", "_thin", "_tick"]

_W, _H = 560, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 20, 62, 30
_MOST_POINTS = 400  # drawn per series; more samples are thinned, keeping each bucket's peak
# Locust's own chart colors.
_COLORS = ("#0099ff", "#ff9f00", "#9966CC", "#ff6d6d", "#00ca5a", "#8E4585", "#8A2BE2", "#E0B0FF")


def _step(span: float, whole: bool, most: int = 4) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving at most `most` steps over `span`
    (at least 1 for whole numbers, 0.001 for others)."""
    if span <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(span / most))
    for factor in (1, 2, 5, 10):
        step = factor * power
        if span / step <= most:
            break
    # The sampled figures are rounded to the thousandth (seconds to the millisecond): a finer
    # step would only label ticks with four decimals between values that cannot differ.
    return max(step, 1.0) if whole else max(step, 0.001)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= _MOST_POINTS:
        return points
    size = math.ceil(len(points) / _MOST_POINTS)
    return [max(points[i:i + size], key=lambda p: p[1]) for i in range(0, len(points), size)]


def _at(x: float, x_unit: str, seconds: str) -> str:
    """Where on x, for a tooltip: `seconds` as the time reads, or in x's own unit."""
    return seconds if x_unit == "s" else f"{x:g} {x_unit}"


def _chart(name: str, title: str, series: list[tuple[str, list[tuple[float, float]]]], x_end: float,
           faults: list[dict[str, Any]], unit: str = "", color: str = _COLORS[0], x_unit: str = "s") -> str:
    """`x_unit`: what x counts, seconds (a long run's in minutes; each tick says which) or e.g.
    agents (the title says it; the ticks are numbers); `faults`, the dashed lines across (`kind`
    at `at_s`, in x's unit)."""
    samples = sum(len(points) for _, points in series)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    parts = [f"<text class='tc-title' x='12' y='26'>{escape(title)}</text>"]
    if not samples:
        parts.append(f"<text class='tc-empty' x='{_W / 2}' y='{_H / 2}' text-anchor='middle'>"
                     "no sample was taken</text>")
        return (f"<figure data-chart='{name}' data-points='0'><svg viewBox='0 0 {_W} {_H}' role='img'"
                f" aria-label='{escape(title)}'>{''.join(parts)}</svg></figure>")
    x_end = max(x_end, max(x for _, points in series for x, _ in points), 1e-9)
    values = [y for _, points in series for _, y in points]
    y_step = _step(max(values), all(y == int(y) for y in values))
    y_top = max(1, math.ceil(max(values) / y_step)) * y_step

    def px(x: float) -> float:
        return round(_LEFT + x / x_end * plot_w, 1)

    def py(y: float) -> float:
        return round(_TOP + plot_h - y / y_top * plot_h, 1)

    for i in range(round(y_top / y_step) + 1):
        value = i * y_step
        parts.append(f"<line class='tc-split' x1='{_LEFT}' x2='{_W - _RIGHT}' y1='{py(value)}' y2='{py(value)}'/>")
        parts.append(f"<text x='{_LEFT - 8}' y='{py(value) + 4}' text-anchor='end'>{_tick(value)}</text>")
    parts.append(f"<line class='tc-axis' x1='{_LEFT}' x2='{_W - _RIGHT}' y1='{py(0)}' y2='{py(0)}'/>")
    scale, unit_x = (60, "min") if x_end >= 600 and x_unit == "s" else (1, x_unit)  # a long run in minutes
    x_step = _step(x_end / scale, x_unit != "s", 8) * scale
    for i in range(math.floor(x_end / x_step + 1e-9) + 1):
        tick = i * x_step
        parts.append(f"<line class='tc-axis' x1='{px(tick)}' x2='{px(tick)}' y1='{py(0)}' y2='{py(0) + 4}'/>")
        parts.append(f"<text x='{px(tick)}' y='{py(0) + 18}' text-anchor='middle'>"
                     f"{_tick(tick / scale)}{' ' + unit_x if x_unit == 's' else ''}</text>")
    for fault in faults:
        if fault.get("at_s") is not None and fault["at_s"] <= x_end:
            x, at = px(fault["at_s"]), _at(fault["at_s"], x_unit, _seconds(fault["at_s"]))
            parts.append(f"<line class='tc-fault' x1='{x}' x2='{x}' y1='{_TOP}' y2='{py(0)}'>"
                         f"<title>{escape(fault['kind'])} at {at}</title></line>")
    legend_x = 12.0
    drawn = 0
    first = _COLORS.index(color) if color in _COLORS else 0
    for index, (label, points) in enumerate(series):
        color = _COLORS[(first + index) % len(_COLORS)]
        shown = _thin(sorted(points))
        drawn += len(shown)
        coordinates = " ".join(f"{px(x)},{py(y)}" for x, y in shown)
        parts.append(f"<polyline data-series='{escape(label)}' points='{coordinates}' fill='none' stroke='{color}'"
                     " stroke-width='2' stroke-linejoin='round'/>")
        for x, y in shown:
            at = _at(x, x_unit, f"{x:.1f} s")
            parts.append(f"<circle class='tc-point' cx='{px(x)}' cy='{py(y)}' r='2' fill='{color}'>"
                         f"<title>{escape(label)} at {at}: {_number(y)}{unit}</title></circle>")
        parts.append(f"<circle cx='{legend_x + 6}' cy='44' r='6' fill='{color}'/>"
                     f"<text class='tc-legend' x='{legend_x + 16}' y='48'>{escape(label)}</text>")
        legend_x += 28 + 7 * len(label)
    return (f"<figure data-chart='{name}' data-points='{samples}' data-drawn='{drawn}'>"
            f"<svg viewBox='0 0 {_W} {_H}' role='img' aria-label='{escape(title)}'>{''.join(parts)}</svg></figure>")
