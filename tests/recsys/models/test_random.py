"""Random baseline: the shared recommender tests plus seeding."""

import numpy as np
import torch

from recsys.models.random_model import RandomRecommender
from tests.recsys.models.mixin import RecommenderTestMixin, planted_signal


class TestRandom(RecommenderTestMixin):
    supports_personalisation = False

    def make_model(self):
        return RandomRecommender(dim=8, seed=3)


def test_different_seeds_give_different_rankings():
    ds = planted_signal().dataset
    users = np.arange(ds.n_users)
    a, _ = RandomRecommender(seed=1).fit(ds).recommend_many(users, k=10)
    b, _ = RandomRecommender(seed=2).fit(ds).recommend_many(users, k=10)
    assert (a != b).any(axis=1).mean() > 0.9


def test_users_get_different_rankings():
    ds = planted_signal().dataset
    items, _ = RandomRecommender(seed=0).fit(ds).recommend_many(np.arange(ds.n_users), k=10, exclude_seen=False)
    assert len({tuple(row) for row in items.tolist()}) == ds.n_users


def test_fold_in_is_deterministic_and_order_free():
    model = RandomRecommender(seed=5).fit(planted_signal().dataset)
    torch.testing.assert_close(model.fold_in([3, 1, 2]), model.fold_in([1, 2, 3]))
    assert not torch.allclose(model.fold_in([1, 2, 3]), model.fold_in([1, 2, 4]))
