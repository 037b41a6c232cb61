"""recsys.feed.state: decayed counters, the point-in-time guard, social and affinity queries."""

import math

import numpy as np
import pytest

from recsys.feed.data import CLICK, DAY, IMPRESSION, LIKE, FollowLog
from recsys.feed.state import ITEM_COUNTERS, DecayedCounts, FeatureState, FutureEventError

from .conftest import make_catalog, make_events


def test_decayed_counts_match_the_formula_whatever_the_batching():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 5, size=200)
    ts = np.sort(rng.integers(0, 10 * DAY, size=200))
    half_lives = (DAY, 7 * DAY, math.inf)
    whole = DecayedCounts(half_lives)
    whole.add(keys, ts)
    one_by_one = DecayedCounts(half_lives)
    for k, t in zip(keys, ts):
        one_by_one.add([k], [t])
    shuffled = DecayedCounts(half_lives)
    for chunk in np.array_split(rng.permutation(200), 7):  # out of order across batches too
        shuffled.add(keys[chunk], ts[chunk])
    now = 11 * DAY
    expected = np.array(
        [[sum(2.0 ** (-(now - t) / h) if math.isfinite(h) else 1.0 for kk, t in zip(keys, ts) if kk == k) for h in half_lives] for k in range(6)]
    )
    for counts in (whole, one_by_one, shuffled):
        np.testing.assert_allclose(counts.get(np.arange(6), now), expected, rtol=1e-9)
    assert (expected[5] == 0).all()  # a key never seen counts 0


def _state():
    # posts 0..5 by creators 0,1,2,0,1,2; users 0..4; user 3 follows users 1 and 2
    state = FeatureState(make_catalog(6), social_window=7 * DAY, social_half_life=DAY)
    state.observe_follows(FollowLog(np.array([3, 3]), np.array([1, 2]), np.array([0, 0])))
    return state


def test_a_query_before_the_latest_event_is_refused():
    state = _state()
    state.observe(make_events([(0, 1, 100, CLICK, 0)]))
    state.item_counters(np.array([1]), 100)
    with pytest.raises(FutureEventError, match="before the time they describe"):
        state.item_counters(np.array([1]), 99)


def test_item_counters_and_seen():
    state = _state()
    state.observe(make_events([(0, 4, 10, IMPRESSION, 0), (0, 4, 12, CLICK, 0), (0, 4, 20, LIKE, 0), (1, 4, 30, IMPRESSION, 3)]))
    c = state.item_counters(np.array([4, 5]), 30)
    names = dict(zip(ITEM_COUNTERS, c[0]))
    assert names["item_clicks_all"] == 1 and names["item_impressions_all"] == 2 and names["item_likes_all"] == 1
    assert names["item_clicks_1d"] == pytest.approx(2.0 ** (-18 / DAY))
    assert (c[1] == 0).all()
    assert state.seen(np.array([0, 1, 2]), np.array([4, 4, 4])).tolist() == [True, True, False]
    assert state.seen_items(1).tolist() == [4]


def test_social_counters_count_distinct_followees_in_the_window():
    state = _state()
    t = 10 * DAY
    state.observe(
        make_events([
            (1, 0, t - 8 * DAY, CLICK, 0),  # outside the 7-day window
            (1, 5, t - 2 * DAY, CLICK, 0),
            (1, 5, t - DAY, CLICK, 0),  # same followee twice: counted once, latest time decays
            (2, 5, t - DAY, CLICK, 0),
            (4, 5, t - DAY, CLICK, 0),  # not followed by user 3
        ])
    )
    got = state.social_counters(np.array([3, 3, 0]), np.array([5, 0, 5]), t)
    np.testing.assert_allclose(got[0], [2.0, 2 * 0.5])
    np.testing.assert_allclose(got[1:], 0.0)
    items, scores = state.followee_engaged(3, t)
    assert items.tolist() == [5] and scores[0] == pytest.approx(1.0)


def test_creator_topic_and_follow_queries():
    state = _state()
    state.observe(make_events([(3, 1, 5, IMPRESSION, 0), (3, 1, 6, CLICK, 0), (3, 4, 7, IMPRESSION, 1)]))
    cc = state.creator_counters(np.array([3, 3]), np.array([1, 0]), 7)
    assert cc[0, 1] == 1 and cc[0, 2] == 2 and (cc[1] == 0).all()  # posts 1 and 4 are creator 1's
    tc = state.topic_counters(np.array([3]), np.array([1]), 7)
    assert tc[0, 1] == 1 and tc[0, 2] == 1  # post 1 is on topic 1, post 4 on topic 0
    assert state.follows(np.array([3, 3, 1]), np.array([1, 0, 3])).tolist() == [True, False, False]
    assert state.followees(3).tolist() == [1, 2]


def test_decayed_counts_in_small_batches_equal_one_batch_across_level_merges():
    """A service feeds a few events at a time: new keys go to the delta level, which merges into the
    main level several times here (5,000 keys, batches of 40); the counts must not change."""
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 5_000, 30_000)
    ts = np.sort(rng.integers(0, 10 * DAY, 30_000))
    one, many = DecayedCounts((DAY, INF := math.inf)), DecayedCounts((DAY, INF))
    one.add(keys, ts)
    for lo in range(0, len(keys), 40):
        many.add(keys[lo : lo + 40], ts[lo : lo + 40])
    assert len(many._delta.keys) < len(many) and len(many) == len(one) == len(np.unique(keys))
    query = np.arange(-5, 5_010)
    np.testing.assert_allclose(many.get(query, 11 * DAY), one.get(query, 11 * DAY), rtol=1e-9, atol=1e-12)


def test_one_users_social_features_equal_the_matrix_path():
    """Serving asks for one user's social features (followees' clicks read per user); training's
    replay for thousands at once (users x items matrices): the same numbers, across level merges."""
    rng = np.random.default_rng(5)
    n_users, n_items = 40, 60
    state = FeatureState(make_catalog(n_items))
    fol = rng.integers(0, n_users, (300, 2))
    state.observe_follows(FollowLog(fol[:, 0], fol[:, 1], np.zeros(300, np.int64)))
    t = 0
    for _ in range(30):  # 30 batches of 400 clicks over 20 days: several merges, old clicks dropped
        ts = t + np.sort(rng.integers(0, DAY * 2 // 3, 400))
        rows = np.stack([rng.integers(0, n_users, 400), rng.integers(0, n_items, 400), ts,
                         np.full(400, CLICK), np.zeros(400)], axis=1)
        state.observe(make_events(rows))
        t += DAY * 2 // 3
    now = t + 3600
    users = np.repeat(np.arange(n_users), n_items)
    items = np.tile(np.arange(n_items), n_users)
    matrix = state.social_counters(users, items, now)  # 40 users: the matrix path
    assert matrix[:, 0].max() >= 2 and (matrix[:, 0] == 0).any()
    for u in range(n_users):
        one = state.social_counters(users[users == u], items[users == u], now)
        np.testing.assert_allclose(one, matrix[users == u], rtol=1e-5, atol=1e-6)
        engaged, decayed = state.followee_engaged(u, now)
        np.testing.assert_array_equal(engaged, np.flatnonzero(matrix[users == u][:, 0] > 0))
        np.testing.assert_allclose(decayed, matrix[users == u][engaged, 1], rtol=1e-5)
