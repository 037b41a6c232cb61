"""Sufficient statistics of one arm: small frozen dataclasses that add together.

Events are rolled up (see :mod:`abtest.stats.aggregate`) into these; shards, days and workers combine
with ``+``, and every test of :mod:`abtest.stats.significance` is a pure function of two of them. The
analysis unit is the user: each statistic sums per-user values. ``variance`` is always the per-unit
variance, so the standard error of the arm's mean is ``sqrt(variance / n)``:

* :class:`SampleMeanStatistic` ``(n, sum, sum_squares)``: a per-user mean, e.g. clicks per user.
  ``variance`` is the sample variance (ddof 1).
* :class:`ProportionStatistic` ``(n, successes)``: a share of users, e.g. engaged users.
  ``variance`` is ``p (1 - p)``.
* :class:`RatioStatistic` ``(n, m_sum, m_sum_squares, d_sum, d_sum_squares, m_d_sum_of_products)``:
  ``sum(m) / sum(d)`` over users, e.g. clicks per exposure. Users are the unit, so exposures of one
  user are correlated; the delta method gives the per-user variance of the ratio
  ``var_m / mu_d^2 - 2 mu_m cov_md / mu_d^3 + mu_m^2 var_d / mu_d^4``.
* :class:`RegressionAdjustedStatistic`: a per-user metric plus a pre-experiment covariate, for CUPED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SampleMeanStatistic",
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "Statistic",
    "ratio_variance",
]


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
            ratio_variance(
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


def ratio_variance(mean_m, var_m, mean_d, var_d, cov_md):
    """Delta-method per-unit variance of ``mean_m / mean_d`` (works on scalars and arrays)."""
    return var_m / mean_d**2 - 2.0 * mean_m * cov_md / mean_d**3 + mean_m**2 * var_d / mean_d**4
