"""A latency distribution as counts per fixed bucket: merged across processes, its percentiles
are those of all the values together, never an average of percentiles."""

from __future__ import annotations

import math

from harness.report_shape import Distribution

__all__ = ["Histogram"]


class Histogram:
    """Counts per bucket of microseconds: exact below 1 ms, three significant digits above
    (at most 0.5 % off), the same buckets in every process."""

    __slots__ = ("counts",)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = counts if counts is not None else {}

    @staticmethod
    def bucket(microseconds: int) -> int:
        if microseconds < 1000:
            return microseconds
        scale: int = 10 ** (len(str(microseconds)) - 3)  # never negative: an int
        return round(microseconds / scale) * scale

    def record(self, seconds: float) -> None:
        key = self.bucket(max(0, round(seconds * 1_000_000)))
        self.counts[key] = self.counts.get(key, 0) + 1

    def merge(self, other: Histogram) -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def percentile_ms(self, percent: float) -> float | None:
        """Nearest-rank percentile in milliseconds; None when nothing was recorded."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(percent / 100.0 * total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                return key / 1000.0
        raise AssertionError("unreachable: rank is at most the total")

    def summary_ms(self) -> Distribution:
        return {
            "p50": self.percentile_ms(50),
            "p95": self.percentile_ms(95),
            "p99": self.percentile_ms(99),
            "max": self.percentile_ms(100),
            "count": self.count,
        }

    def to_dict(self) -> dict[str, int]:
        # String keys: the form survives JSON as well as Locust's msgpack messages.
        return {str(k): v for k, v in self.counts.items()}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Histogram:
        return cls({int(k): v for k, v in data.items()})
