"""Offline validation of the statistics on synthetic per-user data with a known truth.

Three checks, each over many simulated experiments at once (numpy arrays of shape
``(experiments, arms, users)``, processed in chunks to bound memory; 1,000 experiments take seconds):

* :func:`aa_false_positive_rate`: A/A experiments (no effect); share with ``p < alpha`` should be ``alpha``.
* :func:`interval_coverage`: a known relative lift on every user's click probability; share of
  ``1 - alpha`` intervals containing the true lift should be ``1 - alpha``.
* :func:`peeking_false_positive_rate`: A/A experiments analysed every day on the cumulative data; the
  always-valid test (:mod:`abtest.stats.sequential`) must stay below ``alpha`` while the naive fixed-horizon
  test, stopped at the first ``p < alpha``, does not.

Synthetic users (:class:`SyntheticUsers`): exposures ``1 + Poisson(mean_exposures - 1)``, a click
probability per user ``p ~ Beta(click_alpha, click_beta)`` (heterogeneous users, so a user's exposures are
correlated, which is why the ratio metric needs the delta method), and clicks ``Binomial(exposures,
p * (1 + lift))`` (treatment) or ``Binomial(exposures, p)`` (control). Because ``p`` is independent of the
exposures, the true clicks-per-exposure ratio is ``E[p]`` in control and ``E[p] (1 + lift)`` in
treatment, so the true relative lift is exactly ``lift`` (``p (1 + lift)`` is clipped at 1, which never
binds for the defaults). In the peeking check, new users arrive every day and the metrics are cumulative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from abtest.stats.lift import lift_arrays
from abtest.stats.sequential import z_boundary

__all__ = [
    "SyntheticUsers",
    "RateEstimate",
    "simulate_arm_sums",
    "ratio_moments",
    "aa_false_positive_rate",
    "interval_coverage",
    "peeking_false_positive_rate",
]


@dataclass(frozen=True)
class SyntheticUsers:
    """Generator of per-user exposures and clicks.

    Args:
        mean_exposures (float, optional): Mean exposures per user (at least one each), for
            ``exposure_log_sd=None``. (default: 5.0)
        click_alpha (float, optional): Beta shape ``a`` of the per-user click probability. (default: 2.0)
        click_beta (float, optional): Beta shape ``b``; the mean click rate is ``a / (a + b)``. (default: 38.0)
        exposure_log_mean (float, optional): ``mu`` of log-normal exposures. (default: 1.0)
        exposure_log_sd (float, optional): ``sigma`` of log-normal exposures; when set, each user's exposures
            are ``ceil(LogNormal(mu, sigma))`` (heavy-tailed: a few users carry much of the traffic) instead
            of ``1 + Poisson(mean_exposures - 1)``. (default: None)
    """

    mean_exposures: float = 5.0
    click_alpha: float = 2.0
    click_beta: float = 38.0
    exposure_log_mean: float = 1.0
    exposure_log_sd: float | None = None

    @classmethod
    def heavy_tailed(cls) -> SyntheticUsers:
        """The heavy-tailed population of the hardening issue: exposures ``ceil(LogNormal(1, 2))`` (median 3,
        mean ~21), click probability ``Beta(0.2, 3.8)`` (mean 5%, most users almost never click)."""
        return cls(click_alpha=0.2, click_beta=3.8, exposure_log_mean=1.0, exposure_log_sd=2.0)

    @property
    def click_rate(self) -> float:
        return self.click_alpha / (self.click_alpha + self.click_beta)

    def exposures(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        """Exposures per user (float array of ``size``, every value at least 1)."""
        if self.exposure_log_sd is None:
            return 1.0 + rng.poisson(self.mean_exposures - 1.0, size=size)
        return np.maximum(np.ceil(rng.lognormal(self.exposure_log_mean, self.exposure_log_sd, size=size)), 1.0)


@dataclass(frozen=True)
class RateEstimate:
    """A Monte-Carlo rate with its binomial standard error."""

    rate: float
    trials: int

    @property
    def standard_error(self) -> float:
        return float(np.sqrt(self.rate * (1 - self.rate) / self.trials))


def simulate_arm_sums(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    users: int,
    relative_lift: np.ndarray | float = 0.0,
    population: SyntheticUsers = SyntheticUsers(),
) -> dict[str, np.ndarray]:
    """Per-arm sufficient sums of ``users`` synthetic users for every cell of ``shape``.

    ``relative_lift`` broadcasts against ``shape`` (e.g. ``[0, 0.05]`` on an arms axis). Returns arrays of
    ``shape`` for ``n, m, m2, d, d2, md`` (``m`` = clicks, ``d`` = exposures) and ``engaged``
    (users with a click).
    """
    full = (*shape, users)
    d = population.exposures(rng, full)
    p = rng.beta(population.click_alpha, population.click_beta, size=full)
    lift = np.asarray(relative_lift, dtype=np.float64)[..., None]
    m = rng.binomial(d.astype(np.int64), np.minimum(p * (1.0 + lift), 1.0)).astype(np.float64)
    return {
        "n": np.full(shape, float(users)),
        "m": m.sum(-1),
        "m2": (m * m).sum(-1),
        "d": d.sum(-1),
        "d2": (d * d).sum(-1),
        "md": (m * d).sum(-1),
        "engaged": (m > 0).sum(-1).astype(np.float64),
    }


def ratio_moments(s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clicks-per-exposure ratio, its delta-method per-user variance and n, from summed arrays."""
    n = s["n"]
    mean_m, mean_d = s["m"] / n, s["d"] / n
    var_m = (s["m2"] - s["m"] ** 2 / n) / (n - 1)
    var_d = (s["d2"] - s["d"] ** 2 / n) / (n - 1)
    cov = (s["md"] - s["m"] * s["d"] / n) / (n - 1)
    var = var_m / mean_d**2 - 2 * mean_m * cov / mean_d**3 + mean_m**2 * var_d / mean_d**4
    return s["m"] / s["d"], var, n


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield min(size, total - start)


def aa_false_positive_rate(
    num_experiments: int = 1000,
    users_per_arm: int = 2000,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    population: SyntheticUsers = SyntheticUsers(),
    chunk: int = 100,
) -> dict[str, RateEstimate]:
    """Share of A/A experiments with ``p < alpha``, per metric: ``clicks_per_exposure`` (delta method),
    ``clicks_per_user`` (Welch) and ``engaged_users`` (two-proportion z-test, pooled); and the share whose
    relative interval of clicks per exposure excludes 0: ``relative_interval_excludes_zero`` (Fieller, equal
    to the ``clicks_per_exposure`` rate up to unbounded intervals) and, for contrast,
    ``relative_symmetric_delta_excludes_zero``."""
    rng = np.random.default_rng(seed)
    hits = {"clicks_per_exposure": 0, "clicks_per_user": 0, "engaged_users": 0,
            "relative_interval_excludes_zero": 0, "relative_symmetric_delta_excludes_zero": 0}  # fmt: skip
    critical = stats.norm.ppf(1 - alpha / 2)
    for size in _chunks(num_experiments, chunk):
        s = simulate_arm_sums(rng, (size, 2), users_per_arm, 0.0, population)
        ratio, var, n = ratio_moments(s)
        r = lift_arrays(ratio[:, 0], var[:, 0], n[:, 0], ratio[:, 1], var[:, 1], n[:, 1], alpha=alpha)
        hits["clicks_per_exposure"] += int(np.sum(r.p_value < alpha))
        # The headline quotes the relative interval: how often does it exclude 0 when nothing changed?
        hits["relative_interval_excludes_zero"] += int(np.sum((r.rel_ci_low > 0) | (r.rel_ci_high < 0)))
        hits["relative_symmetric_delta_excludes_zero"] += int(np.sum(np.abs(r.rel_lift) > critical * r.rel_se))
        mean = s["m"] / n
        var_user = (s["m2"] - s["m"] ** 2 / n) / (n - 1)
        r = lift_arrays(
            mean[:, 0], var_user[:, 0], n[:, 0], mean[:, 1], var_user[:, 1], n[:, 1], alpha=alpha, distribution="t"
        )
        hits["clicks_per_user"] += int(np.sum(r.p_value < alpha))
        share = s["engaged"] / n
        pooled = s["engaged"].sum(1) / n.sum(1)
        pooled_se = np.sqrt(pooled * (1 - pooled) * (1 / n[:, 0] + 1 / n[:, 1]))
        share_var = share * (1 - share)
        r = lift_arrays(
            share[:, 0], share_var[:, 0], n[:, 0], share[:, 1], share_var[:, 1], n[:, 1], alpha=alpha, test_se=pooled_se
        )
        hits["engaged_users"] += int(np.sum(r.p_value < alpha))
    return {k: RateEstimate(v / num_experiments, num_experiments) for k, v in hits.items()}


def interval_coverage(
    num_experiments: int = 1000,
    users_per_arm: int = 2000,
    *,
    relative_lift: float = 0.05,
    alpha: float = 0.05,
    seed: int = 1,
    population: SyntheticUsers = SyntheticUsers(),
    chunk: int = 100,
) -> dict[str, RateEstimate]:
    """Share of experiments whose ``1 - alpha`` interval of clicks per exposure contains the truth:
    ``absolute`` (true lift ``E[p] * relative_lift``), ``relative`` (Fieller's interval, the one the
    library reports; true lift ``relative_lift``) and, for contrast, ``relative_symmetric_delta`` (the
    symmetric delta-method interval ``rel_lift +- z rel_se`` the library reported before Fieller's)."""
    rng = np.random.default_rng(seed)
    true_abs = population.click_rate * relative_lift
    covered = {"absolute": 0, "relative": 0, "relative_symmetric_delta": 0}
    critical = stats.norm.ppf(1 - alpha / 2)
    for size in _chunks(num_experiments, chunk):
        s = simulate_arm_sums(rng, (size, 2), users_per_arm, np.array([0.0, relative_lift]), population)
        ratio, var, n = ratio_moments(s)
        r = lift_arrays(ratio[:, 0], var[:, 0], n[:, 0], ratio[:, 1], var[:, 1], n[:, 1], alpha=alpha)
        covered["absolute"] += int(np.sum((r.abs_ci_low <= true_abs) & (true_abs <= r.abs_ci_high)))
        covered["relative"] += int(np.sum((r.rel_ci_low <= relative_lift) & (relative_lift <= r.rel_ci_high)))
        symmetric = np.abs(r.rel_lift - relative_lift) <= critical * r.rel_se
        covered["relative_symmetric_delta"] += int(np.sum(symmetric))
    return {k: RateEstimate(v / num_experiments, num_experiments) for k, v in covered.items()}


def peeking_false_positive_rate(
    num_experiments: int = 1000,
    days: int = 14,
    users_per_arm_per_day: int = 200,
    *,
    alpha: float = 0.05,
    tuning_sample_size: int | None = None,
    seed: int = 2,
    population: SyntheticUsers = SyntheticUsers(),
    chunk: int = 50,
) -> dict[str, RateEstimate]:
    """A/A experiments analysed once a day on cumulative data (clicks per exposure, delta method).

    Returns the share of experiments that ever reject: ``sequential`` (mSPRT boundary, tuned at the
    final sample size unless ``tuning_sample_size`` is given), ``naive_peeking`` (fixed-horizon z-test at
    every look) and, for reference, ``fixed_horizon`` (the z-test on the last day only).
    """
    rng = np.random.default_rng(seed)
    tuning = tuning_sample_size or 2 * days * users_per_arm_per_day
    counts = {"sequential": 0, "naive_peeking": 0, "fixed_horizon": 0}
    for size in _chunks(num_experiments, chunk):
        daily = simulate_arm_sums(rng, (size, days, 2), users_per_arm_per_day, 0.0, population)
        cumulative = {k: np.cumsum(v, axis=1) for k, v in daily.items()}
        ratio, var, n = ratio_moments(cumulative)
        r = lift_arrays(ratio[..., 0], var[..., 0], n[..., 0], ratio[..., 1], var[..., 1], n[..., 1], alpha=alpha)
        boundary = z_boundary(n.sum(-1), alpha, tuning)  # (size, days)
        counts["sequential"] += int(np.sum(np.any(np.abs(r.statistic) >= boundary, axis=1)))
        counts["naive_peeking"] += int(np.sum(np.any(r.p_value < alpha, axis=1)))
        counts["fixed_horizon"] += int(np.sum(r.p_value[:, -1] < alpha))
    return {k: RateEstimate(v / num_experiments, num_experiments) for k, v in counts.items()}
