"""Frequentist and Bayesian comparison of two arms, computed from sufficient statistics.

Events are rolled up (see :mod:`abtest.aggregate`) into small frozen dataclasses that add together
(shards, days and workers combine with ``+``); every test here is a pure function of two of them and
returns a :class:`TestResult`. The analysis unit is the user: each statistic sums per-user values.

Statistics (``variance`` is always the per-unit variance, so the standard error of the arm's mean is
``sqrt(variance / n)``):

* :class:`SampleMeanStatistic` ``(n, sum, sum_squares)``: a per-user mean, e.g. clicks per user.
  ``variance`` is the sample variance (ddof 1).
* :class:`ProportionStatistic` ``(n, successes)``: a share of users, e.g. engaged users.
  ``variance`` is ``p (1 - p)``.
* :class:`RatioStatistic` ``(n, m_sum, m_sum_squares, d_sum, d_sum_squares, m_d_sum_of_products)``:
  ``sum(m) / sum(d)`` over users, e.g. clicks per exposure. Users are the unit, so exposures of one
  user are correlated; the delta method gives the per-user variance of the ratio
  ``var_m / mu_d^2 - 2 mu_m cov_md / mu_d^3 + mu_m^2 var_d / mu_d^4``.
* :class:`RegressionAdjustedStatistic`: a per-user metric plus a pre-experiment covariate, for CUPED.

Tests:

* :func:`welch_t_test` (means; Welch-Satterthwaite degrees of freedom),
* :func:`two_proportion_z_test` (p-value from the pooled variance, as ``statsmodels`` ``proportions_ztest``;
  interval from the unpooled variance),
* :func:`ratio_z_test` (delta method),
* :func:`cuped_test` (CUPED, ``theta`` pooled within arms, equal to the ANCOVA slope),
* :func:`compare` picks one of these from the statistic's type.

Every result carries the absolute lift ``mean_t - mean_c`` with its interval, the relative lift
``mean_t / mean_c - 1`` with a delta-method interval
(``se^2 = var_t / (n_t mu_c^2) + mu_t^2 var_c / (n_c mu_c^4)``), a two-sided p-value for the absolute
difference and a Bayesian chance to win ``P(relative lift > 0) = Phi(rel_lift / rel_se)`` (normal
approximation with a flat prior, as growthbook gbstats). The p-value tests the absolute difference and
the relative interval is a delta-method approximation, so in rare borderline cases they can disagree.

Also here: :func:`sample_ratio_mismatch` (chi-square goodness of fit against the configured weights)
and :func:`holm` / :func:`benjamini_hochberg` / :func:`adjust_results` across several metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats

from abtest.stats.formatting import (
    NOT_ESTIMABLE,
    format_interval,
    format_number,
    format_p,
    format_pct,
    format_relative,
)

__all__ = [
    "SampleMeanStatistic",
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "Statistic",
    "TestResult",
    "LiftArrays",
    "lift_arrays",
    "fieller_interval",
    "welch_t_test",
    "two_proportion_z_test",
    "ratio_z_test",
    "check_denominators",
    "cuped_theta",
    "cuped_moments",
    "cuped_test",
    "compare",
    "SRMResult",
    "sample_ratio_mismatch",
    "MultipleTestingResult",
    "holm",
    "benjamini_hochberg",
    "adjust_results",
]


# --------------------------------------------------------------------------- sufficient statistics


@dataclass(frozen=True)
class SampleMeanStatistic:
    """Sum and sum of squares of one value per user.

    Args:
        n (int): Number of users.
        sum (float): Sum of the per-user values.
        sum_squares (float): Sum of the squared per-user values.
    """

    n: int
    sum: float
    sum_squares: float

    @classmethod
    def from_values(cls, values: np.ndarray | Sequence[float]) -> SampleMeanStatistic:
        x = np.asarray(values, dtype=np.float64)
        return cls(n=int(x.size), sum=float(x.sum()), sum_squares=float(np.dot(x, x)))

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof 1); 0 with fewer than two users."""
        if self.n < 2:
            return 0.0
        # Clamp: catastrophic cancellation can make a constant column slightly negative.
        return max((self.sum_squares - self.sum**2 / self.n) / (self.n - 1), 0.0)

    def __add__(self, other: SampleMeanStatistic) -> SampleMeanStatistic:
        if not isinstance(other, SampleMeanStatistic):
            return NotImplemented
        return SampleMeanStatistic(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)


@dataclass(frozen=True)
class ProportionStatistic:
    """Number of users and how many of them had the outcome.

    Args:
        n (int): Number of users.
        successes (int): Users with the outcome (e.g. at least one click).
    """

    n: int
    successes: int

    @classmethod
    def from_values(cls, flags: np.ndarray | Sequence[bool]) -> ProportionStatistic:
        x = np.asarray(flags).astype(bool)
        return cls(n=int(x.size), successes=int(x.sum()))

    @property
    def mean(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Bernoulli variance ``p (1 - p)``."""
        p = self.mean
        return p * (1.0 - p)

    def __add__(self, other: ProportionStatistic) -> ProportionStatistic:
        if not isinstance(other, ProportionStatistic):
            return NotImplemented
        return ProportionStatistic(self.n + other.n, self.successes + other.successes)


@dataclass(frozen=True)
class RatioStatistic:
    """Per-user numerator ``m`` and denominator ``d`` of a ratio metric ``sum(m) / sum(d)``.

    Args:
        n (int): Number of users.
        m_sum (float): Sum of numerators (e.g. clicks).
        m_sum_squares (float): Sum of squared numerators.
        d_sum (float): Sum of denominators (e.g. exposures).
        d_sum_squares (float): Sum of squared denominators.
        m_d_sum_of_products (float): Sum of ``m * d`` over users.
    """

    n: int
    m_sum: float
    m_sum_squares: float
    d_sum: float
    d_sum_squares: float
    m_d_sum_of_products: float

    @classmethod
    def from_values(cls, numerators: np.ndarray, denominators: np.ndarray) -> RatioStatistic:
        m = np.asarray(numerators, dtype=np.float64)
        d = np.asarray(denominators, dtype=np.float64)
        if m.shape != d.shape:
            raise ValueError(f"numerators {m.shape} and denominators {d.shape} differ in shape")
        return cls(
            n=int(m.size),
            m_sum=float(m.sum()),
            m_sum_squares=float(np.dot(m, m)),
            d_sum=float(d.sum()),
            d_sum_squares=float(np.dot(d, d)),
            m_d_sum_of_products=float(np.dot(m, d)),
        )

    @property
    def m_statistic(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.m_sum, self.m_sum_squares)

    @property
    def d_statistic(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.d_sum, self.d_sum_squares)

    @property
    def covariance(self) -> float:
        """Sample covariance of ``m`` and ``d`` (ddof 1)."""
        if self.n < 2:
            return 0.0
        return (self.m_d_sum_of_products - self.m_sum * self.d_sum / self.n) / (self.n - 1)

    @property
    def mean(self) -> float:
        return self.m_sum / self.d_sum if self.d_sum else 0.0

    @property
    def variance(self) -> float:
        """Delta-method per-user variance of the ratio (divide by ``n`` for the squared standard error)."""
        return float(
            _ratio_variance(
                self.m_sum / self.n,
                self.m_statistic.variance,
                self.d_sum / self.n,
                self.d_statistic.variance,
                self.covariance,
            )
        )

    def __add__(self, other: RatioStatistic) -> RatioStatistic:
        if not isinstance(other, RatioStatistic):
            return NotImplemented
        return RatioStatistic(
            self.n + other.n,
            self.m_sum + other.m_sum,
            self.m_sum_squares + other.m_sum_squares,
            self.d_sum + other.d_sum,
            self.d_sum_squares + other.d_sum_squares,
            self.m_d_sum_of_products + other.m_d_sum_of_products,
        )


@dataclass(frozen=True)
class RegressionAdjustedStatistic:
    """A per-user metric ``y`` (during the experiment) and its pre-experiment covariate ``x``, for CUPED.

    Args:
        n (int): Number of users.
        post_sum (float): Sum of ``y``.
        post_sum_squares (float): Sum of ``y^2``.
        pre_sum (float): Sum of ``x`` (e.g. clicks in the weeks before the experiment; 0 for new users).
        pre_sum_squares (float): Sum of ``x^2``.
        post_pre_sum_of_products (float): Sum of ``x * y``.
    """

    n: int
    post_sum: float
    post_sum_squares: float
    pre_sum: float
    pre_sum_squares: float
    post_pre_sum_of_products: float

    @classmethod
    def from_values(cls, post: np.ndarray, pre: np.ndarray) -> RegressionAdjustedStatistic:
        y = np.asarray(post, dtype=np.float64)
        x = np.asarray(pre, dtype=np.float64)
        if y.shape != x.shape:
            raise ValueError(f"post {y.shape} and pre {x.shape} differ in shape")
        return cls(
            int(y.size), float(y.sum()), float(np.dot(y, y)), float(x.sum()), float(np.dot(x, x)), float(np.dot(x, y))
        )

    @property
    def post_statistic(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.post_sum, self.post_sum_squares)

    @property
    def pre_statistic(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.pre_sum, self.pre_sum_squares)

    @property
    def covariance(self) -> float:
        if self.n < 2:
            return 0.0
        return (self.post_pre_sum_of_products - self.post_sum * self.pre_sum / self.n) / (self.n - 1)

    @property
    def mean(self) -> float:
        """Unadjusted mean of ``y``."""
        return self.post_statistic.mean

    @property
    def variance(self) -> float:
        """Unadjusted variance of ``y``."""
        return self.post_statistic.variance

    def __add__(self, other: RegressionAdjustedStatistic) -> RegressionAdjustedStatistic:
        if not isinstance(other, RegressionAdjustedStatistic):
            return NotImplemented
        return RegressionAdjustedStatistic(
            self.n + other.n,
            self.post_sum + other.post_sum,
            self.post_sum_squares + other.post_sum_squares,
            self.pre_sum + other.pre_sum,
            self.pre_sum_squares + other.pre_sum_squares,
            self.post_pre_sum_of_products + other.post_pre_sum_of_products,
        )


Statistic = SampleMeanStatistic | ProportionStatistic | RatioStatistic | RegressionAdjustedStatistic


def _ratio_variance(mean_m, var_m, mean_d, var_d, cov_md):
    """Delta-method per-unit variance of ``mean_m / mean_d`` (works on scalars and arrays)."""
    return var_m / mean_d**2 - 2.0 * mean_m * cov_md / mean_d**3 + mean_m**2 * var_d / mean_d**4


# --------------------------------------------------------------------------- vectorised core


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


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TestResult:
    """Outcome of comparing a treatment arm with a control arm on one metric.

    ``abs_ci`` / ``rel_ci`` are two-sided ``1 - alpha`` intervals of ``mean_t - mean_c`` and
    ``mean_t / mean_c - 1``; ``p_value`` tests the absolute difference (after :func:`adjust_results`
    it is the adjusted p-value and ``p_value_unadjusted`` keeps the raw one).
    """

    __test__ = False  # not a pytest test class, despite the name

    metric: str
    method: str
    control_name: str
    treatment_name: str
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    statistic: float
    p_value: float
    alpha: float
    chance_to_win: float
    p_value_unadjusted: float | None = None
    adjustment: str | None = None

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)

    def summary(self) -> str:
        """Plain words, e.g. ``gnn raises click-through by 4.1% [2.0%, 6.2%], p = 0.0003``.

        Against a zero control the relative change is ``not estimable (control is zero)`` and the absolute
        difference is given instead."""
        p = format_p(self.p_value)
        adjusted = f" ({self.adjustment}-adjusted)" if self.adjustment else ""
        t, c = self.treatment_name, self.control_name
        if math.isnan(self.rel_lift):
            absolute = f"absolute difference {format_number(self.abs_lift, '+')} {format_interval(*self.abs_ci, pct=False, sign='+')}"
            if self.significant:
                verb = "raises" if self.abs_lift > 0 else "lowers"
                return f"{t} {verb} {self.metric}: relative change {NOT_ESTIMABLE}; {absolute}, {p}{adjusted}"
            return (
                f"no significant difference in {self.metric} between {t} and {c}: relative change "
                f"{NOT_ESTIMABLE}; {absolute}, {p}{adjusted}"
            )
        lo, hi = self.rel_ci
        if self.significant and self.rel_lift > 0:
            return f"{t} raises {self.metric} by {format_pct(self.rel_lift)} {format_interval(lo, hi)}, {p}{adjusted}"
        if self.significant:
            return f"{t} lowers {self.metric} by {format_pct(-self.rel_lift)} {format_interval(-hi, -lo)}, {p}{adjusted}"
        return (
            f"no significant difference in {self.metric} between {t} and {c}: "
            f"{format_relative(self.rel_lift, self.rel_ci)}, {p}{adjusted}"
        )


def _result(
    lifts: LiftArrays,
    *,
    metric: str,
    method: str,
    control_name: str,
    treatment_name: str,
    control_n: int,
    treatment_n: int,
    control_mean: float,
    treatment_mean: float,
    alpha: float,
) -> TestResult:
    return TestResult(
        metric=metric,
        method=method,
        control_name=control_name,
        treatment_name=treatment_name,
        control_n=int(control_n),
        treatment_n=int(treatment_n),
        control_mean=float(control_mean),
        treatment_mean=float(treatment_mean),
        abs_lift=float(lifts.abs_lift),
        abs_ci=(float(lifts.abs_ci_low), float(lifts.abs_ci_high)),
        rel_lift=float(lifts.rel_lift),
        rel_ci=(float(lifts.rel_ci_low), float(lifts.rel_ci_high)),
        statistic=float(lifts.statistic),
        p_value=float(lifts.p_value),
        alpha=alpha,
        chance_to_win=float(lifts.chance_to_win),
    )


def check_denominators(control: RatioStatistic, treatment: RatioStatistic) -> None:
    """``ValueError`` when an arm's denominators sum to zero (e.g. no exposures): its ratio is undefined."""
    for name, s in (("control", control), ("treatment", treatment)):
        if s.d_sum <= 0:
            raise ValueError(f"{name} has a zero denominator sum; the ratio is undefined")


def _check_n(control, treatment, minimum: int = 2) -> None:
    for name, s in (("control", control), ("treatment", treatment)):
        if s.n < minimum:
            raise ValueError(f"{name} has {s.n} users; need at least {minimum}")


# --------------------------------------------------------------------------- tests


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
    return _result(
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
    return _result(
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
    return _result(
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
    return _result(
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


# --------------------------------------------------------------------------- sample ratio mismatch


@dataclass(frozen=True)
class SRMResult:
    """Chi-square goodness-of-fit of the observed users per arm against the configured weights."""

    arms: tuple[str, ...]
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        return bool(self.p_value < self.threshold)

    def summary(self) -> str:
        split = ", ".join(f"{a}={o} (expected {e:.0f})" for a, o, e in zip(self.arms, self.observed, self.expected))
        verdict = "SAMPLE RATIO MISMATCH: do not trust the results" if self.mismatch else "no sample ratio mismatch"
        return f"{verdict}: {split}; chi2 = {self.chi2:.2f}, {format_p(self.p_value)}"


def sample_ratio_mismatch(
    observed: Mapping[str, int] | Sequence[int],
    weights: Mapping[str, float] | Sequence[float],
    *,
    threshold: float = 0.001,
) -> SRMResult:
    """Flag a sample ratio mismatch: chi-square test of users per arm against the expected weights.

    Args:
        observed: Users per arm, as ``{arm: count}`` or a sequence in the order of ``weights``.
        weights: Configured arm weights (any positive scale), same keys/order as ``observed``.
        threshold (float, optional): Flag when ``p < threshold``; a strict threshold because SRM is checked
            on every experiment and a true mismatch gives tiny p-values. (default: 0.001)
    """
    if isinstance(observed, Mapping):
        if not isinstance(weights, Mapping) or set(observed) != set(weights):
            raise ValueError(f"observed arms {sorted(observed)} do not match weighted arms {sorted(weights)}")
        arms = tuple(weights)
        counts = np.array([observed[a] for a in arms], dtype=np.float64)
        w = np.array([weights[a] for a in arms], dtype=np.float64)
    else:
        counts = np.asarray(observed, dtype=np.float64)
        w = np.asarray(list(weights.values()) if isinstance(weights, Mapping) else weights, dtype=np.float64)
        arms = tuple(weights) if isinstance(weights, Mapping) else tuple(f"arm{i}" for i in range(len(w)))
    if counts.shape != w.shape or counts.size < 2:
        raise ValueError("need the same number (at least two) of observed counts and weights")
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    expected = counts.sum() * w / w.sum()
    if counts.sum() == 0:
        chi2, p = 0.0, 1.0
    else:
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        p = float(stats.chi2.sf(chi2, counts.size - 1))
    return SRMResult(
        arms=arms,
        observed=tuple(int(c) for c in counts),
        expected=tuple(float(e) for e in expected),
        chi2=chi2,
        p_value=p,
        threshold=threshold,
    )


# --------------------------------------------------------------------------- multiple testing


@dataclass(frozen=True)
class MultipleTestingResult:
    method: str
    p_values: tuple[float, ...]
    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]
    alpha: float


def holm(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Holm step-down adjustment (controls the family-wise error rate).

    Sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = _as_p_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum((m - np.arange(m)) * p[order], 1.0)
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return _multiple("holm", p, adjusted, alpha)


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Benjamini-Hochberg step-up adjustment (controls the false discovery rate).

    Sorted ascending, ``adj_(i) = min_{j >= i} min(1, m p_(j) / j)``.
    """
    p = _as_p_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(m * p[order] / np.arange(1, m + 1), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return _multiple("benjamini_hochberg", p, adjusted, alpha)


def adjust_results(
    results: Sequence[TestResult], method: Literal["holm", "benjamini_hochberg"] = "holm"
) -> list[TestResult]:
    """Replace each result's p-value by the adjusted one across ``results`` (the metrics of one
    experiment); ``p_value_unadjusted`` keeps the raw value. Intervals are not adjusted."""
    if not results:
        return []
    raw = [r.p_value_unadjusted if r.p_value_unadjusted is not None else r.p_value for r in results]
    alpha = results[0].alpha
    adjust = {"holm": holm, "benjamini_hochberg": benjamini_hochberg}.get(method)
    if adjust is None:
        raise ValueError(f"method must be 'holm' or 'benjamini_hochberg', got {method!r}")
    out = adjust(raw, alpha)
    short = {"holm": "Holm", "benjamini_hochberg": "BH"}[method]
    return [
        replace(r, p_value=adj, p_value_unadjusted=p, adjustment=short) for r, p, adj in zip(results, raw, out.adjusted)
    ]


def _as_p_array(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("p_values must be a non-empty 1-d sequence")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("p_values must lie in [0, 1]")
    return p


def _multiple(method: str, p: np.ndarray, adjusted: np.ndarray, alpha: float) -> MultipleTestingResult:
    return MultipleTestingResult(
        method=method,
        p_values=tuple(float(x) for x in p),
        adjusted=tuple(float(x) for x in adjusted),
        reject=tuple(bool(x) for x in adjusted <= alpha),
        alpha=alpha,
    )
