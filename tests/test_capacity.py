"""--capacity's pure parts: the Universal Scalability Law fit (harness.capacity.usl) and the
search's plan (harness.capacity.search), driven by the outcomes a probe could have, without
servers. The search against real servers: tests/test_capacity_run.py."""

from __future__ import annotations

import random

import pytest

from harness.capacity.usl import UslFit, fit_usl

AGENT_COUNTS = (1, 2, 4, 8, 16, 24, 32, 48, 64)


@pytest.mark.parametrize(("sigma", "kappa"), [(0.05, 0.002), (0.2, 0.0005), (0.01, 0.0)])
def test_the_usl_fit_recovers_sigma_and_kappa_from_points_on_a_known_curve_with_noise(sigma, kappa):
    truth = UslFit(lam=120.0, sigma=sigma, kappa=kappa, r_squared=1.0)
    noise = random.Random(20)
    points = [(n, truth.throughput(n) * (1 + noise.uniform(-0.02, 0.02))) for n in AGENT_COUNTS for _ in range(2)]
    fit = fit_usl(points)
    assert fit is not None
    assert fit.sigma == pytest.approx(sigma, abs=0.01 + 0.1 * sigma)
    assert fit.kappa == pytest.approx(kappa, abs=0.0002 + 0.1 * kappa)
    assert fit.r_squared > 0.98
    if kappa:
        assert fit.peak_agents == pytest.approx(truth.peak_agents, rel=0.1)
    else:
        assert fit.peak_agents is None  # it only flattens


def test_the_usl_fit_is_exact_on_exact_points_and_needs_five_agent_counts():
    truth = UslFit(lam=40.0, sigma=0.1, kappa=0.003, r_squared=1.0)
    fit = fit_usl([(n, truth.throughput(n)) for n in AGENT_COUNTS])
    assert fit is not None
    assert (fit.lam, fit.sigma, fit.kappa) == pytest.approx((40.0, 0.1, 0.003), rel=1e-6)
    four = [(n, truth.throughput(n)) for n in (1, 2, 4, 8) for _ in range(3)]
    assert fit_usl(four) is None
    assert fit_usl([*four, (16, 0.0)]) is None  # a throughput of nothing fits no curve
