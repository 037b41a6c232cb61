"""Most-popular baseline: the shared recommender tests plus its own ranking rule."""

import numpy as np
import pytest

from recsys.models.popular import PopularRecommender
from tests.recsys.models.mixin import RecommenderTestMixin, planted_signal


class TestPopular(RecommenderTestMixin):
    supports_personalisation = False

    def make_model(self):
        return PopularRecommender()


@pytest.mark.parametrize("weighting", ["log", "count"])
def test_ranks_items_by_training_count(weighting):
    ds = planted_signal().dataset
    model = PopularRecommender(weighting=weighting).fit(ds)
    counts = ds.item_popularity()
    items, scores = model.recommend(0, k=ds.n_items, exclude_seen=False)
    assert (np.diff(counts[items]) <= 0).all()
    expected = np.log1p(counts[items]) if weighting == "log" else counts[items]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_every_user_gets_the_same_list_when_nothing_is_excluded():
    ds = planted_signal().dataset
    items, _ = PopularRecommender().fit(ds).recommend_many(np.arange(ds.n_users), k=5, exclude_seen=False)
    assert (items == items[0]).all()


def test_rejects_unknown_weighting():
    with pytest.raises(ValueError, match="weighting"):
        PopularRecommender(weighting="sqrt")
