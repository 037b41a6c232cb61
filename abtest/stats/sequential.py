"""Always-valid (sequential) test for teams that look at the results every day.

We use the **mixture sequential probability ratio test (mSPRT) with a normal mixture** (Robbins 1970;
Johari, Pekelis & Walsh, "Always valid inference", 2017/2022) on the difference of arm means. With
``theta_hat`` the estimated difference, ``V`` its squared standard error and a ``N(0, tau^2)`` mixture
over the true difference, the mixture likelihood ratio against ``H0: theta = 0`` is::

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2)))

``Lambda`` is a (asymptotically) nonnegative martingale under H0, so by Ville's inequality
``P(sup_t Lambda_t >= 1/alpha) <= alpha``: stopping the first day ``Lambda >= 1/alpha`` keeps the
false-positive rate at ``alpha`` however often one looks. Equivalently, with ``r = tau^2 / V``::

    reject  <=>  |z| >= z_boundary(r) = sqrt((1 + r) / r * (2 log(1 / alpha) + log(1 + r)))

and the always-valid confidence interval (a confidence sequence) is ``theta_hat +- z_boundary * se``;
the always-valid p-value is the running minimum of ``min(1, 1 / Lambda)``.

Choice of ``tau^2``: we scale it with the per-user variance, ``tau^2 = rho^2 * s^2`` where
``s^2 = V * N`` and ``N`` is the total number of users, so ``r = N rho^2`` depends on ``N`` only. ``rho``
is tuned so the boundary is tightest at a planned sample size ``N_tune``:
``rho^2 = (2 log(1/alpha) + log(2 log(1/alpha) + 1)) / N_tune`` (Howard, Ramdas, McAuliffe & Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021). The resulting interval
is exactly Howard et al.'s two-sided normal-mixture asymptotic confidence sequence, the same one
growthbook's gbstats uses (its ``sequential_tuning_parameter`` is our ``tuning_sample_size``).

The boundary depends only on ``N``, so :func:`boundary_curve` gives the report a curve to plot
(``z_boundary`` against users, next to the fixed-horizon 1.96).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from abtest.stats.formatting import format_interval, format_number, format_pct, format_relative
from abtest.stats.lift import fieller_interval, lift_arrays
from abtest.stats.significance import check_denominators, cuped_moments
from abtest.stats.sufficient_statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

__all__ = [
    "SequentialConfig",
    "mixing_rho_squared",
    "z_boundary",
    "mixture_likelihood_ratio",
    "always_valid_p_values",
    "boundary_curve",
    "SequentialResult",
    "sequential_test",
]


@dataclass(frozen=True)
class SequentialConfig:
    """Settings of the always-valid test.

    Args:
        alpha (float, optional): Type-I error bound over all looks. (default: 0.05)
        tuning_sample_size (int, optional): Total users (both arms) at which the boundary is tightest;
            set it near the planned size. A bad choice costs power, never validity. (default: 5000)
    """

    alpha: float = 0.05
    tuning_sample_size: int = 5000

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.tuning_sample_size <= 0:
            raise ValueError(f"tuning_sample_size must be positive, got {self.tuning_sample_size}")


def mixing_rho_squared(alpha: float, tuning_sample_size: float) -> float:
    """``rho^2`` that makes the boundary tightest at ``tuning_sample_size`` users (Howard et al. 2021)."""
    c = -2.0 * math.log(alpha)
    return (c + math.log(c + 1.0)) / tuning_sample_size


def z_boundary(n_total, alpha: float = 0.05, tuning_sample_size: float = 5000) -> np.ndarray:
    """Critical ``|z|`` of the mSPRT after ``n_total`` users (vectorised over ``n_total``)."""
    r = np.asarray(n_total, dtype=np.float64) * mixing_rho_squared(alpha, tuning_sample_size)
    with np.errstate(divide="ignore"):
        return np.sqrt((1.0 + r) / r * (2.0 * math.log(1.0 / alpha) + np.log1p(r)))


def mixture_likelihood_ratio(z, n_total, alpha: float = 0.05, tuning_sample_size: float = 5000) -> np.ndarray:
    """Normal-mixture likelihood ratio ``Lambda`` for a z-statistic after ``n_total`` users."""
    r = np.asarray(n_total, dtype=np.float64) * mixing_rho_squared(alpha, tuning_sample_size)
    z = np.asarray(z, dtype=np.float64)
    # Work in logs: Lambda overflows for large z long before the test stops being interesting.
    return np.exp(-0.5 * np.log1p(r) + r / (1.0 + r) * z**2 / 2.0)


def always_valid_p_values(z, n_total, alpha: float = 0.05, tuning_sample_size: float = 5000) -> np.ndarray:
    """Always-valid p-values over successive looks: running minimum of ``min(1, 1 / Lambda)`` along
    the last axis (looks in time order)."""
    lam = mixture_likelihood_ratio(z, n_total, alpha, tuning_sample_size)
    with np.errstate(divide="ignore", over="ignore"):
        p = np.minimum(1.0, 1.0 / lam)
    return np.minimum.accumulate(p, axis=-1)


def boundary_curve(
    n_total, alpha: float = 0.05, tuning_sample_size: float = 5000
) -> dict[str, np.ndarray]:
    """Boundary over time for plotting: users, sequential ``|z|`` boundary, fixed-horizon ``|z|``, and the
    width inflation of the always-valid interval over the fixed-horizon one."""
    n = np.asarray(n_total, dtype=np.float64)
    zb = z_boundary(n, alpha, tuning_sample_size)
    fixed = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return {
        "n_total": n,
        "z_boundary": zb,
        "z_fixed_horizon": np.full_like(n, fixed),
        "width_inflation": zb / fixed,
    }


@dataclass(frozen=True)
class SequentialResult:
    """One look of the always-valid test: ``abs_ci`` / ``rel_ci`` are confidence-sequence intervals."""

    metric: str
    control_name: str
    treatment_name: str
    n_total: int
    control_mean: float
    treatment_mean: float
    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    z: float
    z_boundary: float
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return bool(abs(self.z) >= self.z_boundary)

    def summary(self) -> str:
        interval = f"always-valid interval {format_relative(self.rel_lift, self.rel_ci)}"
        if math.isnan(self.rel_lift):
            interval += f", absolute {format_number(self.abs_lift, '+')} {format_interval(*self.abs_ci, pct=False, sign='+')}"
        if self.significant:
            direction = self.abs_lift if math.isnan(self.rel_lift) else self.rel_lift
            verb = "raises" if direction > 0 else "lowers"
            by = "" if math.isnan(self.rel_lift) else f" by {format_pct(abs(self.rel_lift))}"
            return (
                f"{self.treatment_name} {verb} {self.metric}{by} ({interval}, |z| = {abs(self.z):.2f} >= "
                f"{self.z_boundary:.2f}); safe to stop"
            )
        return f"no conclusion yet on {self.metric}: {interval}, |z| = {abs(self.z):.2f} < {self.z_boundary:.2f}; keep running"


def sequential_test(
    control: Statistic,
    treatment: Statistic,
    config: SequentialConfig | None = None,
    *,
    metric: str = "metric",
    control_name: str = "control",
    treatment_name: str = "treatment",
) -> SequentialResult:
    """Always-valid test of treatment vs control at the current look.

    Works on every statistic of :mod:`abtest.stats.sufficient_statistics` (normal approximation; CUPED-adjusted when
    given :class:`~abtest.stats.sufficient_statistics.RegressionAdjustedStatistic`). The p-value is ``min(1, 1/Lambda)`` at
    this look; use :func:`always_valid_p_values` over the history of looks for the running minimum.
    """
    config = config or SequentialConfig()
    means, variances = _means_and_variances(control, treatment)
    n_total = control.n + treatment.n
    lifts = lift_arrays(means[0], variances[0], control.n, means[1], variances[1], treatment.n, alpha=config.alpha)
    zb = float(z_boundary(n_total, config.alpha, config.tuning_sample_size))
    z = float(lifts.statistic)
    if math.isinf(z):  # both arms constant with different means: certain, as the fixed-horizon tests say
        p = 0.0
    else:
        p = float(min(1.0, 1.0 / mixture_likelihood_ratio(z, n_total, config.alpha, config.tuning_sample_size)))
    # The relative interval is Fieller's at the boundary: it excludes 0 exactly when |z| >= z_boundary.
    rel_low, rel_high = fieller_interval(means[0], variances[0] / control.n, means[1], variances[1] / treatment.n, zb)
    return SequentialResult(
        metric=metric,
        control_name=control_name,
        treatment_name=treatment_name,
        n_total=n_total,
        control_mean=float(means[0]),
        treatment_mean=float(means[1]),
        abs_lift=float(lifts.abs_lift),
        abs_ci=(float(lifts.abs_lift - zb * lifts.abs_se), float(lifts.abs_lift + zb * lifts.abs_se)),
        rel_lift=float(lifts.rel_lift),
        rel_ci=(float(rel_low), float(rel_high)),
        z=z,
        z_boundary=zb,
        p_value=p,
        alpha=config.alpha,
    )


def _means_and_variances(control: Statistic, treatment: Statistic) -> tuple[list[float], list[float]]:
    if type(control) is not type(treatment):
        raise TypeError(f"arms have different statistic types: {type(control).__name__} vs {type(treatment).__name__}")
    for name, s in (("control", control), ("treatment", treatment)):
        if s.n < 2:
            raise ValueError(f"{name} has {s.n} users; need at least 2")
    if isinstance(control, RatioStatistic):
        check_denominators(control, treatment)
    if isinstance(control, RegressionAdjustedStatistic):
        return cuped_moments(control, treatment)
    if isinstance(control, SampleMeanStatistic | ProportionStatistic | RatioStatistic):
        return [control.mean, treatment.mean], [control.variance, treatment.variance]
    raise TypeError(f"no sequential test for {type(control).__name__}")
