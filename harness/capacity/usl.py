"""The Universal Scalability Law fitted to a capacity search's probes (Gunther):

    X(N) = λ N / (1 + σ (N − 1) + κ N (N − 1))

X the throughput at N agents, λ one agent's throughput alone, σ the contention (the share of the
work that queues: a lock, a pool), κ the coherency (what each agent costs every other one: a hot
row handed around, retries). With κ > 0 the curve peaks at N* = sqrt((1 − σ) / κ) and falls
after it (retrograde scaling).

In pure Python (a handful of points, and numpy is no dependency of toolclash): for a fixed λ, σ and
κ are linear (N λ / X − 1 = σ (N − 1) + κ N (N − 1)), solved by least squares with both kept ≥ 0;
λ itself is searched (golden section over a bracket around the best throughput per agent) for
the least squared error on the throughput itself, not on its linearised form, which would weigh
the few-agent points most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MIN_DISTINCT_AGENTS", "UslFit", "fit_usl"]

# The bar: a curve of three parameters needs points enough beyond them to say anything.
MIN_DISTINCT_AGENTS = 5
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class UslFit:
    lam: float  # throughput of one agent alone, calls/s
    sigma: float  # contention
    kappa: float  # coherency
    r_squared: float  # of the throughput itself

    def throughput(self, agents: float) -> float:
        return self.lam * agents / (1 + self.sigma * (agents - 1) + self.kappa * agents * (agents - 1))

    @property
    def peak_agents(self) -> float | None:
        """N*, where the throughput is highest; None when κ is 0 (it only flattens) or σ ≥ 1."""
        if self.kappa <= 0 or self.sigma >= 1:
            return None
        return math.sqrt((1 - self.sigma) / self.kappa)


def _coefficients(points: list[tuple[float, float]], lam: float) -> tuple[float, float]:
    """σ, κ ≥ 0 by least squares on y = N λ / X − 1 = σ a + κ b, a = N − 1, b = N (N − 1)."""
    rows = [(n - 1, n * (n - 1), n * lam / x - 1) for n, x in points]
    saa = sum(a * a for a, _, _ in rows)
    sbb = sum(b * b for _, b, _ in rows)
    sab = sum(a * b for a, b, _ in rows)
    say = sum(a * y for a, _, y in rows)
    sby = sum(b * y for _, b, y in rows)
    det = saa * sbb - sab * sab
    if det > 0:
        sigma, kappa = (say * sbb - sby * sab) / det, (saa * sby - sab * say) / det
        if sigma >= 0 and kappa >= 0:
            return sigma, kappa
    # The unconstrained optimum has a negative coefficient: the best with one of them at 0.
    only_sigma = (max(0.0, say / saa) if saa else 0.0, 0.0)
    only_kappa = (0.0, max(0.0, sby / sbb) if sbb else 0.0)
    return min(only_sigma, only_kappa, key=lambda c: sum((c[0] * a + c[1] * b - y) ** 2 for a, b, y in rows))


def _error(points: list[tuple[float, float]], lam: float) -> float:
    fit = UslFit(lam, *_coefficients(points, lam), r_squared=0.0)
    return sum((fit.throughput(n) - x) ** 2 for n, x in points)


def fit_usl(points: list[tuple[float, float]]) -> UslFit | None:
    """The fit to (agents, throughput per second) points, or None with fewer than
    MIN_DISTINCT_AGENTS distinct agent counts (or a throughput that is not positive)."""
    if len({n for n, _ in points}) < MIN_DISTINCT_AGENTS or any(n < 1 or x <= 0 for n, x in points):
        return None
    per_agent = max(x / n for n, x in points)
    # λ is at least the best throughput per agent seen (σ, κ ≥ 0 never raise it) and, for any
    # plausible curve, within a few times of it.
    low, high = per_agent, per_agent * 8
    a, b = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    error_a, error_b = _error(points, a), _error(points, b)
    for _ in range(100):
        if error_a <= error_b:
            high, b, error_b = b, a, error_a
            a = high - _GOLDEN * (high - low)
            error_a = _error(points, a)
        else:
            low, a, error_a = a, b, error_b
            b = low + _GOLDEN * (high - low)
            error_b = _error(points, b)
    lam = (low + high) / 2
    sigma, kappa = _coefficients(points, lam)
    fit = UslFit(lam, sigma, kappa, r_squared=0.0)
    mean = sum(x for _, x in points) / len(points)
    total = sum((x - mean) ** 2 for _, x in points)
    residual = sum((fit.throughput(n) - x) ** 2 for n, x in points)
    return UslFit(lam, sigma, kappa, r_squared=1 - residual / total if total else 1.0)
