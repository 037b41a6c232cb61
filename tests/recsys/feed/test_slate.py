"""Slate rules: at most N posts per creator, best first."""

import numpy as np
import pytest

from recsys.feed.slate import apply_slate_rules


@pytest.mark.parametrize("max_per_creator", [1, 2, 3])
def test_at_most_n_posts_per_creator_in_score_order(max_per_creator):
    items = np.arange(8)
    scores = np.array([8, 7, 6, 5, 4, 3, 2, 1.0])
    creators = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    keep = apply_slate_rules(items, scores, creators, k=5, max_per_creator=max_per_creator)
    chosen = items[keep]
    assert (np.diff(scores[keep]) <= 0).all()
    assert np.bincount(creators[keep]).max() <= max_per_creator
    expected = {1: [0, 4, 6], 2: [0, 1, 4, 5, 6], 3: [0, 1, 2, 4, 5]}[max_per_creator]
    assert chosen.tolist() == expected


def test_unknown_creators_are_not_grouped_and_bad_n_is_refused():
    keep = apply_slate_rules(np.arange(3), np.array([3.0, 2, 1]), np.array([-1, -1, -1]), k=3, max_per_creator=1)
    assert keep.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="max_per_creator"):
        apply_slate_rules(np.arange(3), np.ones(3), np.zeros(3), k=3, max_per_creator=0)
