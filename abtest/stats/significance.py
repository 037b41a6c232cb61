"""Frequentist comparison of two arms from their sufficient statistics (:mod:`abtest.stats.sufficient_statistics`).

Tests, each a pure function of two statistics returning a :class:`~abtest.stats.results.TestResult`:

* :func:`welch_t_test` (means; Welch-Satterthwaite degrees of freedom),
* :func:`two_proportion_z_test` (p-value from the pooled variance, as ``statsmodels`` ``proportions_ztest``;
  interval from the unpooled variance),
* :func:`ratio_z_test` (delta method),
* :func:`cuped_test` (CUPED, ``theta`` pooled within arms, equal to the ANCOVA slope),
* :func:`compare` picks one of these from the statistic's type.

The numbers themselves (lifts, Fieller's relative interval, p-value, chance to win) come from
:func:`abtest.stats.lift.lift_arrays`. Sample ratio mismatch is in :mod:`abtest.stats.srm`, Holm and
Benjamini-Hochberg in :mod:`abtest.stats.multiple_testing`.
"""

from __future__ import annotations

import math

from abtest.stats.lift import lift_arrays
from abtest.stats.results import TestResult, result_from_lifts
from abtest.stats.sufficient_statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

__all__ = [
    "welch_t_test",
    "two_proportion_z_test",
    "ratio_z_test",
    "check_denominators",
    "cuped_theta",
    "cuped_moments",
    "cuped_test",
    "compare",
]


def check_denominators(control: RatioStatistic, treatment: RatioStatistic) -> None:
    """``ValueError`` when an arm's denominators sum to zero (e.g. no exposures): its ratio is undefined."""
    for name, s in (("control", control), ("treatment", treatment)):
        if s.d_sum <= 0:
            raise ValueError(f"{name} has a zero denominator sum; the ratio is undefined")


def _check_n(control, treatment, minimum: int = 2) -> None:
    for name, s in (("control", control), ("treatment", treatment)):
        if s.n < minimum:
            raise ValueError(f"{name} has {s.n} users; need at least {minimum}")


def welch_t_test(
    control: SampleMeanStatistic,
    treatment: SampleMeanStatistic,
    *,
    alpha: float = 0.05,
    metric: str = "metric",
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> TestResult:
    """Welch's unequal-variance t-test on per-user means (same p-value as
    ``scipy.stats.ttest_ind(equal_var=False)``); intervals use the Welch degrees of freedom."""
    _check_n(control, treatment)
    lifts = lift_arrays(
        control.mean, control.variance, control.n, treatment.mean, treatment.variance, treatment.n,
        alpha=alpha, distribution="t",
    )
    return result_from_lifts(
        lifts, metric=metric, method="welch_t", control_name=control_name, treatment_name=treatment_name,
        control_n=control.n, treatment_n=treatment.n, control_mean=control.mean, treatment_mean=treatment.mean,
        alpha=alpha,
    )


def two_proportion_z_test(
    control: ProportionStatistic,
    treatment: ProportionStatistic,
    *,
    alpha: float = 0.05,
    pooled: bool = True,
    metric: str = "metric",
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> TestResult:
    """Two-proportion z-test.

    Args:
        pooled (bool, optional): Test statistic from the pooled proportion under H0 (as statsmodels
            ``proportions_ztest``); the intervals use the unpooled (Wald) standard error. (default: True)
    """
    _check_n(control, treatment, minimum=1)
    test_se = None
    if pooled:
        p = (control.successes + treatment.successes) / (control.n + treatment.n)
        test_se = math.sqrt(p * (1.0 - p) * (1.0 / control.n + 1.0 / treatment.n))
    lifts = lift_arrays(
        control.mean, control.variance, control.n, treatment.mean, treatment.variance, treatment.n,
        alpha=alpha, distribution="normal", test_se=test_se,
    )
    return result_from_lifts(
        lifts, metric=metric, method="two_proportion_z", control_name=control_name, treatment_name=treatment_name,
        control_n=control.n, treatment_n=treatment.n, control_mean=control.mean, treatment_mean=treatment.mean,
        alpha=alpha,
    )


def ratio_z_test(
    control: RatioStatistic,
    treatment: RatioStatistic,
    *,
    alpha: float = 0.05,
    metric: str = "metric",
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> TestResult:
    """z-test of a ratio metric (e.g. clicks per exposure) with delta-method variances per arm."""
    _check_n(control, treatment)
    check_denominators(control, treatment)
    lifts = lift_arrays(
        control.mean, control.variance, control.n, treatment.mean, treatment.variance, treatment.n,
        alpha=alpha, distribution="normal",
    )
    return result_from_lifts(
        lifts, metric=metric, method="ratio_delta_z", control_name=control_name, treatment_name=treatment_name,
        control_n=control.n, treatment_n=treatment.n, control_mean=control.mean, treatment_mean=treatment.mean,
        alpha=alpha,
    )


def cuped_theta(control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic) -> float:
    """CUPED coefficient pooled across arms: within-arm co-moment of (y, x) over within-arm moment of x.

    Pooling the *within-arm* moments makes the adjusted lift equal to the treatment coefficient of the
    OLS regression ``y ~ 1 + treatment + x`` (ANCOVA), and ``theta`` does not depend on the lift itself.
    """
    sxy = sxx = 0.0
    for s in (control, treatment):
        if s.n:
            sxy += s.post_pre_sum_of_products - s.post_sum * s.pre_sum / s.n
            sxx += s.pre_sum_squares - s.pre_sum**2 / s.n
    return sxy / sxx if sxx > 0 else 0.0


def cuped_moments(
    control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic, theta: float | None = None
) -> tuple[list[float], list[float]]:
    """CUPED-adjusted means and per-user variances ``([mean_c, mean_t], [var_c, var_t])``.

    ``mean = mean_y - theta (mean_x_arm - mean_x_pooled)``, ``var = var_y - 2 theta cov_xy + theta^2 var_x``;
    ``theta`` defaults to :func:`cuped_theta`.
    """
    if theta is None:
        theta = cuped_theta(control, treatment)
    pooled_pre_mean = (control.pre_sum + treatment.pre_sum) / (control.n + treatment.n)
    means, variances = [], []
    for s in (control, treatment):
        pre = s.pre_statistic
        means.append(s.post_statistic.mean - theta * (pre.mean - pooled_pre_mean))
        var = s.post_statistic.variance - 2.0 * theta * s.covariance + theta**2 * pre.variance
        variances.append(max(var, 0.0))
    return means, variances


def cuped_test(
    control: RegressionAdjustedStatistic,
    treatment: RegressionAdjustedStatistic,
    *,
    alpha: float = 0.05,
    theta: float | None = None,
    metric: str = "metric",
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> TestResult:
    """CUPED (Deng et al. 2013): z-test on ``y - theta (x - mean_x)``, ``mean_x`` pooled over both arms.

    Adjusted arm means are ``mean_y - theta (mean_x_arm - mean_x_pooled)`` and adjusted per-user
    variances ``var_y - 2 theta cov_xy + theta^2 var_x``; ``theta`` defaults to :func:`cuped_theta`.
    The reported ``control_mean`` / ``treatment_mean`` are the adjusted means; the relative lift is
    taken against the adjusted control mean.
    """
    _check_n(control, treatment)
    means, variances = cuped_moments(control, treatment, theta)
    lifts = lift_arrays(
        means[0], variances[0], control.n, means[1], variances[1], treatment.n, alpha=alpha, distribution="normal"
    )
    return result_from_lifts(
        lifts, metric=metric, method="cuped_z", control_name=control_name, treatment_name=treatment_name,
        control_n=control.n, treatment_n=treatment.n, control_mean=means[0], treatment_mean=means[1], alpha=alpha,
    )


def compare(
    control: Statistic,
    treatment: Statistic,
    *,
    alpha: float = 0.05,
    metric: str = "metric",
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> TestResult:
    """Pick the test from the statistic type: Welch for means, z for proportions, delta method for
    ratios, CUPED for regression-adjusted statistics."""
    if type(control) is not type(treatment):
        raise TypeError(f"arms have different statistic types: {type(control).__name__} vs {type(treatment).__name__}")
    test = {
        SampleMeanStatistic: welch_t_test,
        ProportionStatistic: two_proportion_z_test,
        RatioStatistic: ratio_z_test,
        RegressionAdjustedStatistic: cuped_test,
    }.get(type(control))
    if test is None:
        raise TypeError(f"no test for {type(control).__name__}")
    return test(
        control, treatment, alpha=alpha, metric=metric, control_name=control_name, treatment_name=treatment_name
    )
