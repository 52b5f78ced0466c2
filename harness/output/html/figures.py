"""How a figure reads in toolclash's section of Locust's HTML report: thousands separated, at most
two decimals, in its unit, and a dash where there is none (never `None`)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["DASH", "_by_kind", "_label", "_ms", "_number", "_percent", "_seconds"]

DASH = "\u2014"


def _number(value: Any) -> str:
    """A figure for a reader: thousands separated, at most two decimals, never `None`."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return DASH
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        size = abs(value)
        if size >= 100:
            return f"{value:,.0f}"
        if size >= 10:
            return f"{value:.1f}"
        if size >= 0.01:
            return f"{value:.2f}"
        return "&lt;0.01" if value > 0 else "&gt;-0.01"
    return escape(str(value))


def _ms(value: Any) -> str:
    return DASH if value is None else f"{_number(value)} ms"


def _percent(value: float | None) -> str:
    if value is None:
        return DASH
    percent = value * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%" if percent == int(percent) else f"{percent:.1f}%"
    if percent >= 0.1:
        return f"{percent:.1f}%"
    return "&lt;0.1%"


def _seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 120:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds} s"
    return f"{value:.1f} s"


def _by_kind(kind: str, value: float | None) -> str:
    """An SLA figure in its metric's unit."""
    if value is None:
        return DASH
    if kind == "ms":
        return _ms(value)
    if kind == "rate":
        return _percent(value)
    if kind == "per_minute":
        return f"{_number(value)} / min"
    return _number(value)


def _label(key: str) -> str:
    return escape(key.replace("_", " "))
