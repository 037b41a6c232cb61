"""Roll-up of per-user metrics into sufficient statistics, from DataFrames and arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from abtest.stats.aggregate import (
    ArmMetrics,
    arm_metrics,
    arm_metrics_from_arrays,
    compare_arms,
    user_metrics_from_events,
)
from abtest.stats.sufficient_statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)


@pytest.fixture
def users() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 3000
    exposures = 1 + rng.poisson(4, n)
    pre = rng.poisson(1.0, n)
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "arm": rng.choice(["mf", "gnn"], n),
            "exposures": exposures,
            "clicks": rng.binomial(exposures, 0.05) + pre,
            "pre_clicks": pre,
        }
    )


def test_arm_metrics_match_per_arm_from_values(users):
    per_arm = arm_metrics(users, pre_clicks="pre_clicks")
    assert list(per_arm) == ["gnn", "mf"]
    for arm, rows in users.groupby("arm"):
        got = per_arm[arm]
        assert got.users == len(rows)
        expected = RatioStatistic.from_values(rows.clicks, rows.exposures)
        assert got.clicks_per_exposure.mean == pytest.approx(expected.mean)
        assert got.clicks_per_exposure.variance == pytest.approx(expected.variance)
        assert got.clicks_per_user.variance == pytest.approx(SampleMeanStatistic.from_values(rows.clicks).variance)
        assert got.engaged_users == ProportionStatistic.from_values(rows.clicks > 0)
        cuped = RegressionAdjustedStatistic.from_values(rows.clicks, rows.pre_clicks)
        assert got.clicks_per_user_cuped.covariance == pytest.approx(cuped.covariance)


def test_shards_add_up(users):
    whole = arm_metrics(users, arms=["mf", "gnn"])
    halves = [arm_metrics(part, arms=["mf", "gnn"]) for part in (users.iloc[:1000], users.iloc[1000:])]
    for arm in ("mf", "gnn"):
        joined: ArmMetrics = halves[0][arm] + halves[1][arm]
        assert joined.users == whole[arm].users
        assert joined.clicks_per_exposure.variance == pytest.approx(whole[arm].clicks_per_exposure.variance)
        assert joined.clicks_per_user_cuped is None


def test_compare_arms_runs_every_metric(users):
    results = compare_arms(arm_metrics(users, pre_clicks="pre_clicks"), control="mf", treatment="gnn")
    assert [r.method for r in results] == ["ratio_delta_z", "welch_t", "two_proportion_z", "cuped_z"]
    assert all(r.treatment_name == "gnn" and 0 <= r.p_value <= 1 for r in results)
    # The pre-period covariate explains part of the clicks: CUPED narrows the clicks-per-user interval.
    width = {r.method: r.abs_ci[1] - r.abs_ci[0] for r in results}
    assert width["cuped_z"] < width["welch_t"]
    with pytest.raises(KeyError, match="no arm"):
        compare_arms(arm_metrics(users), control="mf", treatment="nope")


def test_arrays_and_empty_arm():
    got = arm_metrics_from_arrays(np.array([0, 0, 2]), np.array([1, 0, 3]), np.array([2, 1, 4]), num_arms=3)
    assert [g.users for g in got] == [2, 0, 1]
    assert got[0].clicks_per_exposure.mean == pytest.approx(1 / 3)
    assert got[2].engaged_users.successes == 1
    with pytest.raises(ValueError, match="non-negative"):
        arm_metrics_from_arrays(np.array([-1]), np.array([1]), np.array([1]))


def test_missing_columns_and_unknown_arms(users):
    with pytest.raises(KeyError, match="exposures"):
        arm_metrics(users.drop(columns="exposures"))
    with pytest.raises(ValueError, match="not in"):
        arm_metrics(users, arms=["mf"])


def test_user_metrics_from_events():
    exposures = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "arm": ["mf", "mf", "gnn", "gnn"]})
    clicks = pd.DataFrame({"user_id": ["a", "c", "c", "z"]})
    per_user = user_metrics_from_events(exposures, clicks).set_index("user_id")
    assert per_user.loc["a"].tolist() == ["mf", 2, 1]
    assert per_user.loc["b"].tolist() == ["gnn", 1, 0]
    assert per_user.loc["c"].tolist() == ["gnn", 1, 2]
    assert "z" not in per_user.index  # clicks without an exposure cannot be attributed
    split = pd.DataFrame({"user_id": ["a", "a"], "arm": ["mf", "gnn"]})
    with pytest.raises(ValueError, match="more than one arm"):
        user_metrics_from_events(split, clicks)
