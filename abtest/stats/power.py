"""Power, minimum detectable effect and sample size for two-sided two-arm tests.

Normal approximation (what the z-tests in :mod:`abtest.stats.significance` use)::

    se(n_c) = sqrt(var_c / n_c + var_t / n_t),   n_t = ratio * n_c
    power   = Phi(|delta| / se - z_{1-alpha/2}) + Phi(-|delta| / se - z_{1-alpha/2})
    n_c     = (z_{1-alpha/2} + z_{power})^2 (var_c + var_t / ratio) / delta^2      (far tail ignored)

For proportions ``var = p (1 - p)`` of each arm's rate (unpooled), with the treatment rate
``baseline + delta``. For means both arms share ``std_dev``; ``use_t=True`` replaces the normal by the
noncentral t of the pooled two-sample t-test (``df = n_c + n_t - 2``, as statsmodels ``TTestIndPower``).

Effects are absolute by default; ``relative=True`` reads ``minimum_detectable_effect=0.05`` as +5% of
the baseline rate. Sample sizes are per arm, rounded up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, stats

__all__ = [
    "SampleSize",
    "proportion_power",
    "proportion_sample_size",
    "proportion_minimum_detectable_effect",
    "mean_power",
    "mean_sample_size",
    "mean_minimum_detectable_effect",
]


@dataclass(frozen=True)
class SampleSize:
    """Users needed per arm (rounded up) and the unrounded control figure."""

    control: int
    treatment: int
    control_exact: float

    @property
    def total(self) -> int:
        return self.control + self.treatment

    def summary(self) -> str:
        return f"{self.control:,} control + {self.treatment:,} treatment users = {self.total:,} in total"


def _check(alpha: float, power: float | None = None, ratio: float = 1.0) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if power is not None and not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if ratio <= 0:
        raise ValueError(f"ratio (treatment / control users) must be positive, got {ratio}")


def _normal_power(delta: float, se: float, alpha: float) -> float:
    z = stats.norm.ppf(1 - alpha / 2)
    d = abs(delta) / se
    return float(stats.norm.cdf(d - z) + stats.norm.cdf(-d - z))


def _treatment_rate(baseline_rate: float, effect: float, relative: bool) -> float:
    if not 0 < baseline_rate < 1:
        raise ValueError(f"baseline_rate must be in (0, 1), got {baseline_rate}")
    p_t = baseline_rate * (1 + effect) if relative else baseline_rate + effect
    if not 0 < p_t < 1:
        raise ValueError(f"treatment rate {p_t:.4g} = baseline {baseline_rate} with effect {effect} is outside (0, 1)")
    return p_t


def proportion_power(
    baseline_rate: float,
    effect: float,
    n_control: float,
    *,
    ratio: float = 1.0,
    alpha: float = 0.05,
    relative: bool = False,
) -> float:
    """Power of the two-sided two-proportion z-test.

    Args:
        baseline_rate (float): Control rate, e.g. 0.12 of users engage.
        effect (float): Difference to detect (absolute, or a fraction of the baseline if ``relative``).
        n_control (float): Users in control; treatment has ``ratio * n_control``.
        ratio (float, optional): Treatment users per control user. (default: 1.0)
        alpha (float, optional): Two-sided significance level. (default: 0.05)
        relative (bool, optional): Read ``effect`` as relative to the baseline. (default: False)
    """
    _check(alpha, ratio=ratio)
    p_t = _treatment_rate(baseline_rate, effect, relative)
    se = math.sqrt(baseline_rate * (1 - baseline_rate) / n_control + p_t * (1 - p_t) / (ratio * n_control))
    return _normal_power(p_t - baseline_rate, se, alpha)


def proportion_sample_size(
    baseline_rate: float,
    minimum_detectable_effect: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    relative: bool = False,
) -> SampleSize:
    """Users per arm for the two-proportion z-test to detect ``minimum_detectable_effect`` with ``power``."""
    _check(alpha, power, ratio)
    if minimum_detectable_effect == 0:
        raise ValueError("minimum_detectable_effect must be non-zero")
    p_t = _treatment_rate(baseline_rate, minimum_detectable_effect, relative)
    var_c, var_t = baseline_rate * (1 - baseline_rate), p_t * (1 - p_t)
    return _sample_size(p_t - baseline_rate, var_c, var_t, alpha, power, ratio)


def proportion_minimum_detectable_effect(
    baseline_rate: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    relative: bool = False,
) -> float:
    """Smallest positive lift the two-proportion z-test detects with ``power`` (absolute, or relative to
    the baseline if ``relative``). Solved numerically because the treatment variance moves with the lift."""
    _check(alpha, power, ratio)

    def gap(delta: float) -> float:
        return proportion_power(baseline_rate, delta, n_control, ratio=ratio, alpha=alpha) - power

    upper = (1 - baseline_rate) * (1 - 1e-9)
    if gap(upper) < 0:
        raise ValueError(f"{n_control} control users cannot reach power {power} at any lift from {baseline_rate}")
    delta = optimize.brentq(gap, 1e-12, upper, xtol=1e-12)
    return delta / baseline_rate if relative else delta


def mean_power(
    std_dev: float,
    effect: float,
    n_control: float,
    *,
    ratio: float = 1.0,
    alpha: float = 0.05,
    use_t: bool = False,
) -> float:
    """Power of the two-sided two-sample test of means with a common ``std_dev`` per user."""
    _check(alpha, ratio=ratio)
    if std_dev <= 0:
        raise ValueError(f"std_dev must be positive, got {std_dev}")
    se = std_dev * math.sqrt(1 / n_control + 1 / (ratio * n_control))
    if not use_t:
        return _normal_power(effect, se, alpha)
    df = n_control * (1 + ratio) - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) / se
    near = stats.nct.sf(crit, df, nc)
    far = stats.nct.cdf(-crit, df, nc)
    # scipy's noncentral t returns NaN for the far tail once it underflows (power ~ 1, nc >~ 8); that tail
    # is then far below double precision next to `near`, so its normal counterpart (also ~ 0) stands in.
    if math.isnan(far):
        far = stats.norm.cdf(-crit - nc)
    return float(near + far)


def mean_sample_size(
    std_dev: float,
    minimum_detectable_effect: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    use_t: bool = False,
) -> SampleSize:
    """Users per arm for the two-sample test of means to detect ``minimum_detectable_effect``
    (absolute, in the metric's units)."""
    _check(alpha, power, ratio)
    if std_dev <= 0 or minimum_detectable_effect == 0:
        raise ValueError("std_dev must be positive and minimum_detectable_effect non-zero")
    normal = _sample_size(minimum_detectable_effect, std_dev**2, std_dev**2, alpha, power, ratio)
    if not use_t:
        return normal

    def gap(n: float) -> float:
        return mean_power(std_dev, minimum_detectable_effect, n, ratio=ratio, alpha=alpha, use_t=True) - power

    # The t-test needs at least 2 users per arm (a variance each); a huge effect may need no more.
    lower = max(2.0, 2.0 / ratio)
    if gap(lower) >= 0:
        return SampleSize(control=math.ceil(lower), treatment=math.ceil(lower * ratio), control_exact=lower)
    # The t-test needs a few more users than the z-test; widen the bracket until it holds the answer.
    upper = max(normal.control_exact * 2 + 10, lower * 2)
    while gap(upper) < 0:
        upper *= 2
    n_c = optimize.brentq(gap, lower, upper, xtol=1e-8)
    return SampleSize(control=math.ceil(n_c), treatment=math.ceil(n_c * ratio), control_exact=n_c)


def mean_minimum_detectable_effect(
    std_dev: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> float:
    """Smallest absolute difference of means the z-test detects with ``power``:
    ``(z_{1-alpha/2} + z_power) * std_dev * sqrt(1/n_c + 1/n_t)``."""
    _check(alpha, power, ratio)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * std_dev * math.sqrt(1 / n_control + 1 / (ratio * n_control)))


def _sample_size(delta: float, var_c: float, var_t: float, alpha: float, power: float, ratio: float) -> SampleSize:
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n_c = z**2 * (var_c + var_t / ratio) / delta**2
    return SampleSize(control=math.ceil(n_c), treatment=math.ceil(n_c * ratio), control_exact=float(n_c))
