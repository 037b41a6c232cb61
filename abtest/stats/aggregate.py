"""Roll per-user metrics up into the sufficient statistics of :mod:`abtest.stats.sufficient_statistics`.

The unit of analysis is the user (the unit of randomisation), so events are first counted per user
(:func:`user_metrics_from_events`), then summed per arm (:func:`arm_metrics`). The three standard
metrics of the feed experiments:

* ``clicks_per_exposure``: ratio metric ``sum(clicks) / sum(exposures)`` over users (delta method);
* ``clicks_per_user``: mean clicks per user (Welch);
* ``engaged_users``: share of users with at least one click (two-proportion z-test);

plus ``clicks_per_user_cuped`` when a pre-experiment covariate (e.g. each user's clicks in the weeks
before the start) is given. All sums use ``np.bincount`` over integer arm codes: no Python loop over users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from abtest.stats.results import TestResult
from abtest.stats.significance import compare
from abtest.stats.sufficient_statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

__all__ = [
    "METRIC_LABELS",
    "ArmMetrics",
    "arm_metrics",
    "arm_metrics_from_arrays",
    "ratio_statistics_from_arrays",
    "user_metrics_from_events",
    "compare_arms",
]

METRIC_LABELS = {
    "clicks_per_exposure": "click-through (clicks per exposure)",
    "clicks_per_user": "clicks per user",
    "engaged_users": "engaged users",
    "clicks_per_user_cuped": "clicks per user (CUPED)",
}


@dataclass(frozen=True)
class ArmMetrics:
    """Sufficient statistics of one arm; arms of several shards or days add with ``+``."""

    clicks_per_exposure: RatioStatistic
    clicks_per_user: SampleMeanStatistic
    engaged_users: ProportionStatistic
    clicks_per_user_cuped: RegressionAdjustedStatistic | None = None

    @property
    def users(self) -> int:
        return self.clicks_per_user.n

    def statistics(self) -> dict[str, Statistic]:
        """Metric name -> statistic (only the metrics that are present)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __add__(self, other: ArmMetrics) -> ArmMetrics:
        if not isinstance(other, ArmMetrics):
            return NotImplemented
        cuped = None
        if self.clicks_per_user_cuped is not None and other.clicks_per_user_cuped is not None:
            cuped = self.clicks_per_user_cuped + other.clicks_per_user_cuped
        return ArmMetrics(
            self.clicks_per_exposure + other.clicks_per_exposure,
            self.clicks_per_user + other.clicks_per_user,
            self.engaged_users + other.engaged_users,
            cuped,
        )


def arm_metrics_from_arrays(
    arm_codes: np.ndarray,
    clicks: np.ndarray,
    exposures: np.ndarray,
    pre_clicks: np.ndarray | None = None,
    *,
    num_arms: int | None = None,
) -> list[ArmMetrics]:
    """Statistics per arm from per-user arrays.

    Args:
        arm_codes (np.ndarray): Integer arm index of each user, in ``[0, num_arms)``.
        clicks (np.ndarray): Clicks of each user during the experiment.
        exposures (np.ndarray): Exposures of each user (the ratio's denominator).
        pre_clicks (np.ndarray, optional): Pre-experiment covariate per user for CUPED. (default: None)
        num_arms (int, optional): Number of arms. (default: ``max(arm_codes) + 1``)

    Returns:
        One :class:`ArmMetrics` per arm index.
    """
    codes = np.asarray(arm_codes, dtype=np.int64)
    m = np.asarray(clicks, dtype=np.float64)
    d = np.asarray(exposures, dtype=np.float64)
    if not (codes.shape == m.shape == d.shape) or codes.ndim != 1:
        raise ValueError(f"arm_codes {codes.shape}, clicks {m.shape}, exposures {d.shape} must be equal 1-d shapes")
    if codes.size and codes.min() < 0:
        raise ValueError("arm_codes must be non-negative (drop users outside the experiment first)")
    k = int(num_arms if num_arms is not None else (codes.max() + 1 if codes.size else 0))

    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=k)

    n = total().astype(np.int64)
    sums = {
        "m": total(m), "m2": total(m * m), "d": total(d), "d2": total(d * d), "md": total(m * d),
        "engaged": total((m > 0).astype(np.float64)),
    }
    if pre_clicks is not None:
        x = np.asarray(pre_clicks, dtype=np.float64)
        if x.shape != m.shape:
            raise ValueError(f"pre_clicks {x.shape} must match clicks {m.shape}")
        sums.update(x=total(x), x2=total(x * x), xm=total(x * m))
    out = []
    for i in range(k):
        cuped = None
        if pre_clicks is not None:
            cuped = RegressionAdjustedStatistic(
                int(n[i]), sums["m"][i], sums["m2"][i], sums["x"][i], sums["x2"][i], sums["xm"][i]
            )
        out.append(
            ArmMetrics(
                clicks_per_exposure=RatioStatistic(
                    int(n[i]), sums["m"][i], sums["m2"][i], sums["d"][i], sums["d2"][i], sums["md"][i]
                ),
                clicks_per_user=SampleMeanStatistic(int(n[i]), sums["m"][i], sums["m2"][i]),
                engaged_users=ProportionStatistic(int(n[i]), int(sums["engaged"][i])),
                clicks_per_user_cuped=cuped,
            )
        )
    return out


def ratio_statistics_from_arrays(
    arm_codes: np.ndarray, numerators: np.ndarray, denominators: np.ndarray, *, num_arms: int
) -> list[RatioStatistic]:
    """One :class:`RatioStatistic` per arm index from per-user numerators and denominators (e.g. clicks
    over posts shown)."""
    codes = np.asarray(arm_codes, dtype=np.int64)
    m = np.asarray(numerators, dtype=np.float64)
    d = np.asarray(denominators, dtype=np.float64)

    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=num_arms)

    n, sums = total(), [total(m), total(m * m), total(d), total(d * d), total(m * d)]
    return [RatioStatistic(int(n[i]), *(float(x[i]) for x in sums)) for i in range(num_arms)]


def arm_metrics(
    users: pd.DataFrame,
    *,
    arm: str = "arm",
    clicks: str = "clicks",
    exposures: str = "exposures",
    pre_clicks: str | None = None,
    arms: Sequence[str] | None = None,
) -> dict[str, ArmMetrics]:
    """Statistics per arm from a per-user DataFrame (one row per user).

    Args:
        users (pd.DataFrame): One row per user with the arm and the per-user counts.
        arm, clicks, exposures (str, optional): Column names. (default: ``arm``, ``clicks``, ``exposures``)
        pre_clicks (str, optional): Column of the pre-experiment covariate for CUPED. (default: None)
        arms (Sequence[str], optional): Arms to report, in order; an arm without users gets empty
            statistics. (default: the arms present, sorted)
    """
    missing = [c for c in (arm, clicks, exposures, pre_clicks) if c is not None and c not in users.columns]
    if missing:
        raise KeyError(f"per-user frame lacks column(s) {', '.join(missing)}; has {', '.join(map(str, users.columns))}")
    names = list(arms) if arms is not None else sorted(users[arm].dropna().astype(str).unique())
    labels = users[arm].astype(str)
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"rows with arms {unknown} not in {names}")
    codes = pd.Categorical(labels, categories=names).codes.astype(np.int64)
    stats_per_arm = arm_metrics_from_arrays(
        codes,
        users[clicks].to_numpy(),
        users[exposures].to_numpy(),
        users[pre_clicks].to_numpy() if pre_clicks is not None else None,
        num_arms=len(names),
    )
    return dict(zip(names, stats_per_arm))


def user_metrics_from_events(
    exposures: pd.DataFrame,
    clicks: pd.DataFrame,
    *,
    user: str = "user_id",
    arm: str = "arm",
) -> pd.DataFrame:
    """Per-user frame ``[user, arm, exposures, clicks]`` from event rows.

    Args:
        exposures (pd.DataFrame): One row per exposure with ``user`` and ``arm`` columns.
        clicks (pd.DataFrame): One row per click with a ``user`` column. Clicks of users never exposed
            are dropped (they cannot be attributed to an arm).
        user, arm (str, optional): Column names. (default: ``user_id``, ``arm``)

    Raises:
        ValueError: a user appears in more than one arm (assignment is supposed to be sticky; such
            users must be investigated, not silently split).
    """
    arms_per_user = exposures.groupby(user)[arm].nunique()
    split = arms_per_user[arms_per_user > 1]
    if len(split):
        raise ValueError(f"{len(split)} user(s) were exposed in more than one arm, e.g. {list(split.index[:3])}")
    per_user = exposures.groupby(user).agg(arm=(arm, "first"), exposures=(arm, "size"))
    per_user["clicks"] = clicks.groupby(user).size().reindex(per_user.index, fill_value=0)
    per_user = per_user.rename(columns={"arm": arm}).reset_index()
    return per_user[[user, arm, "exposures", "clicks"]]


def compare_arms(
    per_arm: dict[str, ArmMetrics], control: str, treatment: str, *, alpha: float = 0.05
) -> list[TestResult]:
    """Test every metric present in both arms (see :func:`abtest.stats.significance.compare`)."""
    for name in (control, treatment):
        if name not in per_arm:
            raise KeyError(f"no arm {name!r}; arms are {', '.join(per_arm)}")
    c, t = per_arm[control].statistics(), per_arm[treatment].statistics()
    return [
        compare(
            c[metric], t[metric], alpha=alpha, metric=METRIC_LABELS.get(metric, metric),
            control_name=control, treatment_name=treatment,
        )
        for metric in c
        if metric in t
    ]
