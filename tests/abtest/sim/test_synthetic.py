"""The offline validation helpers on a small scale (the benchmark runs the full 1,000 experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from abtest.sim.synthetic import (
    SyntheticUsers,
    aa_false_positive_rate,
    interval_coverage,
    peeking_false_positive_rate,
    simulate_arm_sums,
)


def test_simulated_truth():
    rng = np.random.default_rng(0)
    population = SyntheticUsers()
    s = simulate_arm_sums(rng, (2,), 200_000, np.array([0.0, 0.1]), population)
    ratio = s["m"] / s["d"]
    assert ratio[0] == pytest.approx(population.click_rate, rel=0.02)
    assert ratio[1] / ratio[0] - 1 == pytest.approx(0.1, abs=0.02)
    assert s["d"][0] / s["n"][0] == pytest.approx(population.mean_exposures, rel=0.01)


def test_aa_false_positive_rate_near_alpha():
    rates = aa_false_positive_rate(400, 500, seed=3)
    assert set(rates) == {"clicks_per_exposure", "clicks_per_user", "engaged_users", "relative_interval_excludes_zero",
                          "relative_symmetric_delta_excludes_zero"}  # fmt: skip
    for estimate in rates.values():
        # 400 experiments: standard error ~1.1 points around 5%.
        assert 0.015 <= estimate.rate <= 0.09
        assert estimate.standard_error == pytest.approx(np.sqrt(estimate.rate * (1 - estimate.rate) / 400))


def test_interval_coverage_near_nominal():
    coverage = interval_coverage(400, 800, relative_lift=0.1, seed=4)
    assert coverage["absolute"].rate >= 0.91 and coverage["relative"].rate >= 0.91


def test_peeking_sequential_valid_naive_not():
    rates = peeking_false_positive_rate(300, days=10, users_per_arm_per_day=100, seed=5)
    assert rates["sequential"].rate <= 0.06
    assert rates["naive_peeking"].rate > 2 * rates["sequential"].rate
    assert rates["naive_peeking"].rate > 0.1


def test_seeded():
    assert aa_false_positive_rate(50, 100, seed=9) == aa_false_positive_rate(50, 100, seed=9)


def test_heavy_tailed_population_and_the_fieller_interval():
    """Issue 11 item 12 on the validation helpers: exposures ceil(LogNormal(1, 2)) and Beta(0.2, 3.8) clicks;
    Fieller's relative interval holds its level where the symmetric delta-method one under-covers."""
    population = SyntheticUsers.heavy_tailed()
    d = population.exposures(np.random.default_rng(0), (200_000,))
    assert d.min() >= 1 and np.all(d == np.round(d)) and np.median(d) == 3 and d.mean() > 15
    coverage = interval_coverage(600, 1000, relative_lift=0.05, seed=4, population=population)
    assert coverage["relative"].rate >= 0.925 > coverage["relative_symmetric_delta"].rate
    rates = aa_false_positive_rate(600, 1000, seed=5, population=population)
    assert rates["relative_interval_excludes_zero"].rate <= rates["clicks_per_exposure"].rate
    assert rates["relative_symmetric_delta_excludes_zero"].rate > rates["clicks_per_exposure"].rate
