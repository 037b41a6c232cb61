"""Point-in-time replay: no future event leaks into a feature, and training features equal the online
state's on the same events (the one-code-path rule of docs/feed.md)."""

from dataclasses import replace

import numpy as np
import pytest

from recsys.feed.data import CLICK, DAY, IMPRESSION, EventLog, FollowLog
from recsys.feed.features import FEATURE_NAMES, build_features
from recsys.feed.replay import HOUR, click_labels, replay_impressions
from recsys.feed.state import FeatureState

from .conftest import make_events
from .helpers import random_embeddings


def _window(data):
    start = data.end_ts - 3 * DAY
    return start, start + 6 * HOUR


def test_click_labels_match_clicks_of_the_same_slot_within_a_minute():
    log = make_events([
        (0, 1, 100, IMPRESSION, 0), (0, 1, 103, CLICK, 0),   # clicked
        (0, 2, 100, IMPRESSION, 1),                           # not clicked
        (1, 1, 100, IMPRESSION, 2), (1, 1, 500, CLICK, 2),   # click 400 s later: another session's
        (2, 3, 100, IMPRESSION, 0), (2, 3, 104, CLICK, 5),   # other slot
    ])
    labels = click_labels(log)
    imp = log.kind == IMPRESSION
    got = {(int(u), int(i)): bool(c) for u, i, c in zip(log.user[imp], log.item[imp], labels[imp])}
    assert got == {(0, 1): True, (0, 2): False, (1, 1): False, (2, 3): False}


def test_a_planted_future_event_does_not_leak(tiny_data):
    emb = random_embeddings(tiny_data)
    start, end = _window(tiny_data)
    base, _ = replay_impressions(tiny_data, emb, start, end)
    target = 0  # the first impression of the window: plant engagements right after it
    u, i, t = int(base.user[target]), int(base.item[target]), int(base.ts[target])
    followers = np.flatnonzero(tiny_data.dataset.follows[:, u].toarray().ravel())
    planted = make_events(
        [(u, i, t + 1, CLICK, 0)] + [(int(f), i, t + 2, CLICK, 0) for f in followers[:5]]
        + [(u, i, end + DAY, CLICK, 0)]  # and one long after the window
    )
    leaked = replace(tiny_data, events=EventLog.concat([tiny_data.events, planted]))
    after, _ = replay_impressions(leaked, emb, start, end)
    same_step = base.ts < (start + ((t - start) // HOUR + 1) * HOUR)
    # every impression up to the planted events' step has exactly the features it had without them
    np.testing.assert_array_equal(after.features[same_step], base.features[same_step])
    # ... and the planted clicks do count from the next step on (so this test can fail)
    later = np.flatnonzero((after.item == i) & ~same_step)
    assert len(later) and not np.array_equal(after.features[later], base.features[later])


def test_training_features_equal_the_online_state_features(tiny_data):
    emb = random_embeddings(tiny_data)
    start, end = _window(tiny_data)
    imps, _ = replay_impressions(tiny_data, emb, start, end)
    step_start = start + 3 * HOUR
    rows = np.flatnonzero((imps.ts >= step_start) & (imps.ts < step_start + HOUR))
    assert len(rows) > 10
    # the online path: a fresh state fed the same events as a stream of small, uneven batches
    online = FeatureState(tiny_data.catalog)
    f = tiny_data.follows
    known = f.ts < step_start
    online.observe_follows(FollowLog(f.follower[known], f.followee[known], f.ts[known]))
    events = tiny_data.events.before(step_start)
    cuts = np.unique(np.r_[0, np.random.default_rng(1).integers(0, len(events), 50), len(events)])
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        online.observe(events.select(slice(lo, hi)))
    got = build_features(online, tiny_data.catalog, emb, imps.user[rows], imps.item[rows], step_start, imps.position[rows])
    np.testing.assert_allclose(got, imps.features[rows], rtol=1e-5, atol=1e-6, err_msg=str(FEATURE_NAMES))


def test_replay_rejects_an_empty_window(tiny_data):
    emb = random_embeddings(tiny_data)
    with pytest.raises(ValueError, match="no impressions"):
        replay_impressions(tiny_data, emb, tiny_data.end_ts + DAY, tiny_data.end_ts + 2 * DAY)
