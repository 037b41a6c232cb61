"""Team-draft interleaving: reproducibility, no preference for identical lists, the better arm wins,
fairness under random clicks, and the sign test against scipy / statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from abtest.interleaving import (
    InterleavedList,
    count_wins,
    credit_clicks,
    preference_test,
    team_draft_interleave,
    winners_from_arrays,
)

ARMS = ("mf", "gnn")


def random_rankings(rng, catalogue=100, k=10):
    a = list(rng.choice(catalogue, size=k, replace=False))
    b = list(rng.choice(catalogue, size=k, replace=False))
    return a, b


def test_same_request_same_list_and_seeds_differ():
    a, b = list(range(10)), list(range(10, 20))
    first = team_draft_interleave(a, b, request_id="req-1", arms=ARMS)
    assert first == team_draft_interleave(a, b, request_id="req-1", arms=ARMS)
    others = {team_draft_interleave(a, b, request_id=f"req-{i}", arms=ARMS).teams for i in range(20)}
    assert len(others) > 1


@pytest.mark.parametrize("seed", range(5))
def test_merged_list_properties(seed):
    rng = np.random.default_rng(seed)
    a, b = random_rankings(rng, catalogue=25)
    merged = team_draft_interleave(a, b, request_id=seed, arms=ARMS)
    assert len(merged.items) == len(set(merged.items)) == 10
    picks_a = sum(t == "mf" for t in merged.teams)
    picks_b = sum(t == "gnn" for t in merged.teams)
    assert abs(picks_a - picks_b) <= 1  # teams pick in turns
    # Each team's items appear in that team's own order.
    for arm, ranking in zip(ARMS, (a, b)):
        mine = [item for item, team in zip(merged.items, merged.teams) if team == arm]
        positions = [ranking.index(item) for item in mine]
        assert positions == sorted(positions)
    # The top item of each list is always shown.
    assert a[0] in merged.items and b[0] in merged.items


def test_identical_lists_never_prefer_either_arm():
    rng = np.random.default_rng(0)
    ranking = list(range(10))
    for request in range(300):
        merged = team_draft_interleave(ranking, ranking, request_id=request, arms=ARMS)
        assert merged.items == tuple(ranking) and set(merged.teams) == {None}
        clicked = [item for item in ranking if rng.random() < 0.3]
        assert credit_clicks(merged, clicked).winner is None


def test_arm_whose_items_are_clicked_wins():
    rng = np.random.default_rng(1)
    winners = []
    for request in range(200):
        a, b = random_rankings(rng)
        merged = team_draft_interleave(a, b, request_id=request, arms=ARMS)
        clicked = [item for item, team in zip(merged.items, merged.teams) if team == "gnn"][:2]
        credit = credit_clicks(merged, clicked)
        assert credit.clicks_a == 0
        winners.append(credit.winner)
    result = preference_test(*count_wins(winners, ARMS), arms=ARMS)
    assert result.wins_b == 200 and result.preferred == "gnn" and result.p_value < 1e-10
    assert "users prefer gnn" in result.summary()


def test_fair_under_random_clicks():
    """Clicks that ignore the team (random positions) must not favour either arm."""
    rng = np.random.default_rng(2)
    impressions = 4000
    codes = []
    for request in range(impressions):
        a, b = random_rankings(rng, catalogue=30)
        codes.append(team_draft_interleave(a, b, request_id=request, arms=ARMS).team_codes())
    team_codes = np.stack(codes)
    clicked = rng.random(team_codes.shape) < 0.15
    winners = winners_from_arrays(team_codes, clicked)
    result = preference_test(int(np.sum(winners == 0)), int(np.sum(winners == 1)), int(np.sum(winners == -1)), arms=ARMS)
    assert abs(result.share_a - 0.5) < 0.03
    assert result.p_value > 0.001 and result.preferred is None


def test_position_bias_does_not_favour_an_arm():
    """Users click the top positions far more; the coin flip makes each team equally likely to own them."""
    rng = np.random.default_rng(3)
    codes = np.stack(
        [team_draft_interleave(*random_rankings(rng), request_id=r, arms=ARMS).team_codes() for r in range(3000)]
    )
    click_probability = 0.5 / np.arange(1, 11)  # strong position bias
    winners = winners_from_arrays(codes, rng.random(codes.shape) < click_probability)
    assert abs(np.mean(winners[winners >= 0] == 0) - 0.5) < 0.03


def test_credit_ignores_shared_and_unknown_items_and_repeated_clicks():
    merged = InterleavedList(items=(1, 2, 3, 4), teams=(None, "mf", "gnn", "mf"), arms=ARMS)
    credit = credit_clicks(merged, [1, 99, 2, 2])
    assert (credit.clicks_a, credit.clicks_b, credit.winner) == (1, 0, "mf")
    assert credit_clicks(merged, [2, 3]).winner is None
    np.testing.assert_array_equal(merged.team_codes(), [-1, 0, 1, 0])


def test_shorter_list_and_k():
    merged = team_draft_interleave([1, 2], [3, 4, 5, 6], request_id="x", k=5, arms=ARMS)
    assert len(merged.items) == 5 and set(merged.items) <= {1, 2, 3, 4, 5, 6}
    assert team_draft_interleave([1], [2], request_id="y", k=10).items.__len__() == 2
    with pytest.raises(ValueError, match="different names"):
        team_draft_interleave([1], [2], request_id="z", arms=("a", "a"))


@pytest.mark.parametrize("seed", range(6))
def test_preference_test_matches_scipy_and_statsmodels(seed):
    rng = np.random.default_rng(seed)
    wins_a, wins_b = (int(x) for x in rng.integers(0, 400, size=2))
    result = preference_test(wins_a, wins_b, 17, arms=ARMS)
    assert result.p_value == pytest.approx(stats.binomtest(wins_a, wins_a + wins_b, 0.5).pvalue, rel=1e-9)
    low, high = proportion_confint(wins_a, wins_a + wins_b, alpha=0.05, method="wilson")
    assert result.share_ci == pytest.approx((low, high), rel=1e-9)
    assert result.delta == pytest.approx((wins_a - wins_b) / (wins_a + wins_b))
    assert result.delta_ci == pytest.approx((2 * low - 1, 2 * high - 1))
    assert result.impressions == wins_a + wins_b + 17


def test_preference_golden_and_edge_cases():
    result = preference_test(560, 440, 300, arms=ARMS)
    assert result.p_value == pytest.approx(0.00016505, rel=1e-4)
    assert result.share_ci == pytest.approx((0.52904, 0.59048), rel=1e-4)
    assert result.preferred == "mf"
    empty = preference_test(0, 0, 10)
    assert empty.p_value == 1.0 and empty.preferred is None
    with pytest.raises(ValueError, match="not one of"):
        count_wins(["other"], ARMS)
