"""The vectorised core of every two-arm comparison: lifts, intervals, p-values from means and variances.

:func:`lift_arrays` takes per-unit means, variances and counts of both arms (arrays broadcast, so 1,000
simulated experiments are one call) and returns the absolute lift ``mean_t - mean_c`` with its interval,
the relative lift ``mean_t / mean_c - 1`` with Fieller's interval (:func:`fieller_interval`), a
two-sided p-value for the absolute difference and a Bayesian chance to win
``P(relative lift > 0) = Phi(rel_lift / rel_se)`` (normal approximation with a flat prior, as growthbook
gbstats; ``rel_se^2 = var_t / (n_t mu_c^2) + mu_t^2 var_c / (n_c mu_c^4)`` is the delta-method standard
error). Fieller's interval excludes 0 exactly when the unpooled test of the difference rejects, so the
relative interval and the p-value never contradict each other (the pooled two-proportion test can
differ in a borderline case).

Edge cases are answers, not errors: both arms constant with different means give ``p = 0``; a zero
control mean gives a NaN relative lift and interval (not estimable) and a chance to win from the
absolute difference.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from scipy import stats

__all__ = ["LiftArrays", "lift_arrays", "fieller_interval"]


class LiftArrays(NamedTuple):
    """Vectorised comparison of two arms; every field broadcasts over the inputs' shape."""

    abs_lift: np.ndarray
    abs_se: np.ndarray
    abs_ci_low: np.ndarray
    abs_ci_high: np.ndarray
    rel_lift: np.ndarray
    rel_se: np.ndarray
    rel_ci_low: np.ndarray
    rel_ci_high: np.ndarray
    statistic: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    chance_to_win: np.ndarray


def lift_arrays(
    mean_c,
    var_c,
    n_c,
    mean_t,
    var_t,
    n_t,
    *,
    alpha: float = 0.05,
    distribution: Literal["normal", "t"] = "normal",
    test_se=None,
) -> LiftArrays:
    """Two-sided comparison of treatment vs control from per-unit means and variances.

    All array arguments broadcast, so 1,000 simulated experiments are one call.

    Args:
        mean_c, var_c, n_c: Control mean, per-unit variance and number of units.
        mean_t, var_t, n_t: The same for treatment.
        alpha (float, optional): Two-sided significance level; intervals are ``1 - alpha``. (default: 0.05)
        distribution (str, optional): ``"normal"`` (z-test) or ``"t"`` (Welch t-test with
            Welch-Satterthwaite degrees of freedom). (default: ``"normal"``)
        test_se (array, optional): Standard error used for the test statistic only (the pooled one
            for proportions); the intervals always use the unpooled standard error. (default: None)
    """
    mean_c, var_c, n_c, mean_t, var_t, n_t = (np.asarray(a, dtype=np.float64) for a in (mean_c, var_c, n_c, mean_t, var_t, n_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = var_c / n_c
        b = var_t / n_t
        abs_lift = mean_t - mean_c
        abs_se = np.sqrt(a + b)
        se_for_test = abs_se if test_se is None else np.asarray(test_se, dtype=np.float64)
        # A zero standard error (both arms constant) is certainty, not "no evidence": different means are
        # an infinite z (p = 0, as the ratio and sequential tests say); equal means are z = 0 (p = 1).
        statistic = np.where(se_for_test > 0, abs_lift / se_for_test, np.where(abs_lift == 0, 0.0, np.sign(abs_lift) * np.inf))
        if distribution == "t":
            df = (a + b) ** 2 / (a**2 / (n_c - 1) + b**2 / (n_t - 1))
            # Welch-Satterthwaite is 0/0 when both arms are constant; the pooled test's df is the limit.
            df = np.where(a + b > 0, df, n_c + n_t - 2.0)
            p_value = 2.0 * stats.t.sf(np.abs(statistic), df)
            critical = stats.t.ppf(1.0 - alpha / 2.0, df)
        elif distribution == "normal":
            df = np.full_like(abs_lift, np.inf)
            p_value = 2.0 * stats.norm.sf(np.abs(statistic))
            critical = stats.norm.ppf(1.0 - alpha / 2.0)
        else:
            raise ValueError(f"distribution must be 'normal' or 't', got {distribution!r}")
        # A relative change of a zero control is not a number: NaN, never inf (see TestResult.summary).
        control_zero = mean_c == 0
        rel_lift = np.where(control_zero, np.nan, mean_t / mean_c - 1.0)
        rel_se = np.sqrt(b / mean_c**2 + mean_t**2 * a / mean_c**4)
        rel_ci_low, rel_ci_high = fieller_interval(mean_c, a, mean_t, b, critical)
        # Against a zero control the relative lift is undefined; its sign is the absolute difference's.
        chance_to_win = np.where(control_zero, stats.norm.cdf(statistic), stats.norm.cdf(rel_lift / rel_se))
    p_value = np.where(np.isnan(p_value), 1.0, p_value)
    # 0 / 0 (identical constant arms): no evidence either way.
    chance_to_win = np.where(np.isnan(chance_to_win), 0.5, chance_to_win)
    return LiftArrays(
        abs_lift=abs_lift,
        abs_se=abs_se,
        abs_ci_low=abs_lift - critical * abs_se,
        abs_ci_high=abs_lift + critical * abs_se,
        rel_lift=rel_lift,
        rel_se=rel_se,
        rel_ci_low=rel_ci_low,
        rel_ci_high=rel_ci_high,
        statistic=statistic,
        df=df,
        p_value=p_value,
        chance_to_win=chance_to_win,
    )


def fieller_interval(mean_c, se2_c, mean_t, se2_t, critical) -> tuple[np.ndarray, np.ndarray]:
    """Fieller's interval of the relative lift ``mean_t / mean_c - 1`` of two independent arm means.

    The set of ratios ``rho`` with ``(mean_t - rho mean_c)^2 <= critical^2 (se2_t + rho^2 se2_c)``: it needs
    no normality of the ratio itself (only of the two means), so it stays honest where the symmetric
    delta-method interval under-covers (small arms, heavy-tailed users: the control mean in the
    denominator is noisy), and at ``rho = 1`` the condition is the unpooled test of the difference, so
    the interval excludes 0 exactly when that test rejects. With ``g = critical^2 se2_c / mean_c^2``::

        rho = (mean_t / mean_c +- critical / |mean_c| sqrt(se2_t (1 - g) + (mean_t / mean_c)^2 se2_c)) / (1 - g)

    When ``g >= 1`` the control mean is not distinguishable from zero and the set is unbounded: ``(-inf, inf)``.
    NaN when the control mean is zero. All arguments broadcast.

    Args:
        mean_c, se2_c: Control mean and its squared standard error (``var_c / n_c``).
        mean_t, se2_t: Treatment mean and its squared standard error.
        critical: Critical value (e.g. 1.96, a t quantile, or the sequential boundary).
    """
    mean_c, se2_c, mean_t, se2_t, critical = (np.asarray(x, dtype=np.float64) for x in (mean_c, se2_c, mean_t, se2_t, critical))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = critical**2 * se2_c / mean_c**2
        rho = mean_t / mean_c
        half = critical / np.abs(mean_c) * np.sqrt(np.maximum(se2_t * (1.0 - g) + rho**2 * se2_c, 0.0))
        low = (rho - half) / (1.0 - g) - 1.0
        high = (rho + half) / (1.0 - g) - 1.0
    bounded = g < 1.0
    low = np.where(bounded, low, -np.inf)
    high = np.where(bounded, high, np.inf)
    undefined = mean_c == 0
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)
