"""mSPRT: the closed form against numerical integration, boundary equivalence, validity under peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from abtest.stats.sequential import (
    SequentialConfig,
    always_valid_p_values,
    boundary_curve,
    mixing_rho_squared,
    mixture_likelihood_ratio,
    sequential_test,
    z_boundary,
)
from abtest.stats.significance import welch_t_test
from abtest.stats.sufficient_statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)


@pytest.mark.parametrize(("z", "n", "variance"), [(0.5, 1000, 0.01), (2.2, 5000, 0.3), (-3.1, 20_000, 2.0), (1.0, 300, 1e-4)])
def test_mixture_ratio_matches_numerical_integral(z, n, variance):
    """Lambda = integral over theta ~ N(0, tau^2) of the likelihood ratio N(theta_hat; theta, V) / N(theta_hat; 0, V)."""
    alpha, tuning = 0.05, 5000
    tau2 = n * mixing_rho_squared(alpha, tuning) * variance
    theta_hat = z * math.sqrt(variance)
    sd = math.sqrt(variance)

    def integrand(theta):
        ratio = stats.norm.pdf(theta_hat, theta, sd) / stats.norm.pdf(theta_hat, 0.0, sd)
        return ratio * stats.norm.pdf(theta, 0.0, math.sqrt(tau2))

    width = 12 * math.sqrt(tau2)
    expected, _ = integrate.quad(integrand, -width, width, points=[0.0, theta_hat], limit=200)
    assert float(mixture_likelihood_ratio(z, n, alpha, tuning)) == pytest.approx(expected, rel=1e-6)


def test_boundary_is_where_lambda_reaches_one_over_alpha():
    n = np.array([100, 1000, 5000, 50_000])
    zb = z_boundary(n, 0.05, 5000)
    np.testing.assert_allclose(mixture_likelihood_ratio(zb, n, 0.05, 5000), 20.0, rtol=1e-9)
    assert np.all(zb > stats.norm.ppf(0.975))  # always wider than the fixed-horizon test


def test_boundary_curve_for_plots():
    curve = boundary_curve(np.arange(200, 40_001, 200), alpha=0.05, tuning_sample_size=5000)
    assert set(curve) == {"n_total", "z_boundary", "z_fixed_horizon", "width_inflation"}
    # Tightest near the tuning size, measured on the half-width per unit of standard deviation.
    half_width = curve["z_boundary"] / np.sqrt(curve["n_total"])
    assert np.all(np.diff(half_width) < 0)  # the interval keeps shrinking as users arrive
    assert np.all(curve["width_inflation"] > 1)


def test_always_valid_p_values_are_running_minimum():
    z = np.array([[0.5, 2.5, 1.0, 0.2], [0.1, 0.2, 0.3, 0.4]])
    n = np.array([500, 1000, 1500, 2000])
    p = always_valid_p_values(z, n)
    assert np.all(np.diff(p, axis=-1) <= 0)
    assert p[0, -1] == pytest.approx(min(1.0, 1.0 / float(mixture_likelihood_ratio(2.5, 1000))))
    assert np.all((p > 0) & (p <= 1))


def test_sequential_test_wider_than_fixed_horizon_and_consistent():
    rng = np.random.default_rng(3)
    c = SampleMeanStatistic.from_values(rng.normal(1.0, 1.0, 4000))
    t = SampleMeanStatistic.from_values(rng.normal(1.1, 1.0, 4000))
    fixed = welch_t_test(c, t)
    seq = sequential_test(c, t, SequentialConfig(alpha=0.05, tuning_sample_size=8000))
    assert seq.abs_lift == pytest.approx(fixed.abs_lift)
    assert seq.abs_ci[0] < fixed.abs_ci[0] and seq.abs_ci[1] > fixed.abs_ci[1]
    assert seq.significant == (seq.p_value <= 0.05)
    assert seq.significant and "safe to stop" in seq.summary()


@pytest.mark.parametrize(
    "pair",
    [
        (ProportionStatistic(3000, 300), ProportionStatistic(3000, 310)),
        (RatioStatistic(2000, 500.0, 1300.0, 10_000.0, 62_000.0, 3_100.0),) * 2,
        (RegressionAdjustedStatistic(3000, 6000.0, 21_000.0, 5_800.0, 19_000.0, 17_500.0),) * 2,
    ],
)
def test_sequential_test_accepts_every_statistic(pair):
    result = sequential_test(*pair)
    assert not result.significant and "keep running" in result.summary()


def test_validity_under_daily_peeking():
    """Small A/A check of the guarantee (the benchmark runs 1,000 experiments): the sequential test
    rejects at most about alpha, while stopping at the first fixed-horizon p < 0.05 rejects far more."""
    rng = np.random.default_rng(5)
    experiments, days, per_day = 400, 20, 100
    x = rng.normal(0, 1, size=(experiments, days, 2, per_day))
    sums = np.cumsum(x.sum(-1), axis=1)
    squares = np.cumsum((x**2).sum(-1), axis=1)
    n = per_day * np.arange(1, days + 1)[None, :, None]
    mean = sums / n
    var = (squares - sums**2 / n) / (n - 1)
    z = (mean[..., 1] - mean[..., 0]) / np.sqrt(var[..., 1] / n[..., 0] + var[..., 0] / n[..., 0])
    boundary = z_boundary(2 * n[..., 0], 0.05, 2 * days * per_day)
    sequential = np.mean(np.any(np.abs(z) >= boundary, axis=1))
    naive = np.mean(np.any(np.abs(z) >= 1.96, axis=1))
    assert sequential <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / experiments)
    assert naive > 0.12


def test_config_validation():
    with pytest.raises(ValueError, match="alpha"):
        SequentialConfig(alpha=0)
    with pytest.raises(ValueError, match="tuning_sample_size"):
        SequentialConfig(tuning_sample_size=0)


@pytest.mark.parametrize(("n", "expected"), [(1000, 3.36389), (5000, 3.03521), (20_000, 3.12711)])
def test_golden_boundary(n, expected):
    assert float(z_boundary(n, 0.05, 5000)) == pytest.approx(expected, rel=1e-4)


def test_ratio_with_zero_exposures_is_a_clear_error():
    """Issue 11 item 15: a ratio arm without exposures raised ZeroDivisionError here, ValueError in ratio_z_test."""
    empty, some = RatioStatistic(10, 0.0, 0.0, 0.0, 0.0, 0.0), RatioStatistic(10, 5.0, 5.0, 20.0, 50.0, 12.0)
    with pytest.raises(ValueError, match="control has a zero denominator sum"):
        sequential_test(empty, some)
    with pytest.raises(ValueError, match="treatment has a zero denominator sum"):
        sequential_test(some, empty)
